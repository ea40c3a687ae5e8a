"""Overlapped updates (learner.overlap, async.c) against the synchronous compiled step.

The worker thread runs the same compiled calls in the same order on the same buffers, so every
output and every piece of state must be bit for bit the synchronous run's.
"""

import copy
import pickle

import numpy as np
import pytest
import torch

from streamlearn.core.learner import OnlineLearner
from streamlearn.core.pending import StepPending
from streamlearn.core.prequential import Prequential
from streamlearn.settings import FeatureSettings, LearnerSettings, load_settings

pytestmark = pytest.mark.usefixtures("compiled")

FEATURES = FeatureSettings(numeric_slots=5, categorical_slots=2, hash_buckets=32, embedding_dim=4)


def rows(rng, n, task):
    xs = [
        {"a": float(a), "b": float(b), "c": float(c), "k": f"k{int(abs(a) * 3)}"}
        for a, b, c in rng.normal(size=(n, 3))
    ]
    score = np.array([x["a"] - x["b"] for x in xs])
    if task == "regression":
        return xs, list(3.0 * score + 1.0)
    return xs, [int(s > 0) + (int(s > 1) if task == "multiclass" else 0) for s in score]


def runs(task, **learner):
    return [
        Prequential.from_settings(
            load_settings(
                learner={
                    "task": task,
                    "hidden": [16, 8],
                    "replay_size": 64,
                    "seed": 4,
                    "overlap": overlap,
                    "warmup_steps": 2,
                    "fast_start": 0,
                    **learner,
                },
                features={"numeric_slots": 5, "categorical_slots": 2, "hash_buckets": 32},
                memory={"size": 40, "k": 4, "rekey_every": 2},
                drift={"window": 30, "min_samples": 10, "alpha": 0.2, "k": 3.0, "cooldown": 100},
            )
        )
        for overlap in ("off", "on")
    ]


def assert_same_state(a, b):
    for run in (a, b):
        run.memory.ring_ready()  # the last re-key may still run on the worker thread
    for name, value in a.learner.state_dict()["model"].items():
        assert torch.equal(b.learner.state_dict()["model"][name], value), name
    for name, value in a.learner.trainer.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(b.learner.trainer.state_dict()[name], value), name
    for part in ("num", "cat", "y"):
        assert torch.equal(getattr(a.learner.replay, part), getattr(b.learner.replay, part))
    assert (a.learner.steps, a.learner.skipped_nonfinite, a.learner.replay.seen) == (
        b.learner.steps,
        b.learner.skipped_nonfinite,
        b.learner.replay.seen,
    )
    ring_a, ring_b = a.memory.memory.storage, b.memory.memory.storage
    assert torch.equal(ring_a.keys, ring_b.keys) and torch.equal(ring_a.values, ring_b.values)
    assert a.drifts == b.drifts and a.memory.rekeys == b.memory.rekeys


@pytest.mark.parametrize(
    ("task", "learner", "drifts"),
    [
        ("binary", {}, True),
        ("multiclass", {"updates": 3, "replay_ratio": 0.5}, True),
        ("regression", {"weight_decay": 0.01}, True),
        ("binary", {"replay_size": 0, "updates": 1}, True),
    ],
)
def test_overlapped_updates_equal_the_synchronous_ones(task, learner, drifts):
    """Including a concept flip (drift: re-warmed lr, cleared reservoir and memory), a batch
    with a NaN target (skipped updates, rows kept out of replay) and score-only rows."""
    synchronous, overlapped = runs(task, **learner)
    assert overlapped.learner._overlap and not synchronous.learner._overlap
    rng = np.random.default_rng(5)
    for step in range(40):
        xs, ys = rows(rng, 16, task)
        if step >= 20 and task != "regression":
            ys = [1 - y if y < 2 else y for y in ys]  # the concept flips
        if step == 25:
            ys[3] = float("nan") if task == "regression" else None
        if step == 30 and task == "regression":
            ys[0] = float("inf")  # a non-finite loss: the batch's updates are skipped
        outcomes = [run.process(xs, ys) for run in (synchronous, overlapped)]
        assert np.array_equal(outcomes[0].prediction, outcomes[1].prediction, equal_nan=True)
        assert np.array_equal(outcomes[0].loss, outcomes[1].loss, equal_nan=True)
    assert bool(synchronous.drifts) == drifts
    assert_same_state(synchronous, overlapped)


