"""Scale-out pieces without a process group: the round's arithmetic (two ranks as threads over a
summing stand-in for the group), the cut's merge, and which settings may run several ranks."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from streamlearn.app import join_ranks
from streamlearn.core.prequential import Prequential
from streamlearn.errors import ConfigError
from streamlearn.export.memory import decode_memory, encode_memory
from streamlearn.settings import load_settings
from streamlearn.worker.batching import Batcher
from streamlearn.worker.distributed.cut import merge_parts
from streamlearn.worker.distributed.group import GroupBroken
from streamlearn.worker.distributed.lockstep import Lockstep
from streamlearn.worker.distributed.memory import gathered_memory
from streamlearn.worker.distributed.sync import Rounds

SETTINGS = {
    "features": {"numeric": ["a", "b"], "numeric_slots": 4, "categorical": ["c"],
                 "categorical_slots": 2, "hash_buckets": 64},
    "learner": {"task": "binary", "classes": [0, 1], "hidden": [8], "device": "cpu",
                "kernel": "torch", "seed": 0},
}  # fmt: skip


class SummingGroup:
    """Two ranks in one process: all_reduce sums both threads' tensors (the SUM collective)."""

    def __init__(self, shared: dict[str, Any], rank: int) -> None:
        self.shared, self.rank, self.world_size = shared, rank, 2
        self.leader = rank == 0

    def all_reduce(self, tensor: torch.Tensor) -> None:
        barrier, slots = self.shared["barrier"], self.shared["slots"]
        slots[self.rank] = tensor.clone()
        barrier.wait()
        total = slots[0] + slots[1]
        barrier.wait()
        tensor.copy_(total)


def rows(seed: int, n: int) -> tuple[list[dict[str, Any]], list[int]]:
    rng = np.random.default_rng(seed)
    xs = [{"a": float(rng.normal(5, 2)), "b": float(rng.normal(-1, 9)), "c": str(i % 3)}
          for i in range(n)]  # fmt: skip
    return xs, [int(x["a"] > 5) for x in xs]


def test_a_round_leaves_both_ranks_with_one_model_and_the_statistics_of_all_rows():
    shared = {"barrier": threading.Barrier(2), "slots": [None, None]}
    preqs = [Prequential.from_settings(load_settings(**SETTINGS)) for _ in range(2)]
    batches = [rows(1, 24), rows(2, 8)]  # unequal: rank 1's weight is a quarter
    before = [p.learner.trainer.flat.clone() for p in preqs]

    def rank(r: int) -> None:
        rounds = Rounds(SummingGroup(shared, r))  # type: ignore[arg-type]
        rounds.start(preqs[r])
        preqs[r].process(*batches[r])
        learned = preqs[r].learner.trainer.flat.clone()
        shared[f"learned{r}"] = learned
        linear = preqs[r].linear
        shared[f"linear{r}"] = (
            linear.model.flat.copy(),
            linear.hedge.advantage,
            linear.model.loss.copy(),
        )
        outcome = rounds.turn(preqs[r], drifted=r == 1, stop=False, due=r == 0, reassigned=False)
        shared[f"outcome{r}"] = outcome

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert torch.equal(before[0], before[1])  # the same start (same seed)
    a, b = (p.learner.trainer for p in preqs)
    assert torch.equal(a.flat, b.flat) and torch.equal(a.table, b.table)
    expected = 0.75 * shared["learned0"] + 0.25 * shared["learned1"]
    assert torch.allclose(a.flat, expected, atol=1e-6)
    # the linear model beside the network and its share's evidence are averaged alike
    (flat0, evidence0, loss0), (flat1, evidence1, loss1) = shared["linear0"], shared["linear1"]
    assert not np.array_equal(flat0, flat1)
    one, other = (p.linear for p in preqs)
    assert np.array_equal(one.model.flat, other.model.flat)
    np.testing.assert_allclose(one.model.flat, 0.75 * flat0 + 0.25 * flat1, atol=1e-6)
    assert one.share == other.share
    assert one.hedge.advantage == pytest.approx(0.75 * evidence0 + 0.25 * evidence1, abs=1e-5)
    assert not np.array_equal(loss0, loss1)  # the rates' losses too, and the shares they make
    np.testing.assert_allclose(one.model.loss, 0.75 * loss0 + 0.25 * loss1, rtol=1e-5)
    assert np.array_equal(one.model.shares, other.model.shares)
    outcome = shared["outcome0"]
    assert (outcome.learned, outcome.drifts, outcome.checkpoint, outcome.stop) == (
        32,
        1,
        True,
        False,
    )
    alone = Prequential.from_settings(load_settings(**SETTINGS))
    for batch in batches:
        alone.encoder.observe(alone.encoder.encode(batch[0]).num)
    for p in preqs:
        np.testing.assert_allclose(p.encoder.count, alone.encoder.count)
        np.testing.assert_allclose(p.encoder.mean, alone.encoder.mean, rtol=1e-12)
        np.testing.assert_allclose(p.encoder.m2, alone.encoder.m2, rtol=1e-9)


