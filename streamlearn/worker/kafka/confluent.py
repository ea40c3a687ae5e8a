"""The confluent-kafka (librdkafka) client behind the KafkaReader / KafkaWriter interface.

Chosen with ``kafka.client: confluent``: librdkafka fetches and parses in C, and produces
several times faster than kafka-python. Rebalance callbacks run inside ``consume`` on the
calling thread, so the revoke path commits synchronously. The consumer's synchronous
``commit`` and its ``close`` take no timeout and, with no group coordinator (an outage), wait
until the group session times out (a synchronous commit holds ``consume`` up meanwhile): the
running loop commits asynchronously, and the final commit and the close run on a helper thread
that is waited on for a bounded time (:class:`_Background`).
librdkafka's own log lines go to the Python logger ``kafka.librdkafka`` (quiet by default, see
``worker.client_log_level``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition

from streamlearn.errors import ConfigError, KafkaUnavailable
from streamlearn.settings import KafkaSettings
from streamlearn.worker.kafka.client import (
    Message,
    Outbox,
    RebalanceHandler,
    Record,
    TopicPartition,
    security_config,
)
from streamlearn.worker.kafka.native_records import parser

__all__ = ["ConfluentReader", "ConfluentWriter", "connection_config"]

log = logging.getLogger(__name__)
_NATIVE = parser()  # records.c: the Messages' fields into Records in one call (None: not built)
client_log = logging.getLogger("kafka.librdkafka")


def _on_error(error: KafkaError) -> None:
    """librdkafka reports transport trouble here; it reconnects by itself, the worker probes."""
    client_log.debug("client error: %s", error)


def _on_commit(error: KafkaError | None, partitions: list[CTopicPartition]) -> None:
    """The outcome of an asynchronous commit (served by ``consume``): a failure is logged; the
    next checkpoint commits again (commits only show lag)."""
    if error is not None:
        log.info("commit of %s failed: %s", _tps(partitions), error)


_SECURITY_NAMES = {
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username",
    "sasl_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_key_password": "ssl.key.password",
}


def connection_config(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security keys in librdkafka's names (secrets revealed only here)."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(settings.bootstrap_servers),
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol,
        "socket.timeout.ms": settings.request_timeout_ms,
        "reconnect.backoff.max.ms": settings.reconnect_backoff_max_ms,
        "logger": client_log,
        "error_cb": _on_error,
    }
    config.update(security_config(settings, _SECURITY_NAMES))
    return config


# librdkafka stops fetching a partition once its local queue holds queued.min.messages (100,000)
# messages or queued.max.messages.kbytes, and then postpones the next fetch by
# fetch.queue.backoff.ms, 1,000 ms by default (CONFIGURATION.md): a worker that learns faster
# than that drains the queue and waits out the rest of the second, once per 100,000 events,
# whenever it catches up on a backlog. 10 ms keeps the queue filled (kafka.consumer_options
# overrides it).
_CONSUMER_DEFAULTS: dict[str, Any] = {"fetch.queue.backoff.ms": 10}


def _start(factory: type, config: dict[str, Any]) -> Any:
    try:
        return factory(config)
    except (KafkaException, ValueError, TypeError) as exc:
        raise ConfigError(f"kafka (confluent): {exc}") from None


def _tps(partitions: Sequence[CTopicPartition]) -> list[TopicPartition]:
    return sorted((tp.topic, tp.partition) for tp in partitions)


def _offsets(offsets: Mapping[TopicPartition, int]) -> list[CTopicPartition]:
    return [CTopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]


def _records(messages: list[Any]) -> list[Record]:
    """Messages as Records, the notices among them logged and left out (a fatal error raises
    KafkaUnavailable): what records.c's ``messages`` builds where no message has an error."""
    records: list[Record] = []
    append, new = records.append, tuple.__new__
    for m in messages:
        error = m.error()
        if error is not None:
            if error.fatal():
                raise KafkaUnavailable(f"fatal consumer error: {error}")
            log.debug("consumer notice: %s", error)
            continue
        headers = m.headers()
        append(
            new(Record, (
                m.topic(), m.partition(), m.offset(), m.value(), m.key(),
                tuple((k, v or b"") for k, v in headers) if headers else (),
            ))
        )  # fmt: skip
    return records


