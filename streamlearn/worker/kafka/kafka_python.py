"""The kafka-python client behind the KafkaReader / KafkaWriter interface (the default).

kafka-python 3 runs its network loop on a background thread and calls rebalance listeners
there, while the thread that called ``poll`` waits; the listener therefore must not block on
the consumer (no synchronous commit): offsets of revoked partitions are committed
asynchronously, right behind the checkpoint the handler wrote.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata
from kafka import TopicPartition as KTopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaConfigurationError, KafkaError

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
from streamlearn.worker.kafka.native_records import as_record, install

__all__ = ["KafkaPythonReader", "KafkaPythonWriter", "connection_config"]

log = logging.getLogger(__name__)


_SECURITY_NAMES = {
    "sasl_mechanism": "sasl_mechanism",
    "sasl_username": "sasl_plain_username",
    "sasl_password": "sasl_plain_password",
    "ssl_cafile": "ssl_cafile",
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile",
    "ssl_key_password": "ssl_password",
}


def connection_config(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security keys in kafka-python's names (secrets revealed only here)."""
    config: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "reconnect_backoff_max_ms": settings.reconnect_backoff_max_ms,
        "bootstrap_timeout_ms": min(settings.request_timeout_ms, 10_000),  # retried by the caller
    }
    config.update(security_config(settings, _SECURITY_NAMES))
    return config


def _start(factory: type, config: dict[str, Any]) -> Any:
    """Construct a client; configuration mistakes are ConfigErrors (kafka-python's consumer
    raises KafkaConfigurationError for a setting it does not know, its producer ValueError),
    the rest outages."""
    try:
        return factory(**config)
    except (KafkaConfigurationError, ValueError) as exc:
        hint = ""
        if "Unrecognized configs" in str(exc):
            hint = (
                f" (the {factory.__name__}'s; a setting of one client only belongs in "
                "kafka.consumer_options or kafka.producer_options)"
            )
        raise ConfigError(f"kafka: {exc}{hint}") from None
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"cannot reach {config['bootstrap_servers']}: {exc!r}") from None


def _tps(partitions: Sequence[KTopicPartition]) -> list[TopicPartition]:
    return sorted((tp.topic, tp.partition) for tp in partitions)


class _Listener(ConsumerRebalanceListener):
    """Forwards rebalances to the handler; runs on kafka-python's network thread."""

    def __init__(self, reader: KafkaPythonReader, handler: RebalanceHandler) -> None:
        self.reader = reader
        self.handler = handler

    def on_partitions_revoked(self, revoked: Sequence[KTopicPartition]) -> None:
        self._revoke(revoked, commit=True)

    def on_partitions_lost(self, lost: Sequence[KTopicPartition]) -> None:
        self._revoke(lost, commit=False)  # evicted from the group: a commit would be refused

    def _revoke(self, partitions: Sequence[KTopicPartition], commit: bool) -> None:
        if not partitions:
            return
        offsets = self.reader.guard(self.handler.revoked, _tps(partitions))
        if commit and offsets:
            self.reader.consumer.commit_async(_commit_offsets(offsets))

    def on_partitions_assigned(self, assigned: Sequence[KTopicPartition]) -> None:
        starts = self.reader.guard(self.handler.assigned, _tps(assigned)) or {}
        for (topic, partition), offset in starts.items():
            self.reader.consumer.seek(KTopicPartition(topic, partition), offset)


def _commit_offsets(offsets: Mapping[TopicPartition, int]) -> dict[Any, Any]:
    return {KTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}