def learners(overlap):
    settings = LearnerSettings(task="binary", hidden=(8,), replay_size=32, seed=1, overlap=overlap)
    return OnlineLearner.from_settings(settings, FEATURES)


def batch(rng, n=12):
    num = rng.normal(size=(n, 5)).astype(np.float32)
    cat = rng.integers(0, 32, size=(n, 2))
    return num, cat, (num[:, 0] > 0).astype(np.int64)


def test_the_learner_is_read_only_after_its_step_is_waited_on():
    """The caller owns the pending step: until it waits, the learner refuses to be read,
    changed, copied or stepped again; once it has, it equals the synchronous learner."""
    rng = np.random.default_rng(7)
    synchronous, overlapped = learners("off"), learners("on")
    for learner in (synchronous, overlapped):
        learner.set_classes(np.arange(16) < 2)
    data = [batch(rng) for _ in range(6)]
    for num, cat, y in data:
        synchronous.step(num, cat, y)
    probe = data[0][:2]
    for num, cat, y in data[:-1]:
        assert overlapped.begin_step(num, cat, y).wait()
    pending = overlapped.begin_step(*data[-1])
    assert not pending.done
    refused = (
        lambda: overlapped.predict(*probe),
        lambda: overlapped.begin_step(*data[0]),
        lambda: overlapped.state_dict(),
        lambda: overlapped.on_drift(),
        lambda: pickle.dumps(overlapped),
    )
    for call in refused:
        with pytest.raises(StepPending):
            call()
    assert pending.wait() and pending.done and pending.wait()  # waited once, then remembered
    np.testing.assert_array_equal(overlapped.predict(*probe), synchronous.predict(*probe))
    assert overlapped.steps == synchronous.steps
    overlapped.begin_step(*batch(rng)).wait()
    thawed = pickle.loads(pickle.dumps(overlapped))
    copied = copy.deepcopy(overlapped)
    for other in (thawed, copied):
        assert other.steps == overlapped.steps and other.step_kernel.name == "compiled"
        np.testing.assert_array_equal(other.predict(*probe), overlapped.predict(*probe))


def _without_worker_thread(step):
    """As where the worker thread cannot be started (pthread_create failing): the step's
    begin() and forward(overlap) hand nothing over and say so."""
    step._step.worker = False


def test_without_a_worker_thread_the_updates_run_in_the_callers():
    rng = np.random.default_rng(8)
    synchronous, overlapped = learners("off"), learners("on")
    _without_worker_thread(overlapped.step_kernel.binding)
    for learner in (synchronous, overlapped):
        learner.set_classes(np.arange(16) < 2)
    for _ in range(5):
        num, cat, y = batch(rng)
        expected, got = synchronous.step(num, cat, y), overlapped.step(num, cat, y)
        np.testing.assert_array_equal(got.prediction, expected.prediction)
        np.testing.assert_array_equal(got.loss, expected.loss)
    assert not overlapped._overlap and overlapped.steps == synchronous.steps


def test_overlap_setting():
    assert not learners("off")._overlap
    assert learners("on")._overlap
    torch_kernel = LearnerSettings(task="binary", kernel="torch", overlap="on")
    assert not OnlineLearner.from_settings(
        torch_kernel, FEATURES
    )._overlap  # only the compiled step overlaps


def test_a_learner_dropped_mid_step_lets_its_updates_finish_first():
    rng = np.random.default_rng(9)
    for _ in range(20):
        learner = learners("on")
        learner.set_classes(np.arange(16) < 2)
        learner.begin_step(*batch(rng, n=64))
        assert learner.step_kernel.binding.in_flight
        del learner  # its buffers are freed only after the worker is done with them
    survivor = learners("on")
    survivor.set_classes(np.arange(16) < 2)
    assert survivor.step(*batch(rng)).learned


