"""ExpertPool: bounded, least recently used out, switches only to a better past model, survives a
checkpoint (and old checkpoints without it), and what is exported after a switch is the model in
use; on the recurring stream it brings the accuracy back sooner than learning alone."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
from serving_support import make_rows, small_settings

from streamlearn.core.prequential import Prequential
from streamlearn.export.artifact import load_bundle
from streamlearn.export.onnx import export_prequential
from streamlearn.settings import load_settings
from streamlearn.sources.synthetic import STREAMS, stream_rows
from streamlearn.worker.checkpoint import to_plain

SEGMENT = 1500  # events per concept of the small recurring stream


def _chain(pool: bool = True, **experts: object) -> Prequential:
    """The pool's past models alone: a fresh model's switches (tests/unit/core/test_fresh.py)
    would add to the switches counted here."""
    settings = small_settings(experts={"enabled": pool, "fresh": False, **experts})
    return Prequential.from_settings(settings)


def _recurring(segments: int = 4) -> tuple[list[dict], list]:
    """A → B → A → B… of make_rows' concept and its inverse, fresh rows in every segment."""
    rows: list[dict] = []
    ys: list = []
    for i in range(segments):
        r, y = make_rows(SEGMENT, 10 + i, flip=bool(i % 2))
        rows += r
        ys += y
    return rows, ys


def _outcomes(preq: Prequential, rows: list[dict], ys: list, batch: int = 32) -> list:
    return [
        preq.process(rows[i : i + batch], ys[i : i + batch]) for i in range(0, len(rows), batch)
    ]


def _run(preq: Prequential, rows: list[dict], ys: list) -> np.ndarray:
    """Per-event hits of the prequential predictions."""
    hits = [out.prediction.argmax(axis=1) == out.target for out in _outcomes(preq, rows, ys)]
    return np.concatenate(hits).astype(np.float64)


def _mark(preq: Prequential, value: float) -> None:
    """Give the live model an identity: its head's bias set to ``value``."""
    preq.learner.model.head.bias.fill_(value)


def _save(preq: Prequential, value: float) -> None:
    """A batch with the model marked (its copy is taken), then a detection (the copy saved)."""
    _mark(preq, value)
    pool = preq.experts
    assert pool is not None
    empty = np.zeros((0, 8), np.float32), np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    pool.observe(*empty, np.zeros((0, 4), np.float32), drifted=False)
    pool.observe(*empty, np.zeros((0, 4), np.float32), drifted=True)


def _marks(preq: Prequential) -> list[float]:
    assert preq.experts is not None
    return [float(e.weights["params"]["head.bias"][0]) for e in preq.experts.experts]


def test_pool_is_bounded_and_evicts_the_least_recently_used():
    preq = _chain(size=3, snapshot_every=1000)
    for value in (1.0, 2.0, 3.0):
        _save(preq, value)
    assert _marks(preq) == [1.0, 2.0, 3.0]
    preq.experts.experts[0].used = 99  # expert 1.0 was used last: 2.0 is now the oldest
    _save(preq, 4.0)
    assert _marks(preq) == [1.0, 4.0, 3.0]
    _save(preq, 5.0)
    assert _marks(preq) == [1.0, 4.0, 5.0]  # then 3.0
    assert len(preq.experts) == 3


def test_a_detection_saves_into_the_slot_the_live_model_came_from():
    preq = _chain(snapshot_every=1000)
    _save(preq, 1.0)
    _save(preq, 2.0)
    preq.experts.origin = 0  # as after a switch to expert 0
    _save(preq, 3.0)
    assert _marks(preq) == [3.0, 2.0] and preq.experts.origin is None


def test_switches_to_the_past_model_of_a_returning_concept_only():
    rows, ys = _recurring()
    preq = _chain()
    hits = _run(preq, rows, ys)
    pool = preq.experts
    assert pool is not None
    # one detection per drift; the first finds no other expert, each return finds its own
    assert [round(d / SEGMENT) for d in preq.drifts] == [1, 2, 3]
    assert pool.switches == 2 and len(pool) == 2
    trial = pool.last_trial
    assert trial is not None and trial.chosen is not None
    assert trial.expert_losses[trial.chosen] < 0.5 * trial.live_loss
    assert hits[3 * SEGMENT + 250 : 3 * SEGMENT + 500].mean() > 0.95


def test_a_returning_concept_is_switched_to_from_its_detection_batch():
    rows, ys = _recurring(3)
    hits, trials = {}, {}
    for ratio in (0.0, 0.05):
        preq = _chain(early_ratio=ratio)
        hits[ratio] = _run(preq, rows, ys)
        pool = preq.experts
        assert pool is not None and pool.switches == 1 and pool.last_trial is not None
        trials[ratio] = pool.last_trial
    assert trials[0.0].rows == 128  # at trial_rows
    assert trials[0.05].rows <= 32  # the detection batch's rows from the detection on
    chosen = trials[0.05].chosen
    assert chosen is not None
    assert trials[0.05].expert_losses[chosen] <= 0.05 * trials[0.05].live_loss
    back = slice(2 * SEGMENT, 2 * SEGMENT + 160)  # the return and the trial's rows after it
    assert hits[0.05][back].mean() >= hits[0.0][back].mean() + 0.1


