"""The worker loop against an in-memory Kafka stand-in: batching, checkpoints, commits, restarts.

The same properties the broker tests check end to end, here fast and without a broker: a
restarted worker continues bit for bit, commits never lead checkpoints, a revoke checkpoints.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from worker_support import TOPIC, FakeReader, FakeWriter, event

from streamlearn.core.prequential import Prequential
from streamlearn.settings import Settings, load_settings
from streamlearn.worker.checkpoint import CheckpointStore
from streamlearn.worker.kafka.client import TopicPartition
from streamlearn.worker.loop import Worker


def settings(tmp_path: Path, worker: dict | None = None, **checkpoint) -> Settings:
    return load_settings(
        kafka={"topic": TOPIC, "dead_letter_topic": "dlq"},
        learner={"hidden": [16], "device": "cpu"},
        features={"numeric_slots": 4, "categorical_slots": 2, "hash_buckets": 64},
        source={"batch_size": 8},
        worker={"max_wait_s": 0.01, "poll_timeout_s": 0.01, **(worker or {})},
        checkpoint={"dir": tmp_path, "every_batches": 5, "every_s": 0, **checkpoint},
    )


def make(s: Settings, reader: FakeReader, writer: FakeWriter | None = None) -> Worker:
    return Worker(
        s,
        Prequential.from_settings(s),
        reader,
        writer or FakeWriter(),
        CheckpointStore(s.checkpoint.dir),
    )


def drive(worker: Worker, until_seen: int, max_steps: int = 10_000) -> None:
    worker.restore()
    worker.reader.subscribe(worker.topics, worker)
    for _ in range(max_steps):
        if worker.preq.seen >= until_seen:
            return
        worker.step()
    raise AssertionError(f"only {worker.preq.seen} learned")


def test_a_restarted_worker_continues_bit_for_bit(tmp_path: Path):
    log = {(TOPIC, 0): [event(i) for i in range(203)]}
    reference = make(settings(tmp_path / "ref"), FakeReader(log))
    drive(reference, 203)

    crashed = make(settings(tmp_path / "crash"), FakeReader(log))
    drive(crashed, 90)  # then "crash": no final checkpoint, the object is dropped
    resumed = make(settings(tmp_path / "crash"), FakeReader(log))
    drive(resumed, 203)
    assert resumed.preq.seen == 203 and resumed.positions == {(TOPIC, 0): 203}
    ref_state = reference.preq.learner.model.state_dict()
    for name, tensor in resumed.preq.learner.model.state_dict().items():
        assert torch.equal(tensor, ref_state[name]), name


def test_commits_follow_checkpoints(tmp_path: Path):
    s = settings(tmp_path)
    reader = FakeReader(
        {(TOPIC, 0): [event(i) for i in range(100)], (TOPIC, 1): [event(i) for i in range(60)]}
    )
    worker = make(s, reader)

    def check(offsets: Mapping[TopicPartition, int]) -> None:
        newest = CheckpointStore(s.checkpoint.dir).load_latest()
        assert newest is not None
        saved = {(t, p): o for t, p, o in newest.state["offsets"]}
        assert dict(offsets) == saved  # what is committed is what the checkpoint holds

    reader.on_commit = check
    drive(worker, 160)
    worker.shutdown()
    assert reader.commits and reader.commits[-1] == {(TOPIC, 0): 100, (TOPIC, 1): 60}


def test_revoke_checkpoints_and_drops_buffered_records(tmp_path: Path):
    reader = FakeReader({(TOPIC, 0): [event(i) for i in range(100)]}, max_per_poll=13)
    worker = make(settings(tmp_path, every_batches=0), reader)
    drive(worker, 8)
    assert len(worker.batcher) == 5  # 13 polled, 8 learned
    offsets = reader.revoke_all()
    assert offsets == {(TOPIC, 0): 8} and worker.store.saved == 1
    assert len(worker.batcher) == 0
    drive(worker, 100)  # re-assigned: continues from 8, nothing skipped or doubled
    assert worker.preq.seen == 100


class HeldStore(CheckpointStore):
    """A store whose file writes (on the checkpoint's own thread) wait for ``release``, then
    fail with OSError when ``fails``."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.release = threading.Event()
        self.fails = False

    def write(self, data: bytes) -> Path:
        assert self.release.wait(10)
        if self.fails:
            raise OSError("disk full")
        return super().write(data)


def held(tmp_path: Path, reader: FakeReader, seen: int = 48) -> tuple[Worker, HeldStore]:
    """A worker over a HeldStore that has learned ``seen`` events (40 or more): the checkpoint
    of the first 40 (every 5 batches of 8) is being written."""
    s = settings(tmp_path)
    store = HeldStore(tmp_path)
    worker = Worker(s, Prequential.from_settings(s), reader, FakeWriter(), store)
    drive(worker, seen)
    assert worker.positions == {(TOPIC, 0): seen}
    return worker, store


def test_offsets_are_committed_only_once_the_checkpoint_file_is_durable(tmp_path: Path):
    reader = FakeReader({(TOPIC, 0): [event(i) for i in range(100)]}, max_per_poll=8)
    worker, store = held(tmp_path, reader)
    assert reader.commits == [] and worker.checkpoints.saved == {} and not store.checkpoints()
    store.release.set()
    worker.checkpoints.written(worker.owned, wait=True)
    assert reader.commits == [{(TOPIC, 0): 40}] and worker.checkpoints.saved == {(TOPIC, 0): 40}
    assert len(store.checkpoints()) == 1
    assert store.load_latest().state["offsets"] == [[TOPIC, 0, 40]]


@pytest.mark.parametrize("seen", [40, 48])
def test_a_revocation_waits_for_the_file_in_flight_then_checkpoints_what_followed(
    tmp_path: Path, seen: int
):
    reader = FakeReader({(TOPIC, 0): [event(i) for i in range(100)]}, max_per_poll=8)
    _, store = held(tmp_path, reader, seen)
    threading.Timer(0.2, store.release.set).start()
    assert reader.revoke_all() == {(TOPIC, 0): seen}  # never what preceded the file in flight
    assert store.saved == (1 if seen == 40 else 2)


def test_a_failed_checkpoint_write_is_raised_by_the_loop_and_nothing_is_committed(
    tmp_path: Path,
):
    reader = FakeReader({(TOPIC, 0): [event(i) for i in range(100)]}, max_per_poll=8)
    worker, store = held(tmp_path, reader)
    store.fails = True
    store.release.set()
    with pytest.raises(OSError, match="disk full"):
        for _ in range(100):  # at the latest, the next checkpoint waits for this one
            worker.step()
    assert reader.commits == [] and worker.checkpoints.saved == {}


def test_bad_messages_are_dead_lettered_and_unacknowledged_ones_block_the_checkpoint(
    tmp_path: Path,
):
    writer = FakeWriter()
    values = [event(0), b"nope", event(1)] + [event(i) for i in range(2, 8)]
    worker = make(
        settings(tmp_path, worker={"shutdown_timeout_s": 0}),
        FakeReader({(TOPIC, 0): values}),
        writer,
    )
    drive(worker, 8)
    assert [m[0] for m in writer.sent] == ["dlq"] and writer.sent[0][1] == b"nope"
    assert worker.stats.rejected == {"not_json": 1}
    writer.acknowledge = False  # the broker never confirms the dead letter
    worker.stop()
    worker.shutdown()
    assert worker.store.saved == 0  # not checkpointed past an unconfirmed dead letter


def test_the_publisher_hook_exports_versions_and_pushes_the_memory(tmp_path: Path):
    from streamlearn.app import build_publisher, build_registry

    s = load_settings(
        kafka={"topic": TOPIC, "dead_letter_topic": "dlq"},
        learner={"hidden": [16], "device": "cpu"},
        features={"numeric_slots": 4, "categorical_slots": 2, "hash_buckets": 64},
        source={"batch_size": 8},
        worker={"max_wait_s": 0.01, "poll_timeout_s": 0.01},
        checkpoint={"dir": tmp_path / "ckpt", "every_batches": 5, "every_s": 0},
        registry={"kind": "filesystem", "path": tmp_path / "registry"},
        export={"every_steps": 10, "min_rows": 16, "gate_margin": 10.0, "memory_push_s": 0.001},
    )
    registry = build_registry(s)
    publisher = build_publisher(s, registry)
    log = {(TOPIC, 0): [event(i) for i in range(400)]}
    worker = Worker(
        s,
        Prequential.from_settings(s),
        FakeReader(log),
        FakeWriter(),
        CheckpointStore(s.checkpoint.dir),
        publisher.after_batch,
    )
    drive(worker, 400)
    assert publisher.published >= 2  # every 10 of the 50 batches, once the gate has rows
    assert registry.current() is not None
    assert publisher.memory_pushes > 0 and registry.pull_memory() is not None