def test_a_round_waits_for_the_memorys_re_keying_before_it_averages_the_weights():
    """A re-keying left running on the learner's thread reads the weights: the round must not
    write them under it (the single worker's next step is queued behind it instead)."""
    shared = {"barrier": threading.Barrier(2), "slots": [None, None]}
    preqs = [Prequential.from_settings(load_settings(**SETTINGS)) for _ in range(2)]
    batches = [rows(1, 24), rows(2, 8)]
    waited: dict[int, torch.Tensor] = {}

    def rank(r: int) -> None:
        preq, stage = preqs[r], preqs[r].memory
        assert stage is not None  # the error memory is on by default
        trainer = preq.learner.trainer
        rounds = Rounds(SummingGroup(shared, r))  # type: ignore[arg-type]
        rounds.start(preq)
        preq.process(*batches[r])
        shared[f"learned{r}"] = trainer.flat.clone()
        # from here on, a wait records the weights it saw
        stage.ring_ready = lambda: waited.setdefault(r, trainer.flat.clone())  # type: ignore[method-assign]
        rounds.turn(preq, drifted=False, stop=False, due=False, reassigned=False)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(waited) == [0, 1]  # the round waited on both ranks,
    for r in range(2):  # with the rank's own weights still in place
        assert torch.equal(waited[r], shared[f"learned{r}"])
    assert not torch.equal(preqs[0].learner.trainer.flat, shared["learned0"])  # then averaged


def test_the_cut_takes_each_partitions_furthest_offset_all_waiting_labels_and_summed_counters():
    def part(
        offsets: list[list[Any]], waiting: list[list[Any]], seen: int, home: int
    ) -> dict[str, Any]:
        labels = {
            "events": waiting,
            "homes": {"events": [[key, "t", home] for key, _, _ in waiting], "labels": []},
            "labels": [],
            "joined": 1,
            "early": 0,
            "evicted": {"event": {"age": 0, "count": 0}, "label": {"age": 0, "count": 0}},
        }
        return {"offsets": offsets, "late_labels": labels,
                "stats": {"batches": 2, "events": seen, "late_learned": 0,
                          "rejected": {"not_json": 1}, "published": 0},
                "counters": {"seen": seen, "unknown_labels": 0, "drifts": [5]}}  # fmt: skip

    merged = merge_parts([
        part([["t", 0, 10], ["t", 1, 4]], [["e-1", {"a": 1}, 2.0]], 14, home=0),
        part([["t", 0, 3], ["t", 1, 9], ["t", 2, 7]], [["e-2", {"a": 2}, 1.0]], 16, home=2),
    ])  # fmt: skip
    assert merged["offsets"] == [["t", 0, 10], ["t", 1, 9], ["t", 2, 7]]
    assert [key for key, _, _ in merged["late_labels"]["events"]] == ["e-2", "e-1"]  # by age
    assert merged["late_labels"]["joined"] == 2
    assert merged["late_labels"]["homes"]["events"] == [["e-1", "t", 0], ["e-2", "t", 2]]
    assert merged["counters"] == {"seen": 30, "unknown_labels": 0, "drifts": [5]}
    assert merged["stats"]["events"] == 30 and merged["stats"]["rejected"] == {"not_json": 2}


