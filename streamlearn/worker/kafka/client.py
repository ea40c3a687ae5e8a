"""Kafka as a transport: one small interface, two clients behind it.

kafka-python (pure Python, always installed) is the default; confluent-kafka (librdkafka, much
faster) is used when ``kafka.client: confluent``. Each client lives in its own module and
offers the same two halves:

- a :class:`KafkaReader`: consumer-group subscription with a :class:`RebalanceHandler` (which
  says where each assigned partition starts and checkpoints before partitions are given up),
  ``poll``, ``commit``, ``probe``, ``end_offsets`` (for the lag metric);
- a :class:`KafkaWriter`: ``send`` without blocking, ``settle`` = every record sent so far is
  acknowledged (failed ones are sent again), so the worker checkpoints only past records whose
  dead letters and predictions are safely in Kafka.

Connection problems surface as :class:`~streamlearn.errors.KafkaUnavailable`; the caller
retries. :class:`~streamlearn.worker.kafka.source.KafkaSource` is the plain Source protocol on
top (no checkpoints, no commits).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

from streamlearn.errors import ConfigError
from streamlearn.settings import KafkaSettings

__all__ = [
    "KafkaReader",
    "KafkaWriter",
    "Outbox",
    "RebalanceHandler",
    "Record",
    "TopicPartition",
    "next_offsets",
    "open_reader",
    "open_writer",
    "security_config",
]

TopicPartition = tuple[str, int]


class Record(NamedTuple):
    """One consumed message, whatever client read it (a named tuple, the cheapest record to
    build: one is built for every message). The readers build it as ``tuple.__new__(Record,
    (all six fields, in order))``, without the named tuple's own ``__new__`` (a Python
    function): a third of the cost per message."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)


_TOPIC, _PARTITION = itemgetter(0), itemgetter(1)


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """Each partition's offset after its last record among ``records``: where it resumes once
    they are learned. This runs for every batch: a batch from one partition (the usual one) is
    told apart in two passes in C, without a key built per record.

    >>> next_offsets([Record("t", 0, 5, b""), Record("t", 1, 9, b""), Record("t", 0, 6, b"")])
    {('t', 0): 7, ('t', 1): 10}
    >>> next_offsets([Record("t", 3, 41, b""), Record("t", 3, 42, b"")])
    {('t', 3): 43}
    """
    if not records:
        return {}
    last = records[-1]
    if len(set(map(_PARTITION, records))) == 1 and len(set(map(_TOPIC, records))) == 1:
        return {(last.topic, last.partition): last.offset + 1}
    return {(r.topic, r.partition): r.offset + 1 for r in records}


class RebalanceHandler(Protocol):
    """The consumer's owner, told about partitions moving (called from inside ``poll``)."""

    def assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Partitions now ours; returns where to start each one (missing: committed/reset)."""
        ...

    def revoked(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Partitions about to go; checkpoint now and return the offsets to commit for them."""
        ...


