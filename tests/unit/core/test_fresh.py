"""FreshModel: started at a detection, learns prequentially, replaces the live weights only
when clearly better, backs off after models that lost, and survives a checkpoint bit for bit;
on sine-abrupt (a new nonlinear concept) the chain is more accurate with it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from serving_support import small_settings
from test_prequential_state import through_disk

from streamlearn.core.fresh import FreshModel, paired_t
from streamlearn.core.prequential import Prequential
from streamlearn.errors import ConfigError


def _chain(**experts: object) -> Prequential:
    return Prequential.from_settings(small_settings(experts={"fresh_rows": 64, **experts}))


def _fresh(preq: Prequential) -> FreshModel:
    assert preq.experts is not None and preq.experts.fresh is not None
    return preq.experts.fresh


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised rows of an easy concept (the sign of the first feature) and its classes."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8)).astype(np.float32)
    return z, np.zeros((n, 4), np.int64), (z[:, 0] > 0).astype(np.int64)


def _live_says(target: np.ndarray, p_true: float) -> np.ndarray:
    """A live model's base prediction giving the true class probability ``p_true``."""
    prediction = np.zeros((len(target), 4), np.float32)
    prediction[np.arange(len(target)), target] = p_true
    prediction[np.arange(len(target)), 1 - target] = 1.0 - p_true
    return prediction


def _feed(fresh: FreshModel, p_true: float, batches: int, seed: int = 0) -> list[bool]:
    switched = []
    for i in range(batches):
        z, cat, y = _rows(32, seed + i)
        fresh.learn(z, cat, y, _live_says(y, p_true))
        switched.append(fresh.judge())
    return switched


def _two_classes(preq: Prequential) -> None:
    preq.labels.add_many([0, 1])
    preq.learner.set_classes(preq._class_mask())


def test_a_clearly_better_fresh_model_replaces_the_live_weights():
    preq = _chain()
    _two_classes(preq)
    fresh = _fresh(preq)
    z, cat, y = _rows(256, 99)
    before = (preq.learner.predict(z, cat).argmax(axis=1) == y).mean()
    fresh.start()
    assert fresh.learning and fresh.started == 1
    assert fresh.model is not None and not fresh.model.overlapping  # its steps on this thread
    switched = _feed(fresh, p_true=0.05, batches=2)  # the live model is sure and wrong
    assert switched == [False, True]  # decided once 64 rows were learned
    assert not fresh.learning and fresh.switches == 1 and fresh.dropped == 0
    after = (preq.learner.predict(z, cat).argmax(axis=1) == y).mean()
    assert after >= before + 0.2  # the live model now predicts what the fresh one learned


def test_a_fresh_model_that_is_not_better_is_dropped_and_backs_off():
    preq = _chain()
    _two_classes(preq)
    fresh = _fresh(preq)
    before = {k: v.clone() for k, v in preq.learner.model.state_dict().items()}
    fresh.start()
    assert _feed(fresh, p_true=0.999, batches=2) == [False, False]  # the live model is right
    assert not fresh.learning and fresh.switches == 0 and fresh.dropped == 1
    after = preq.learner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the live model untouched
    fresh.start()  # within 64 × 2 rows of the drop: held back
    assert not fresh.learning and fresh.started == 1
    _feed(fresh, p_true=0.999, batches=4)  # 128 rows learned by the live model meanwhile
    fresh.start()
    assert fresh.learning and fresh.started == 2


def test_a_fresh_model_ahead_but_not_clearly_is_judged_again_at_twice_the_rows():
    # unmixed: the live model below is unsure but always right, so a mixed fresh model,
    # judged by its hits, would be dropped early (test_a_losing_fresh_model_is_dropped_early)
    preq = _chain(fresh_max_rows=256, fresh_mix=False)
    _two_classes(preq)
    fresh = _fresh(preq)
    fresh.start()
    # a live model a little less sure than the fresh one: 0 < t < fresh_t at 64 rows
    assert _feed(fresh, p_true=0.65, batches=2) == [False, False]
    assert fresh.learning and fresh.due == 128 and fresh.dropped == 0
    # then sure and wrong (a slow adaptation): clearly behind on rows 64-128, a switch
    assert _feed(fresh, p_true=0.05, batches=2, seed=2) == [False, True]
    assert not fresh.learning and fresh.switches == 1


def test_a_fresh_model_never_clearly_ahead_is_dropped_at_fresh_max_rows():
    preq = _chain(fresh_max_rows=256, fresh_t=1e9)  # ahead, never by a t-statistic of 1e9
    _two_classes(preq)
    fresh = _fresh(preq)
    before = {k: v.clone() for k, v in preq.learner.model.state_dict().items()}
    fresh.start()
    dues = []
    for i in range(8):
        _feed(fresh, p_true=0.05, batches=1, seed=i)
        dues.append(fresh.due if fresh.learning else None)
    assert dues == [64, 128, 128, 256, 256, 256, 256, None]  # judged at 64, 128, 256 rows
    assert fresh.switches == 0 and fresh.dropped == 1
    after = preq.learner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fresh_max_rows_below_fresh_rows_is_refused():
    with pytest.raises(ConfigError, match=r"fresh_max_rows=32 is below experts\.fresh_rows=64"):
        _chain(fresh_max_rows=32)