def test_several_ranks_need_fixed_slots_and_one_rank_needs_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert join_ranks(load_settings(**SETTINGS)) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match=r"features\.numeric"):
        join_ranks(load_settings(learner={"task": "binary", "classes": [0, 1]}))
    with pytest.raises(ConfigError, match=r"learner\.classes"):
        join_ranks(load_settings(features={"numeric": ["a"]}))


class GatheringLeader:
    """Rank 0 of two whose peer's part is given: all_gather_object returns [mine, theirs]."""

    rank, world_size, leader = 0, 2, True

    def __init__(self, theirs: Any) -> None:
        self.theirs = theirs

    def all_gather_object(self, value: Any) -> list[Any]:
        return [value, self.theirs]


def test_rank_0_pushes_a_memory_with_every_ranks_rows_and_leaves_its_own_alone():
    settings = load_settings(**SETTINGS)
    preqs = [Prequential.from_settings(settings) for _ in range(2)]
    preqs[0].process(*rows(1, 24))
    preqs[1].process(*rows(2, 40))
    mine, theirs = (p.memory for p in preqs)
    assert mine is not None and theirs is not None
    own_rows = len(mine.memory)
    group = GatheringLeader(theirs.state_dict())
    merged = gathered_memory(group, preqs[0])  # type: ignore[arg-type]
    assert merged is not None and len(merged.memory) == own_rows + len(theirs.memory)
    assert len(mine.memory) == own_rows
    snapshot = decode_memory(encode_memory(merged, None))
    assert len(snapshot.error_memory) == own_rows + len(theirs.memory)


class AloneGroup:
    """A group of one: collectives return what they were given."""

    rank, world_size, leader, broken = 0, 1, True, False

    def all_reduce(self, tensor: torch.Tensor, op: Any = None) -> None:
        pass


def test_a_quiet_turn_polls_with_the_full_timeout_and_a_learning_one_does_not_block():
    preq = Prequential.from_settings(load_settings(**SETTINGS))
    lockstep = Lockstep(AloneGroup(), 0.25)  # type: ignore[arg-type]
    lockstep.restored(preq, lambda: None)
    batcher = Batcher(lambda timeout, n: [], 4, max_wait_s=1.0, poll_timeout_s=0.25)
    flags = {"drifted": False, "stop": False, "due": False, "reassigned": False}
    preq.process(*rows(3, 8))
    lockstep.turn(preq, batcher, **flags)
    assert batcher.poll_timeout_s == 0.0  # someone learned: the next poll must not hold anyone
    lockstep.turn(preq, batcher, **flags)
    assert batcher.poll_timeout_s == 0.25  # nobody learned: wait for records
    with pytest.raises(GroupBroken, match="partitions moved"):
        lockstep.turn(preq, batcher, **(flags | {"reassigned": True}))
    assert lockstep.group.broken  # no final cut after that


def test_a_drift_detected_on_one_rank_gets_the_response_on_the_other():
    shared = {"barrier": threading.Barrier(2), "slots": [None, None]}
    settings = load_settings(**SETTINGS)
    preqs = [Prequential.from_settings(settings) for _ in range(2)]
    batcher = Batcher(lambda timeout, n: [], 4, max_wait_s=1.0)
    flags = {"stop": False, "due": False, "reassigned": False}

    def rank(r: int) -> None:
        lockstep = Lockstep(SummingGroup(shared, r), 0.1)  # type: ignore[arg-type]
        lockstep.restored(preqs[r], lambda: None)
        preqs[r].process(*rows(r, 16))
        lockstep.turn(preqs[r], batcher, drifted=r == 1, **flags)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    responder = preqs[0]
    assert responder.drifts == [16]  # recorded where rank 0 stood
    schedule = responder.learner.schedule.state_dict()
    fresh = Prequential.from_settings(settings).learner.schedule.state_dict()
    assert schedule != fresh  # the learning rate re-warms from here