def test_a_rekey_left_running_is_waited_for_by_whatever_reads_the_memory():
    """refresh() leaves the re-keying on the worker thread; the memory's readers, its state
    and a pickle wait for it, and the ring ends up as the synchronous run's."""
    synchronous, overlapped = runs("binary")
    rng = np.random.default_rng(10)
    for _ in range(6):  # rekey_every 2: the last batch leaves a re-keying running
        xs, ys = rows(rng, 16, "binary")
        for run in (synchronous, overlapped):
            run.process(xs, ys)
    assert overlapped.memory._rekeying is not None and overlapped.memory.rekeys == 3
    thawed = pickle.loads(pickle.dumps(overlapped.memory))  # waits for it first
    assert overlapped.memory._rekeying is None
    for memory in (overlapped.memory, thawed):
        ring, expected = memory.memory.storage, synchronous.memory.memory.storage
        assert torch.equal(ring.keys, expected.keys) and torch.equal(ring.values, expected.values)
    for _ in range(2):
        xs, ys = rows(rng, 16, "binary")
        for run in (synchronous, overlapped):
            run.process(xs, ys)
    assert overlapped.memory._rekeying is not None  # compensate must wait for it
    hidden = rng.normal(size=(4, 8)).astype(np.float32)
    base = np.zeros((4, 16), dtype=np.float32)
    base[:, :2] = 0.5
    np.testing.assert_array_equal(
        overlapped.memory.compensate(hidden, base), synchronous.memory.compensate(hidden, base)
    )
    assert overlapped.memory._rekeying is None
    assert overlapped.memory.state_dict()["memory"]["keys"].tolist() == (
        synchronous.memory.state_dict()["memory"]["keys"].tolist()
    )


def test_without_a_worker_thread_the_rekey_runs_in_the_callers():
    synchronous, overlapped = runs("binary")
    _without_worker_thread(overlapped.learner.step_kernel.binding)
    rng = np.random.default_rng(11)
    for _ in range(6):
        xs, ys = rows(rng, 16, "binary")
        outcomes = [run.process(xs, ys) for run in (synchronous, overlapped)]
        np.testing.assert_array_equal(outcomes[0].prediction, outcomes[1].prediction)
    assert not overlapped.learner._overlap and overlapped.memory._rekeying is None
    assert_same_state(synchronous, overlapped)


def test_auto_overlaps_only_where_two_cpus_may_be_kept_busy(monkeypatch):
    import streamlearn.core.learner as learner_module

    monkeypatch.setattr(learner_module, "available_cpus", lambda: 1.5)  # a 1.5-CPU pod limit
    assert not learners("auto")._overlap
    assert learners("on")._overlap  # asked for explicitly: kept
    monkeypatch.setattr(learner_module, "available_cpus", lambda: 2.0)
    assert learners("auto")._overlap


def test_overlapped_updates_equal_the_synchronous_ones_through_expert_switches():
    """A → B → A → B with the expert pool: saves, trials and switches (weights replaced in
    place, the memory re-keyed) leave the overlapped run bit for bit the synchronous one."""
    synchronous, overlapped = (
        Prequential.from_settings(
            load_settings(
                learner={
                    "hidden": [16, 8],
                    "replay_size": 64,
                    "seed": 4,
                    "overlap": overlap,
                    "fast_start": 0,  # whole batches from the start: switches on this stream
                },
                features={"numeric_slots": 5, "categorical_slots": 2, "hash_buckets": 32},
                memory={"size": 40, "k": 4, "rekey_every": 2},
                drift={"window": 30, "min_samples": 10, "alpha": 0.2, "k": 3.0, "cooldown": 100},
                experts={"trial_rows": 32, "snapshot_every": 4},
            )
        )
        for overlap in ("off", "on")
    )
    assert overlapped.learner._overlap and not synchronous.learner._overlap
    rng = np.random.default_rng(5)
    for step in range(160):
        xs, ys = rows(rng, 16, "binary")
        if (step // 40) % 2:
            ys = [1 - y for y in ys]  # concept B
        outcomes = [run.process(xs, ys) for run in (synchronous, overlapped)]
        assert np.array_equal(outcomes[0].prediction, outcomes[1].prediction)
        assert np.array_equal(outcomes[0].loss, outcomes[1].loss)
    assert synchronous.expert_switches == overlapped.expert_switches >= 1
    assert_same_state(synchronous, overlapped)
