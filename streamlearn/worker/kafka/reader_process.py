"""A Kafka reader in a child process: record parsing off the learner's interpreter.

kafka-python's client work (fetches, its batch handling; the records themselves are parsed by
records.c where it is built, decision 0053) runs in Python; on a thread of the worker's own
process that work holds the GIL the loop needs, so it only overlaps the learner's compiled
step. Here the client
runs in a process of its own (``kafka.reader_process: true``): it polls ahead, and the worker's
:class:`ProcessReader` receives plain ``(topic, partition, offset, value, key, headers)``
tuples through a pipe, in order.

One duplex pipe carries everything, so order is kept: records fetched before a rebalance
arrive before its callback. The child's rebalance listener asks the parent (``ask``) and waits
for the answer; the parent answers whenever it reads the pipe (in ``poll`` or while waiting for
a call's reply), on the loop's thread, as kafka-python's listener would run while the loop
waits in a client call. Records of revoked partitions still buffered here are dropped (the new
owner starts from the checkpoint's offsets). When the child dies the partitions count as lost
(the handler checkpoints them, nothing is committed) and the next poll starts a new child; when
the parent dies the child sees the pipe close and leaves the group.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from streamlearn.errors import KafkaUnavailable
from streamlearn.settings import KafkaSettings
from streamlearn.worker.kafka.client import RebalanceHandler, Record, TopicPartition

__all__ = ["ProcessReader"]

log = logging.getLogger(__name__)

CHILD_POLL_S = 0.05  # the child's poll timeout: how soon it serves the parent's calls
START_TIMEOUT_S = 60.0  # spawning an interpreter and importing the client
RecordTuple = tuple[str, int, int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]


# -- the child ----------------------------------------------------------------------------------
def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling to the parent, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # a client's exception with arguments pickle cannot rebuild
        return RuntimeError(repr(error))
    return error


class _Channel:
    """The child's end of the pipe, shared by its main loop and the client's listener thread:
    one lock per direction; calls that arrive while the listener waits for an answer are kept
    for the main loop."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sending, self.receiving = threading.Lock(), threading.Lock()
        self.calls: list[tuple[Any, ...]] = []

    def send(self, message: tuple[Any, ...]) -> None:
        with self.sending:
            self.conn.send(message)

    def next_call(self, timeout_s: float) -> tuple[Any, ...] | None:
        with self.receiving:
            if self.calls:
                return self.calls.pop(0)
            return self.conn.recv() if self.conn.poll(timeout_s) else None

    def ask(self, method: str, partitions: list[TopicPartition]) -> Any:
        """The parent's handler's answer to ``method(partitions)`` (raises what it raised)."""
        self.send(("ask", method, partitions))
        with self.receiving:
            while True:
                message = self.conn.recv()
                if message[0] == "answer":
                    return message[1]
                if message[0] == "answer-error":
                    raise message[1]
                self.calls.append(message)