def test_an_early_switch_needs_eight_rows_from_the_detection_on():
    preq = _chain(snapshot_every=1000)
    _save(preq, 1.0)  # two experts: the pool has a candidate at the next detection
    pool = preq.experts
    assert pool is not None
    judged: list[int] = []
    pool._try = lambda num, cat, target, live, ratio: judged.append(len(target)) or False
    z, cat, y = np.zeros((32, 8), np.float32), np.zeros((32, 4), np.int64), np.zeros(32, np.int64)
    live = np.full((32, 4), 0.25, np.float32)
    pool.observe(z, cat, y, live, drifted=True, detected_at=25)  # 7 rows after it
    assert judged == []
    pool.observe(z, cat, y, live, drifted=True, detected_at=24)
    assert judged == [8]


def test_no_switch_when_no_expert_beats_the_live_model_by_the_margin():
    rows, ys = make_rows(SEGMENT, 10)
    preq = _chain(snapshot_every=1000)
    _run(preq, rows, ys)
    before = {k: v.clone() for k, v in preq.learner.model.state_dict().items()}
    _save(preq, float(preq.learner.model.head.bias[0]))  # itself: the fresh slot, never tried
    _save(preq, float(preq.learner.model.head.bias[0]))
    more, more_ys = make_rows(256, 11)
    _run(preq, more, more_ys)
    trial = preq.experts.last_trial
    assert trial is not None and trial.chosen is None  # a copy of itself is no better
    assert preq.experts.switches == 0
    assert not torch.equal(
        before["body.0.weight"], preq.learner.model.state_dict()["body.0.weight"]
    )