def test_paired_t():
    assert paired_t(np.array([1.0])) == 0.0
    assert paired_t(np.zeros(10)) == 0.0
    assert paired_t(np.ones(10)) == np.inf
    d = np.array([1.0, 2.0, 3.0, 2.0])
    assert np.isclose(paired_t(d), 2.0 / (np.std(d, ddof=1) / 2.0))


def _drifting(seed: int, n: int = 40):
    """Batches of one concept, then (from batch 10) its inverse: detections follow."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        v = rng.normal(size=(32, 3))
        flip = -1.0 if i >= 10 else 1.0
        xs = [{"a": a, "b": b, "c": c} for a, b, c in v]
        yield xs, [int(flip * a > 0) for a, _, _ in v]


def test_a_chain_restored_while_a_fresh_model_learns_continues_bit_for_bit():
    preq = _chain(fresh_rows=256)
    stream = list(_drifting(4))  # a seed whose continuation switches (asserted below)
    i = 0
    while not _fresh(preq).learning:
        preq.process(*stream[i])
        i += 1
    with torch.no_grad():  # a live model sure and wrong: the fresh one will take over
        preq.learner.model.head.weight.mul_(-50.0)
    state = through_disk(preq.state_dict())
    restored = _chain(fresh_rows=256)
    restored.load_state_dict(state)
    assert _fresh(restored).learning and _fresh(restored).seen == _fresh(preq).seen
    for xs, ys in stream[i:]:
        a, b = preq.process(xs, ys), restored.process(xs, ys)
        np.testing.assert_array_equal(a.prediction, b.prediction)
    assert _fresh(preq).switches == 1  # the continuation went through a switch
    assert _fresh(restored).switches == 1
    assert restored.expert_switches == preq.expert_switches


def test_a_chain_with_the_fresh_model_is_picklable():
    import pickle

    preq = _chain()
    copy = pickle.loads(pickle.dumps(preq))
    assert _fresh(copy).live is copy.learner


def test_sine_abrupt_is_learned_better_with_the_fresh_model():
    """The suite's sine-abrupt stream (a new nonlinear boundary at each drift), seeded: the
    fresh model takes over at least once and the whole stream is more accurate."""
    sys.path.insert(0, str(Path(__file__).parents[3] / "benchmarks"))
    from suite import suite_settings
    from suite_streams import suite_rows
    from timing_runner import prequential_run

    seed = 42
    rows = suite_rows("sine-abrupt", 30_000, seed)
    accuracy, switches = {}, {}
    for fresh in (False, True):
        settings = suite_settings("binary", seed)
        settings = settings.model_copy(
            update={"experts": settings.experts.model_copy(update={"fresh": fresh})}
        )
        preq, score, *_ = prequential_run(settings, rows)
        accuracy[fresh] = float(score.values().mean())
        pool = preq.experts
        switches[fresh] = 0 if pool is None or pool.fresh is None else pool.fresh.switches
    assert switches[False] == 0 and switches[True] >= 1
    assert accuracy[True] > accuracy[False] + 0.003, accuracy


def test_a_checkpoint_from_before_the_fresh_model_loads():
    preq = _chain()
    for xs, ys in list(_drifting(5))[:4]:
        preq.process(xs, ys)
    state = preq.state_dict()
    del state["experts"]["fresh_model"]  # as a checkpoint written before it holds
    restored = _chain()
    restored.load_state_dict(through_disk(state))
    assert not _fresh(restored).learning and _fresh(restored).started == 0
    xs, ys = next(_drifting(6))
    np.testing.assert_array_equal(
        preq.process(xs, ys).prediction, restored.process(xs, ys).prediction
    )


def test_a_regression_fresh_model_learns_on_the_live_models_target_scale():
    preq = Prequential.from_settings(small_settings("regression", experts={"fresh_rows": 64}))
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = rng.normal(size=(32, 2))
        preq.process([{"a": a, "b": b} for a, b in v], list(100.0 + 10.0 * v[:, 0]))
    fresh = _fresh(preq)
    fresh.start()
    assert fresh.model is not None
    live = preq.learner.model
    assert float(fresh.model.model.target_loc) == float(live.target_loc) > 90.0
    z, cat, _ = _rows(32, 1)
    target = (100.0 + 10.0 * z[:, 0]).astype(np.float64)
    fresh.learn(z, cat, target, np.full(32, 100.0, np.float32))
    preq.learner.step(z, cat, target)  # the live model learns the same targets
    assert np.isclose(float(fresh.model.model.target_scale), float(live.target_scale), rtol=1e-9)


def _served(fresh: FreshModel, p_true: float, batches: int, seed: int = 0) -> list[float]:
    """The served prediction's accuracy per batch while ``fresh`` learns beside a live model
    giving the true class ``p_true``."""
    accuracy = []
    for i in range(batches):
        z, cat, y = _rows(32, seed + i)
        served = fresh.learn(z, cat, y, _live_says(y, p_true))
        accuracy.append(float((served.argmax(axis=1) == y).mean()))
    return accuracy


def test_a_better_fresh_model_is_served_within_its_first_batch():
    preq = _chain(fresh_rows=512)
    _two_classes(preq)
    fresh = _fresh(preq)
    fresh.start()
    assert fresh.share == pytest.approx(1.0 / (1.0 + np.e))  # the prior: Δ = −1
    z, cat, y = _rows(32, 0)
    live = _live_says(y, 0.05)  # sure and wrong
    served = fresh.learn(z, cat, y, live)
    # the first row is served at the prior share: the live model's arg max
    assert served[0].argmax() == live[0].argmax()
    assert np.abs(served[0] - live[0]).max() > 0.0  # mixed, at the prior's small share
    assert fresh.share > 0.99  # the fresh model won the rows it predicted
    assert (served.argmax(axis=1) == y)[16:].mean() >= 0.8  # served from within the batch
    assert min(_served(fresh, 0.05, 3, seed=1)) >= 0.85  # the live model gets none right


def test_a_fresh_model_worse_than_the_live_one_is_not_served():
    preq = _chain(fresh_rows=512)
    _two_classes(preq)
    fresh = _fresh(preq)
    fresh.start()
    start = fresh.share  # its prior's
    assert _served(fresh, 0.999, 1) == [1.0]  # the live model's hits, each row
    assert fresh.share < start / 5  # its first rows' misses: the share falls at once
    # later, a fresh model that has learned the easy concept ties the live one, and its
    # discounted evidence creeps back; the served rows stay the live model's hits
    assert _served(fresh, 0.999, 3, seed=1) == [1.0, 1.0, 1.0]


def test_without_the_mix_the_live_prediction_is_served_as_it_is():
    preq = _chain(fresh_mix=False)
    _two_classes(preq)
    fresh = _fresh(preq)
    fresh.start()
    z, cat, y = _rows(32, 0)
    live = _live_says(y, 0.05)
    assert fresh.learn(z, cat, y, live) is live and fresh.share == 0.0


def test_score_only_rows_are_served_the_mix_and_exports_see_the_live_model():
    preq = _chain(fresh_rows=512)
    stream = list(_drifting(3))
    i = 0
    while not _fresh(preq).learning:  # until the flip's detection
        preq.process(*stream[i])
        i += 1
    exported_seen: list[np.ndarray] = []
    preq.observers.append(lambda raw, cat, target, base: exported_seen.append(base))
    with torch.no_grad():  # the live model sure and wrong: the fresh one earns its share
        preq.learner.model.head.weight.mul_(-50.0)
    preq.process(*stream[i])
    fresh = _fresh(preq)
    assert fresh.learning and fresh.share > 0.9
    with torch.no_grad():  # wrong again after learning that batch
        preq.learner.model.head.weight.mul_(-50.0)
    xs, ys = stream[i + 1]
    slots = np.array([preq.labels.classes.index(y) for y in ys])
    feats = preq.encoder.encode(xs)
    z = preq.encoder.standardize(feats.num)
    exported, _ = preq.base_prediction(z, feats.cat)
    served, _ = preq.base_prediction(z, feats.cat, served=True)
    assert (served.argmax(1) == slots).mean() >= (exported.argmax(1) == slots).mean() + 0.2
    np.testing.assert_array_equal(preq.predict(xs), preq._score(z, feats.cat))
    before = len(exported_seen)
    preq.process(xs, ys)  # the observers (the publisher's quality gate) see the exported form
    first = exported_seen[before]  # the first (fast-start) sub-batch's rows, before learning
    np.testing.assert_allclose(first, exported[: len(first)], rtol=1e-5, atol=1e-6)


def test_a_losing_fresh_model_is_dropped_early_and_backs_off():
    preq = _chain(fresh_rows=512)
    _two_classes(preq)
    fresh = _fresh(preq)
    fresh.start()
    z, cat, y = _rows(32, 0)
    fresh.learn(z, cat, y, _live_says(y, 0.999))  # the live model right on every row
    assert fresh.learning and fresh.share < 0.1 and fresh.seen == 32
    assert not fresh.judge()  # dropped at 32 rows, long before fresh_rows
    assert not fresh.learning and fresh.dropped == 1 and fresh.switches == 0
    fresh.start()
    assert not fresh.learning  # backs off as after any drop