class _AskParent:
    """The RebalanceHandler in the child: every call is the parent's handler's."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel

    def assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        return self.channel.ask("assigned", list(partitions))  # type: ignore[no-any-return]

    def revoked(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        return self.channel.ask("revoked", list(partitions))  # type: ignore[no-any-return]


LogSetup = tuple[int, int, logging.Formatter | None]  # root level, "kafka" level, line format


def _log_setup() -> LogSetup:
    """The parent's logging, for the child to log alike (the client's lines kept as quiet);
    a line format that cannot be pickled (one writing to a terminal) is left to the default."""
    root = logging.getLogger()
    formatter = next((h.formatter for h in root.handlers if h.formatter is not None), None)
    try:
        pickle.dumps(formatter)
    except Exception:
        formatter = None
    return root.level, logging.getLogger("kafka").getEffectiveLevel(), formatter


def _configure_logging(setup: LogSetup) -> None:
    root_level, client_level, formatter = setup
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(root_level)
    logging.getLogger("kafka").setLevel(client_level)


def _serve(conn: Connection, settings: KafkaSettings, logs: LogSetup) -> None:
    """The child's loop: the parent's calls first, then a poll whose records go to the parent
    (after a failed poll, the next waits a second for a call first). Ends on ``close`` or when
    the pipe breaks (the parent is gone)."""
    from streamlearn.worker.kafka.client import open_reader

    _configure_logging(logs)
    channel = _Channel(conn)
    try:
        reader = open_reader(settings.model_copy(update={"reader_process": False}))
    except Exception as exc:  # whatever it is, the parent raises it
        channel.send(("started", _portable(exc)))
        return
    channel.send(("started", None))
    subscribed = failed = False
    try:
        while True:
            call = channel.next_call(0.0 if subscribed and not failed else 1.0)
            if call is not None:
                name, args = call[1], call[2]
                if name == "close":
                    reader.close(*args)
                    channel.send(("reply", None))
                    return
                try:
                    if name == "subscribe":
                        reader.subscribe(args[0], _AskParent(channel))
                        subscribed = True
                        result = None
                    else:
                        result = getattr(reader, name)(*args)
                except Exception as exc:  # raised again in the parent
                    channel.send(("raise", _portable(exc)))
                else:
                    channel.send(("reply", result))
                continue
            if subscribed:
                try:
                    records = reader.poll(CHILD_POLL_S, settings.max_poll_records)
                except Exception as exc:  # the parent's next poll raises it
                    channel.send(("poll-error", _portable(exc)))
                    failed = True
                    continue
                failed = False
                if records:
                    channel.send(("records", [tuple(r) for r in records]))
    except (EOFError, OSError):  # the parent is gone: leave the group, quickly
        reader.close(2.0)


# -- the parent ---------------------------------------------------------------------------------
class ProcessReader:
    """A KafkaReader whose client runs in a child process (see the module docstring)."""

    thread_safe = False  # one pipe, read by whoever calls: every call on the loop's thread

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")  # the parent has threads
        self._buffer: list[Record] = []
        self._topics: list[str] | None = None
        self._handler: RebalanceHandler | None = None
        self._owned: set[TopicPartition] = set()
        self._pending_error: BaseException | None = None
        self._start()

    def _start(self) -> None:
        parent, child = self._context.Pipe(duplex=True)
        self._process = self._context.Process(
            target=_serve,
            args=(child, self.settings, _log_setup()),
            name="kafka-reader",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._conn: Connection | None = parent
        try:
            if not parent.poll(START_TIMEOUT_S):
                raise KafkaUnavailable(f"the reader process did not start in {START_TIMEOUT_S} s")
            error = self._receive()[1]
            if error is not None:
                raise error
            log.info("Kafka reader process %d started", self._process.pid)
            if self._topics is not None:  # a new child after one died
                self._call("subscribe", self._topics)
        except BaseException:
            self._ended()
            raise

    # the pipe
    def _receive(self) -> tuple[Any, ...]:
        assert self._conn is not None
        try:
            return self._conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            raise self._died() from None

    def _connection(self) -> Connection:
        """The pipe to a live child: a new child when the last one died."""
        if self._conn is None:
            log.warning("starting a new Kafka reader process")
            self._start()
        assert self._conn is not None
        return self._conn

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._connection().send(message)
        except OSError:
            raise self._died() from None

    def _died(self) -> KafkaUnavailable:
        """The child is gone: its partitions are lost (checkpointed, not committed)."""
        self._ended()
        lost, self._owned = sorted(self._owned), set()
        if lost and self._handler is not None:
            self._drop(lost)
            self._handler.revoked(lost)
        code = self._process.exitcode
        return KafkaUnavailable(f"the Kafka reader process ended (exit code {code})")

    def _ended(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._process.join(1.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(1.0)

    def _handle(self, message: tuple[Any, ...]) -> None:
        """A message that is not the reply being waited for: records or a rebalance."""
        kind = message[0]
        if kind == "records":
            new = tuple.__new__  # see Record
            self._buffer += [new(Record, t) for t in message[1]]
        elif kind == "ask":
            self._answer(message[1], message[2])
        elif kind == "poll-error":  # raised by our next poll
            self._pending_error = message[1]

    def _answer(self, method: str, partitions: list[TopicPartition]) -> None:
        assert self._handler is not None
        if method == "revoked":
            self._drop(partitions)
            self._owned.difference_update(partitions)
        try:
            answer = getattr(self._handler, method)(partitions)
        except Exception as exc:  # the child's listener raises it to its poll
            self._send(("answer-error", _portable(exc)))
            return
        if method == "assigned":
            self._owned.update(partitions)
        self._send(("answer", dict(answer)))

    def _drop(self, partitions: Sequence[TopicPartition]) -> None:
        gone = set(partitions)
        self._buffer = [r for r in self._buffer if (r.topic, r.partition) not in gone]

    def _call(self, name: str, *args: Any) -> Any:
        """``name(*args)`` on the child's reader; records and rebalances met on the way are
        handled as they come."""
        self._send(("call", name, args))
        while True:
            message = self._receive()
            if message[0] == "reply":
                return message[1]
            if message[0] == "raise":
                raise message[1]
            self._handle(message)

    # KafkaReader
    def subscribe(self, topics: Sequence[str], handler: RebalanceHandler) -> None:
        self._topics, self._handler = list(topics), handler
        self._call("subscribe", self._topics)

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        conn = self._connection()
        if not self._buffer and self._pending_error is None:
            wait = timeout_s
            while conn.poll(wait):
                self._handle(self._receive())
                if self._buffer or self._pending_error is not None:
                    break
                wait = 0.0
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        taken, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
        return taken

    def assignment(self) -> set[TopicPartition]:
        return set(self._call("assignment"))

    def commit(self, offsets: Mapping[TopicPartition, int], timeout_s: float | None = None) -> None:
        self._call("commit", dict(offsets), timeout_s)

    def probe(self, timeout_s: float) -> None:
        self._call("probe", timeout_s)

    def end_offsets(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int]:
        return dict(self._call("end_offsets", list(partitions), timeout_s))

    def close(self, timeout_s: float = 10.0) -> None:
        """The child's reader closes (its revocation listener asks our handler first), then
        the child exits; a child that does not is killed."""
        if self._conn is None:
            return
        try:
            self._call("close", timeout_s)
        except KafkaUnavailable as exc:
            log.debug("closing the reader process: %s", exc)
        self._ended()