class _Background:
    """A blocking call on a daemon thread, waited on for as long as the caller can afford; one
    that outlives every wait is left to finish (or to the process exit) on its own."""

    def __init__(self, call: Callable[[], object], name: str) -> None:
        self.error: BaseException | None = None
        self._call = call
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._call()
        except BaseException as exc:  # for the waiting thread to raise or log
            self.error = exc

    def done(self, timeout_s: float) -> bool:
        """Whether the call has returned, after waiting up to ``timeout_s`` for it."""
        self._thread.join(max(0.0, timeout_s))
        return not self._thread.is_alive()


class ConfluentReader:
    """A consumer-group member with manual commits (offsets live in our checkpoints)."""

    thread_safe = True  # librdkafka's handle: end_offsets may run beside poll

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        config = connection_config(settings) | {
            **_CONSUMER_DEFAULTS,
            "group.id": settings.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": settings.auto_offset_reset,
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.heartbeat_interval_ms,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "on_commit": _on_commit,
        }
        config.update(settings.consumer_extras)
        self.consumer = _start(Consumer, config)
        self._handler: RebalanceHandler | None = None
        self._handler_error: BaseException | None = None
        self._commit: _Background | None = None  # a commit that outlived its timeout
        self._closing = False

    def _guard(self, call: Any, partitions: list[TopicPartition]) -> Any:
        try:
            return call(partitions)
        except Exception as exc:  # re-raised by poll() on the caller's terms
            self._handler_error = exc
            return None

    def _on_assign(self, consumer: Consumer, partitions: list[CTopicPartition]) -> None:
        assert self._handler is not None
        starts = self._guard(self._handler.assigned, _tps(partitions)) or {}
        for tp in partitions:
            if (tp.topic, tp.partition) in starts:
                tp.offset = starts[(tp.topic, tp.partition)]
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[CTopicPartition]) -> None:
        assert self._handler is not None
        offsets = self._guard(self._handler.revoked, _tps(partitions))
        if offsets and not self._closing:  # closing: the worker's final commit came first
            try:  # on this thread: from another one, the commit waits for this callback's end
                consumer.commit(offsets=_offsets(offsets), asynchronous=False)
            except KafkaException as exc:  # the checkpoint holds them; a commit is for lag
                log.info("commit on revoke failed: %s", exc)

    def _on_lost(self, consumer: Consumer, partitions: list[CTopicPartition]) -> None:
        assert self._handler is not None
        self._guard(self._handler.revoked, _tps(partitions))  # evicted: no commit

    def subscribe(self, topics: Sequence[str], handler: RebalanceHandler) -> None:
        self._handler = handler
        self.consumer.subscribe(
            list(topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        """What is queued, at once; waits up to ``timeout_s`` only while nothing is.

        librdkafka's ``consume(n, timeout)`` waits until it has ``n`` messages or the timeout
        passes, so asking for ``max_records`` at once would hold a batch that is already here
        back for the whole timeout whenever fewer are queued (a quiet topic, a stream's end)."""
        messages = self._consume(max_records, 0.0)
        if not messages and self._handler_error is None:
            messages = self._consume(1, timeout_s)
            if messages and max_records > 1:
                messages += self._consume(max_records - 1, 0.0)
        if self._handler_error is not None:
            error, self._handler_error = self._handler_error, None
            raise error
        if _NATIVE is not None and (records := _NATIVE.messages(Record, messages)) is not None:
            return records  # no message carried an error
        return _records(messages)

    def _consume(self, n: int, timeout_s: float) -> list[Any]:
        try:
            return self.consumer.consume(num_messages=n, timeout=timeout_s)
        except KafkaException as exc:
            if self._handler_error is None:
                raise KafkaUnavailable(f"consume failed: {exc}") from None
            return []  # a rebalance callback failed: its error is what poll raises

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def commit(self, offsets: Mapping[TopicPartition, int], timeout_s: float | None = None) -> None:
        """Without ``timeout_s`` (the running loop) asynchronous: never waited for, a failure is
        logged by :func:`_on_commit`. With it (the final commit: nothing is consumed after it)
        synchronous, waited on for ``timeout_s``; one still running then is abandoned, and
        :meth:`close` does not wait for it."""
        if not offsets:
            return
        tps = _offsets(offsets)
        if timeout_s is None:
            try:
                self.consumer.commit(offsets=tps, asynchronous=True)
            except KafkaException as exc:
                raise KafkaUnavailable(f"commit failed: {exc}") from None
            return
        if self._commit is not None and not self._commit.done(0.0):
            raise KafkaUnavailable("an earlier commit still waits for the group coordinator")
        call = _Background(
            lambda: self.consumer.commit(offsets=tps, asynchronous=False), "streamlearn-commit"
        )
        if not call.done(timeout_s):
            self._commit = call
            raise KafkaUnavailable(f"commit not acknowledged within {timeout_s:.1f} s")
        if isinstance(call.error, KafkaException):
            raise KafkaUnavailable(f"commit failed: {call.error}") from None
        if call.error is not None:
            raise call.error

    def probe(self, timeout_s: float) -> None:
        try:
            self.consumer.list_topics(self.settings.topic, timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailable(f"no metadata from the broker: {exc}") from None

    def end_offsets(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int]:
        """The broker's high watermark, or librdkafka's from the last fetch if that is larger."""
        ends: dict[TopicPartition, int] = {}
        for topic, partition in partitions:
            tp = CTopicPartition(topic, partition)
            try:
                asked = self.consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
                fetched = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException as exc:
                raise KafkaUnavailable(f"no end offsets from the broker: {exc}") from None
            known = [int(m[1]) for m in (asked, fetched) if m is not None and m[1] >= 0]
            if known:
                ends[(topic, partition)] = max(known)
        return ends

    def close(self, timeout_s: float = 10.0) -> None:
        """Within ``timeout_s``; not tried while an abandoned commit still runs (librdkafka's
        close waits for every commit in flight). The revocation it triggers commits nothing: the
        worker's final commit came first."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        if self._commit is not None and not self._commit.done(timeout_s):
            log.warning(
                "consumer not closed: a commit still waits for the group coordinator; the group "
                "drops this member after kafka.session_timeout_ms"
            )
            return
        closing = _Background(self.consumer.close, "streamlearn-close")
        if not closing.done(deadline - time.monotonic()):
            log.warning(
                "consumer not closed within %.1f s; the group drops this member after "
                "kafka.session_timeout_ms",
                timeout_s,
            )
        elif closing.error is not None:
            log.debug("closing the consumer: %s", closing.error)


class _Delivery:
    """Outcome of one produce call, filled in by librdkafka's delivery callback."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = "pending"

    def __call__(self, error: KafkaError | None, message: Any) -> None:
        self.state = "ok" if error is None else "failed"


class ConfluentWriter(Outbox):
    """A producer whose sends are tracked until acknowledged (see Outbox). Keys are partitioned
    with murmur2 like Java and kafka-python producers (librdkafka's default hashes with CRC32),
    so an event and its late label keyed by id land on the same partition number."""

    def __init__(self, settings: KafkaSettings, **options: Any) -> None:
        super().__init__()
        config = connection_config(settings) | {
            "acks": "all", "linger.ms": 5, "partitioner": "murmur2_random",
        }  # fmt: skip
        config.update(settings.producer_extras)
        config.update(options)
        self.producer = _start(Producer, config)

    def _submit(self, message: Message) -> Any:
        topic, value, key, headers = message
        delivery = _Delivery()
        listed = list(headers) if headers else None  # None: librdkafka copies no empty list
        for _ in range(2):
            try:
                self.producer.produce(topic, value, key, headers=listed, on_delivery=delivery)
                self.producer.poll(0)
                return delivery
            except BufferError:  # local queue full: serve callbacks, then try once more
                self.producer.poll(0.5)
            except KafkaException as exc:
                log.debug("send to %s deferred: %s", topic, exc)
                return None
        return None

    def _state(self, handle: Any) -> str:
        return str(handle.state)

    def _flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self.producer.flush(timeout_s)