def _through_disk(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(to_plain(state), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_checkpoint_round_trip_mid_trial_continues_bit_for_bit():
    rows, ys = _recurring(3)
    cut = 2 * SEGMENT + 64  # just after the return's detection: a trial is open
    original = _chain(early_ratio=0.0)  # judged at trial_rows only
    _run(original, rows[:cut], ys[:cut])
    assert original.experts is not None and original.experts.trying
    restored = _chain(early_ratio=0.0)
    restored.load_state_dict(_through_disk(original.state_dict()))
    assert restored.experts is not None and restored.experts.trying
    a, b = _run(original, rows[cut:], ys[cut:]), _run(restored, rows[cut:], ys[cut:])
    np.testing.assert_array_equal(a, b)
    assert original.experts.switches == restored.experts.switches == 1
    for (name, p), q in zip(
        original.learner.model.state_dict().items(),
        restored.learner.model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(p, q), name


def test_a_checkpoint_without_a_pool_loads_into_an_empty_one():
    rows, ys = make_rows(600, 10)
    old = _chain(pool=False)
    _run(old, rows, ys)
    state = _through_disk(old.state_dict())
    assert "experts" not in state  # the pool off writes what checkpoints held before it
    restored = _chain()
    restored.load_state_dict(state)
    assert restored.experts is not None and len(restored.experts) == 0
    assert restored.seen == old.seen


def test_the_exported_model_is_the_one_switched_to():
    rows, ys = _recurring(3)
    cut = 2 * SEGMENT + 400  # past the switch back to A
    preq = _chain()
    _run(preq, rows[: 2 * SEGMENT - 200], ys[: 2 * SEGMENT - 200])
    before = export_prequential(preq)
    _run(preq, rows[2 * SEGMENT - 200 : cut], ys[2 * SEGMENT - 200 : cut])
    assert preq.experts is not None and preq.experts.switches == 1
    after = export_prequential(preq)
    probe, probe_ys = make_rows(200, 99)
    bundle = load_bundle(2, after.onnx, after.with_version(2).meta_bytes())
    old = load_bundle(1, before.onnx, before.with_version(1).meta_bytes())
    num, cat = bundle.encode(probe)
    pred, _ = bundle.run(num, cat)
    np.testing.assert_allclose(pred, preq.learner.predict(num, cat), rtol=1e-4, atol=1e-5)
    target = np.array([preq.classes().index(y) for y in probe_ys])
    assert (pred.argmax(axis=1) == target).mean() > 0.9  # concept A, served
    stale, _ = old.run(*old.encode(probe))
    assert (stale.argmax(axis=1) == target).mean() < 0.5  # what was served before: concept B


def test_the_recurring_stream_recovers_sooner_with_the_pool():
    """agrawal-recurring (A → B → A → B), seeded: the 500 events after each return, and the
    level reached 500 events after it against the concept's earlier level."""
    sys.path.insert(0, str(Path(__file__).parents[3] / "benchmarks"))
    from timing_runner import prequential_run

    events, seed = 8000, 7
    spec = STREAMS["agrawal-recurring"]
    rows = list(stream_rows(spec.name, events, seed))
    hits = {}
    for pool in (False, True):
        settings = load_settings(learner={"seed": seed, "device": "cpu"}, experts={"enabled": pool})
        preq, score, *_ = prequential_run(settings, rows)
        hits[pool] = score.values()
        fresh = 0 if preq.experts is None else preq.experts.fresh.switches  # to a fresh model
        assert preq.expert_switches - fresh == (2 if pool else 0)  # back to a past model
    for position, earlier_end in spec.returns(events):
        earlier = hits[True][earlier_end - 1000 : earlier_end].mean()
        after = {pool: h[position : position + 500].mean() for pool, h in hits.items()}
        level = {pool: h[position + 250 : position + 500].mean() for pool, h in hits.items()}
        assert after[True] > after[False] + 0.05, (position, after)
        assert level[True] >= earlier - 0.01 > level[False], (position, earlier, level)


def test_predictions_are_unchanged_without_a_detection():
    """No detection, no trial, no switch: the pool (copies only) leaves every prediction alone."""
    rows, ys = make_rows(800, 10)
    whole = {"fast_start": 0}  # whole micro-batches: the pool observes 800 / 32 of them

    def chain(pool: bool) -> Prequential:
        return Prequential.from_settings(small_settings(experts={"enabled": pool}, learner=whole))

    with_pool = chain(True)
    np.testing.assert_array_equal(_run(with_pool, rows, ys), _run(chain(False), rows, ys))
    assert with_pool.drifts == [] and with_pool.experts is not None
    assert with_pool.experts.batches == 25 and not with_pool.experts.trying


def test_copies_are_counted_in_micro_batches_through_the_fast_start(monkeypatch):
    """A young model's micro-batches pass in many sub-batches; the pool still counts them as
    one each, so its copies of the live model stay snapshot_every micro-batches apart."""
    preq = _chain(snapshot_every=4)  # the default fast start: 64 x 32 = 2,048 events
    assert preq.fast_start
    copies = []
    weights = preq.learner.weights
    monkeypatch.setattr(preq.learner, "weights", lambda: copies.append(preq.seen) or weights())
    rows, ys = make_rows(640, 3)  # 20 micro-batches, all in the fast start
    outcomes = _outcomes(preq, rows, ys)
    assert preq.fast_starting(32) and preq.drifts == []
    assert preq.experts is not None and preq.experts.batches == len(outcomes) == 20
    # the first sub-batch's copy (none held yet), then every 4th micro-batch's end
    assert copies == [1, 128, 256, 384, 512, 640]


def test_regression_experts_are_judged_by_squared_error():
    rows, ys = make_rows(600, 10, task="regression")
    preq = Prequential.from_settings(
        small_settings(
            "regression",
            experts={"snapshot_every": 1000},
            drift={"detector": "none"},  # the detections are this test's own, below
        )
    )
    _outcomes(preq, rows, ys)
    pool = preq.experts
    assert pool is not None
    for value in (0.0, 1.0):  # two saved copies: the first is tried, the second is itself
        preq.learner.model.head.bias.fill_(value)
        empty = np.zeros((0, 8), np.float32), np.zeros((0, 4), np.int64), np.zeros(0)
        pool.observe(*empty, np.zeros(0, np.float32), drifted=False)
        pool.observe(*empty, np.zeros(0, np.float32), drifted=True)
    more, more_ys = make_rows(256, 11, task="regression")
    _outcomes(preq, more, more_ys)
    trial = pool.last_trial
    assert trial is not None and trial.rows == 128  # experts.trial_rows
    assert np.isfinite(trial.live_loss) and np.isfinite(trial.expert_losses[0])


def test_a_detection_soon_after_a_switch_saves_the_model_switched_to():
    """The copy taken while the trial ran (the live model adapting from B) is dropped at the
    switch, so a detection a few batches later refreshes A's slot with A's model."""
    rows, ys = _recurring(3)
    cut = 2 * SEGMENT + 400  # the switch back to A came a few batches ago
    preq = _chain()
    _run(preq, rows[:cut], ys[:cut])
    pool = preq.experts
    assert pool is not None and pool.switches == 1 and pool.origin is not None
    slot = pool.origin
    empty = np.zeros((0, 8), np.float32), np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    pool.observe(*empty, np.zeros((0, 4), np.float32), drifted=True)
    probe, probe_ys = make_rows(400, 98)  # concept A
    preq.learner.load_weights(pool.experts[slot].weights)
    assert (_run(preq, probe, probe_ys)[:64]).mean() > 0.9


def test_a_switch_at_the_detection_rekeys_a_memory_that_is_not_reset(monkeypatch):
    """memory.reset_on_drift off: the rows kept were keyed by the weights replaced."""
    from streamlearn.core.memory.stage import MemoryStage

    rekeyed: list[int] = []
    real = MemoryStage.rekey
    monkeypatch.setattr(MemoryStage, "rekey", lambda self: rekeyed.append(1) or real(self))
    rows, ys = _recurring(3)
    settings = small_settings(
        experts={"fresh": False}, memory={"enabled": True, "reset_on_drift": False}
    )
    preq = Prequential.from_settings(settings)
    _run(preq, rows[16:], ys[16:])  # shifted: the return's detection early in its batch
    pool = preq.experts
    assert pool is not None and pool.switches == 1
    assert pool.last_trial is not None and pool.last_trial.rows < 32  # at the detection
    assert rekeyed == [1]