class KafkaPythonReader:
    """A consumer-group member with manual commits (offsets live in our checkpoints)."""

    thread_safe = False  # KafkaConsumer is not: every call on the loop's thread

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        config = connection_config(settings) | {
            "group_id": settings.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": settings.auto_offset_reset,
            "session_timeout_ms": settings.session_timeout_ms,
            "heartbeat_interval_ms": settings.heartbeat_interval_ms,
            "max_poll_interval_ms": settings.max_poll_interval_ms,
            "max_poll_records": settings.max_poll_records,
        }
        config.update(settings.consumer_extras)
        self.consumer = _start(KafkaConsumer, config)
        # records parsed in C straight into Records (False: kafka-python's, converted in poll)
        self.native = install(self.consumer)
        self._listener_error: BaseException | None = None

    def guard(self, call: Any, partitions: list[TopicPartition]) -> Any:
        """Run a handler call; keep its exception for ``poll`` to raise on our own thread."""
        try:
            return call(partitions)
        except Exception as exc:  # re-raised by poll(): kafka-python would only log it
            self._listener_error = exc
            return None

    def subscribe(self, topics: Sequence[str], handler: RebalanceHandler) -> None:
        self.consumer.subscribe(list(topics), listener=_Listener(self, handler))

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        try:
            polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            if self._listener_error is None:
                raise KafkaUnavailable(f"poll failed: {exc!r}") from None
            polled = {}  # the listener failed: its error is what matters
        if self._listener_error is not None:
            error, self._listener_error = self._listener_error, None
            raise error
        flat = [m for messages in polled.values() for m in messages]
        return flat if self.native else list(map(as_record, flat))

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def commit(self, offsets: Mapping[TopicPartition, int], timeout_s: float | None = None) -> None:
        if not offsets:
            return
        timeout_ms = self.settings.request_timeout_ms if timeout_s is None else timeout_s * 1000
        try:
            self.consumer.commit(_commit_offsets(offsets), timeout_ms=int(timeout_ms))
        except KafkaError as exc:  # KafkaTimeoutError when not done in time
            raise KafkaUnavailable(f"commit failed: {exc!r}") from None

    def probe(self, timeout_s: float) -> None:
        """A ListOffsets round trip to the partition leader (not the group coordinator, which
        is busy while the group rebalances)."""
        try:
            self.consumer.beginning_offsets(
                [KTopicPartition(self.settings.topic, 0)], timeout_ms=int(timeout_s * 1000)
            )
        except KafkaError as exc:
            raise KafkaUnavailable(f"no answer from the broker: {exc!r}") from None

    def end_offsets(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        try:
            listed = self.consumer.end_offsets(
                [KTopicPartition(t, p) for t, p in partitions], timeout_ms=int(timeout_s * 1000)
            )
        except KafkaError as exc:
            raise KafkaUnavailable(f"no end offsets from the broker: {exc!r}") from None
        assigned = self.consumer.assignment()
        ends = {}
        for tp, offset in listed.items():
            fetched = self.consumer.highwater(tp) if tp in assigned else None  # local, no I/O
            known = [int(o) for o in (offset, fetched) if o is not None and o >= 0]
            if known:
                ends[(tp.topic, tp.partition)] = max(known)
        return ends

    def close(self, timeout_s: float = 10.0) -> None:
        """The revocation listener runs first (the worker's handler is bounded by its shutdown
        deadline; the commit behind it is asynchronous), then leaving the group is bounded by
        ``timeout_ms``."""
        try:
            self.consumer.close(autocommit=False, timeout_ms=int(timeout_s * 1000))
        except KafkaError as exc:
            log.debug("closing the consumer: %r", exc)


class KafkaPythonWriter(Outbox):
    """A producer whose sends are tracked until acknowledged (see Outbox)."""

    def __init__(self, settings: KafkaSettings, **options: Any) -> None:
        super().__init__()
        config = connection_config(settings) | {
            "acks": "all",
            "linger_ms": 5,
            "max_block_ms": 5_000,  # send() never stalls the loop for long in an outage
        }
        config.update(settings.producer_extras)
        config.update(options)
        self.producer = _start(KafkaProducer, config)

    def _submit(self, message: Message) -> Any:
        topic, value, key, headers = message
        try:
            return self.producer.send(topic, value=value, key=key, headers=list(headers))
        except KafkaError as exc:  # metadata unavailable / buffer full: try again at settle
            log.debug("send to %s deferred: %r", topic, exc)
            return None

    def _state(self, handle: Any) -> str:
        if not handle.is_done:
            return "pending"
        return "ok" if handle.succeeded() else "failed"

    def _flush(self, timeout_s: float) -> None:
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.debug("flush incomplete: %r", exc)

    def close(self, timeout_s: float = 10.0) -> None:
        """Within about ``timeout_s``. kafka-python's close raises when its flush times out (an
        outage) and leaves the producer open, to be closed again, with a traceback, when it is
        collected at exit; so what is still unsent is then dropped (the checkpoint did not
        count it: it is sent again after the restart) and the producer closed for good."""
        try:
            self.producer.close(timeout=timeout_s)
        except KafkaError as exc:
            log.debug("closing the producer: %r; dropping what is unsent", exc)
            self.producer._sender.force_close()  # no public way to give up on unsent records
            with contextlib.suppress(KafkaError):
                self.producer.close(timeout=1.0)