class KafkaReader(Protocol):
    """The consuming half of a client."""

    # whether end_offsets may run on another thread while the loop polls (see LagLookup)
    thread_safe: bool

    def subscribe(self, topics: Sequence[str], handler: RebalanceHandler) -> None: ...

    def poll(self, timeout_s: float, max_records: int) -> list[Record]: ...

    def assignment(self) -> set[TopicPartition]: ...

    def commit(self, offsets: Mapping[TopicPartition, int], timeout_s: float | None = None) -> None:
        """The offsets to the consumer group. With ``timeout_s`` (the final commit) acknowledged
        within it, else KafkaUnavailable (a commit the client still works on is abandoned).
        Without it (the running loop) without holding the loop up for long: kafka-python waits
        up to its request timeout, confluent commits asynchronously."""
        ...

    def probe(self, timeout_s: float) -> None:
        """One round trip to the broker; raises KafkaUnavailable when it does not answer."""
        ...

    def end_offsets(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int]:
        """Each partition's end offset (next offset to be written), for the lag metric: the
        larger of the broker's "latest" answer and the high watermark of the last fetch (some
        brokers, tansu, answer "latest" too low). Partitions without an answer are left out.
        Raises KafkaUnavailable."""
        ...

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group and release the client within about ``timeout_s`` (what is not done
        by then is left to the process exit: the group drops the member when its session times
        out, as after a crash)."""
        ...


class KafkaWriter(Protocol):
    """The producing half of a client."""

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None: ...

    def settle(self, timeout_s: float) -> bool:
        """True once everything sent so far is acknowledged; failed sends are retried."""
        ...

    @property
    def pending(self) -> int: ...

    def close(self, timeout_s: float = 10.0) -> None: ...


# (topic, value, key, headers) of a message to send
Message = tuple[str, bytes, bytes | None, tuple[tuple[str, bytes], ...]]


class Outbox:
    """Sent-but-unacknowledged messages, re-sent until acknowledged (shared by both clients).

    Subclasses implement ``_submit`` (start sending, return a handle or None when the client
    refused it for now), ``_state`` ("ok" | "failed" | "pending") and ``_flush``.

    Between settles, whenever the outbox has doubled (at least ``COMPACT_MIN`` messages) what
    is acknowledged already leaves it (counted as delivered): a worker publishing a prediction
    per event would otherwise hold every message and its handle until the next checkpoint's
    settle, and each of those objects is one more for every full garbage collection to walk.
    """

    COMPACT_MIN = 1024

    def __init__(self) -> None:
        self._outbox: list[tuple[Message, Any]] = []
        self._compact_at = self.COMPACT_MIN
        self.delivered = 0
        self.retried = 0

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        message: Message = (topic, value, key, tuple(headers))
        self._outbox.append((message, self._submit(message)))
        if len(self._outbox) >= self._compact_at:
            self._sweep(resend=False)

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def settle(self, timeout_s: float) -> bool:
        if not self._outbox:
            return True
        self._flush(timeout_s)
        self._sweep(resend=True)
        return not self._outbox

    def _sweep(self, resend: bool) -> None:
        """Drop the acknowledged messages (counted as delivered) and, with ``resend``, submit
        the failed ones again (counted as retried); the rest keep their order. The next sweep
        between settles comes once the outbox has doubled."""
        kept: list[tuple[Message, Any]] = []
        for message, handle in self._outbox:
            state = "failed" if handle is None else self._state(handle)
            if state == "ok":
                self.delivered += 1
            elif state == "failed" and resend:
                self.retried += 1
                kept.append((message, self._submit(message)))
            else:
                kept.append((message, handle))
        self._outbox = kept
        self._compact_at = max(self.COMPACT_MIN, 2 * len(kept))

    def _submit(self, message: Message) -> Any:
        raise NotImplementedError

    def _state(self, handle: Any) -> str:
        raise NotImplementedError

    def _flush(self, timeout_s: float) -> None:
        raise NotImplementedError


def security_config(settings: KafkaSettings, names: Mapping[str, str]) -> dict[str, Any]:
    """SASL and SSL options under a client's own key ``names`` (secrets revealed only here).

    ``names`` maps sasl_mechanism, sasl_username, sasl_password, ssl_cafile, ssl_certfile,
    ssl_keyfile and ssl_key_password to the client's keys; unset options are left out.
    """
    values: dict[str, Any] = {}
    if settings.sasl_mechanism is not None:
        values["sasl_mechanism"] = settings.sasl_mechanism
        values["sasl_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            values["sasl_password"] = settings.sasl_password.get_secret_value()
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(settings, key)
        if path is not None:
            values[key] = str(path)
    if settings.ssl_key_password is not None:
        values["ssl_key_password"] = settings.ssl_key_password.get_secret_value()
    return {names[key]: value for key, value in values.items()}


def _client_module(settings: KafkaSettings) -> Any:
    """The client's module, imported on first use (confluent-kafka is optional)."""
    if settings.client == "confluent":
        try:
            return importlib.import_module("streamlearn.worker.kafka.confluent")
        except ImportError:
            raise ConfigError(
                "kafka.client: confluent needs confluent-kafka "
                "(pip install 'streamlearn[kafka-fast]'), or use kafka-python"
            ) from None
    return importlib.import_module("streamlearn.worker.kafka.kafka_python")


def open_reader(settings: KafkaSettings) -> KafkaReader:
    """A consumer of the configured client (raises KafkaUnavailable if it cannot start), in a
    child process with ``reader_process`` (reader_process.py)."""
    if settings.reader_process:
        from streamlearn.worker.kafka.reader_process import ProcessReader

        return ProcessReader(settings)
    module = _client_module(settings)
    reader = module.ConfluentReader if settings.client == "confluent" else module.KafkaPythonReader
    return reader(settings)  # type: ignore[no-any-return]


def open_writer(settings: KafkaSettings, **options: Any) -> KafkaWriter:
    """A producer of the configured client; ``options`` tune it (client-specific names)."""
    module = _client_module(settings)
    writer = module.ConfluentWriter if settings.client == "confluent" else module.KafkaPythonWriter
    return writer(settings, **options)  # type: ignore[no-any-return]
