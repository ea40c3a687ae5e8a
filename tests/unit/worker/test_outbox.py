"""The outbox between settles: acknowledged messages leave it as it grows, the rest stay in order
and a failed one is still re-sent at the settle."""

from __future__ import annotations

from streamlearn.worker.kafka.client import Outbox


class Writer(Outbox):
    """Handles are send numbers; ``states`` says what the client reports for each."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple] = []
        self.states: dict[int, str] = {}

    def _submit(self, message):
        self.sent.append(message)
        return len(self.sent) - 1

    def _state(self, handle) -> str:
        return self.states.get(handle, "ok")

    def _flush(self, timeout_s: float) -> None:
        return None


def test_acknowledged_messages_leave_the_outbox_as_it_grows():
    writer = Writer()
    writer.states = {5: "pending", 9: "failed"}
    for i in range(Outbox.COMPACT_MIN - 1):
        writer.send("out", str(i).encode())
    assert writer.pending == Outbox.COMPACT_MIN - 1 and writer.delivered == 0
    writer.send("out", b"last")  # the outbox reached COMPACT_MIN: compacted
    assert writer.pending == 2 and writer.delivered == Outbox.COMPACT_MIN - 2
    assert [message[1] for message, _ in writer._outbox] == [b"5", b"9"]  # in send order
    writer.states[5] = "ok"
    assert writer.settle(1.0) is False  # the failed one was re-sent, not yet acknowledged...
    assert writer.sent[-1][1] == b"9" and writer.retried == 1
    assert writer.settle(1.0) is True  # ...and is now
    assert writer.delivered == Outbox.COMPACT_MIN and writer.pending == 0


def test_the_outbox_compacts_again_only_once_it_has_doubled():
    writer = Writer()
    writer.states = {i: "pending" for i in range(3 * Outbox.COMPACT_MIN)}
    for i in range(Outbox.COMPACT_MIN):
        writer.send("out", str(i).encode())
    assert writer.pending == Outbox.COMPACT_MIN  # nothing acknowledged: nothing left
    writer.states = {}  # every message acknowledged from now on
    for _ in range(Outbox.COMPACT_MIN - 1):
        writer.send("out", b"more")
    assert writer.pending == 2 * Outbox.COMPACT_MIN - 1  # not doubled yet
    writer.send("out", b"more")
    assert writer.pending == 0 and writer.delivered == 2 * Outbox.COMPACT_MIN
