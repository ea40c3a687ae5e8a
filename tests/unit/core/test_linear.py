"""The linear model beside a classifier's network and its share of the base prediction."""

from __future__ import annotations

import math
import pickle

import numpy as np
import onnxruntime as ort
import pytest

from streamlearn.core.hedge import Hedge
from streamlearn.core.linear import LinearMixture, LinearModel, LinearRates
from streamlearn.core.prequential import Prequential
from streamlearn.export.onnx import export_prequential
from streamlearn.kernels.reference.linear import NumpyLinear
from streamlearn.settings import load_settings


def chain(task: str = "binary", **sections) -> Prequential:
    sections.setdefault("learner", {})
    sections["learner"] = {"task": task, "seed": 3, **sections["learner"]}
    sections.setdefault("neighbours", {"enabled": False})  # the network and the linear model
    return Prequential.from_settings(load_settings(**sections))


def columns(rng: np.random.Generator, n: int, concept: str) -> tuple[dict, list[int]]:
    x = rng.normal(0, 1, (n, 4))
    cols = {f"x{i}": x[:, i] for i in range(4)}
    cols["c"] = np.array([f"v{k}" for k in rng.integers(0, 6, n)], dtype=object)
    if concept == "linear":  # a noisy hyperplane: a linear model's home ground
        y = (x @ np.array([1.0, -0.5, 0.25, 0.0]) + rng.normal(0, 0.6, n) > 0).astype(int)
    else:  # xor of two signs: no linear model does better than chance
        y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
    return cols, [int(v) for v in y]


def run(preq: Prequential, concept: str, batches: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = total = 0
    for _ in range(batches):
        cols, ys = columns(rng, 32, concept)
        out = preq.process_columns(cols, ys)
        hits += int((out.prediction.argmax(1) == out.target).sum())
        total += len(ys)
    return hits / total


@pytest.mark.parametrize("kernel", ["numpy", "compiled"])
def test_the_linear_model_learns_a_linear_concept_over_numeric_and_bucket_inputs(kernel):
    form = NumpyLinear() if kernel == "numpy" else chain().backend.linear
    assert form.name == kernel
    model = LinearModel(numeric_slots=3, buckets=16, width=4, lr=0.05, kernel=form)
    rates = LinearRates([model], 0.99)
    rng = np.random.default_rng(1)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        num = rng.normal(0, 1, (n, 3)).astype(np.float32)
        cat = rng.integers(0, 16, (n, 1))
        return num, cat, (num[:, 0] + (cat[:, 0] % 2) * 2.0 - 1.0 > 0).astype(np.int64)

    for _ in range(200):
        num, cat, target = rows(32)
        rates.learn((num, cat), target, rates.predict((num, cat), 2), 2)
    num, cat, target = rows(500)
    network = np.zeros((500, 4), np.float32)
    network[:, 0] = 1.0
    quarter = Hedge(0.99, 1.0, (-50.0, 50.0), math.log(1 / 3))  # σ(log 1/3) = 1/4
    mixture = LinearMixture(rates, quarter)
    assert mixture.share == pytest.approx(0.25)
    mixed, linear = mixture.mix(network, (num, cat), 2)
    prediction = linear.mixed
    np.testing.assert_array_equal(prediction, linear.each[0])  # one rate: its own
    assert (prediction.argmax(1) == target).mean() > 0.9
    np.testing.assert_allclose(prediction.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed, 0.75 * network + 0.25 * prediction, rtol=1e-6)
    assert not prediction[:, 2:].any()  # classes not switched on stay zero
    assert not model.buckets[0].any()  # bucket 0 is a missing value
    assert not rates.predict((num, cat), 0).mixed.any()  # no class yet: all zero


def test_a_pickled_linear_model_keeps_its_parts_views_of_one_buffer():
    model = pickle.loads(pickle.dumps(LinearModel(2, 4, 2, 0.1, NumpyLinear())))
    model.weights[1, 0] = 1.0
    assert model.numeric[1, 0] == 1.0 and np.shares_memory(model.flat, model.numeric)
    assert np.shares_memory(model.flat, model.buckets) and np.shares_memory(model.flat, model.bias)


def test_a_pickled_set_of_rates_keeps_each_model_a_view_of_its_buffer():
    models = [LinearModel(2, 4, 2, lr, NumpyLinear()) for lr in (0.1, 0.01)]
    rates = pickle.loads(pickle.dumps(LinearRates(models, 0.99)))
    rows = (np.ones((1, 2), np.float32), np.ones((1, 1), np.int64))
    rates.learn(rows, np.array([1]), rates.predict(rows, 2), 2)
    fast, slow = rates.models
    assert np.shares_memory(rates.flat, fast.numeric) and np.shares_memory(rates.flat, slow.bias)
    assert np.shares_memory(rates.flat, rates.by_rate) and rates.lrs.tolist() == pytest.approx(
        [0.1, 0.01]
    )
    np.testing.assert_allclose(fast.bias, 10 * slow.bias)  # same gradient, ten times the step
    np.testing.assert_array_equal(rates.flat, np.concatenate([fast.flat, slow.flat]))


def rate_stream(rng: np.random.Generator, flip_every: int, noise: float, n: int):
    """Rows of a noisy linear concept whose sign flips every ``flip_every`` rows."""
    for start in range(0, n, 16):
        num = rng.normal(0, 1, (16, 2)).astype(np.float32)
        sign = 1.0 if (start // flip_every) % 2 == 0 else -1.0
        y = (sign * (num[:, 0] + rng.normal(0, noise, 16)) > 0).astype(np.int64)
        yield (num, np.zeros((16, 0), np.int64)), y


@pytest.mark.parametrize(("flip_every", "noise", "winner"), [(160, 0.1, 0), (10**9, 1.0, 1)])
def test_the_rates_mix_favours_the_fast_rate_on_drift_and_the_slow_one_when_stationary(
    flip_every, noise, winner
):
    models = [LinearModel(2, 1, 2, lr, NumpyLinear()) for lr in (0.1, 0.002)]
    rates = LinearRates(models, 1 - 1 / 500)
    rng = np.random.default_rng(5)
    for rows, y in rate_stream(rng, flip_every, noise, 8000):
        rates.learn(rows, y, rates.predict(rows, 2), 2)
    assert rates.shares[winner] > 0.9
    assert rates.shares.sum() == pytest.approx(1.0)
    expected = np.exp(-rates.loss) / np.exp(-rates.loss).sum()
    np.testing.assert_allclose(rates.shares, expected, rtol=1e-6)


def test_a_single_rate_state_loads_into_every_rate_and_a_mismatch_is_refused():
    one = LinearRates([LinearModel(2, 4, 2, 0.1, NumpyLinear())], 0.99)
    one.flat[:] = np.arange(one.flat.size, dtype=np.float32)
    old = {"flat": one.flat.copy()}  # saved before the rates: no losses
    two = LinearRates([LinearModel(2, 4, 2, lr, NumpyLinear()) for lr in (0.1, 0.01)], 0.99)
    two.load_state_dict(old)
    np.testing.assert_array_equal(two.models[1].flat, one.flat)
    assert two.shares.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="rates"):
        two.load_state_dict({"flat": two.flat, "loss": np.zeros(3)})
    with pytest.raises(ValueError, match="weights"):
        two.load_state_dict({"flat": np.zeros(5), "loss": np.zeros(2)})


def test_the_slow_rate_setting_makes_two_rates_and_zero_one():
    assert [m.lr for m in chain(linear={"slow_lr": 0.002}).linear.model.models] == [0.01, 0.002]
    assert [m.lr for m in chain(linear={"slow_lr": 0}).linear.model.models] == [0.01]


def test_a_mixture_pickled_before_the_rates_keeps_its_one_model():
    mixture = chain().linear
    model = mixture.model.models[0]
    model.flat[:] = 1.0
    state = dict(mixture.__dict__, model=model)
    older = LinearMixture.__new__(LinearMixture)
    older.__setstate__(state)
    assert [m.lr for m in older.model.models] == [0.01] and older.model.flat.all()


def test_the_share_follows_whichever_model_is_more_accurate():
    # a network that barely learns (tiny steps): the linear model wins a linear concept
    slow = {"lr": 1e-6, "fast_start": 0}
    linear = chain(learner=slow, memory={"enabled": False}, experts={"enabled": False})
    accuracy = run(linear, "linear", 150)
    assert linear.linear.share > 0.99
    alone = chain(learner=slow, memory={"enabled": False}, linear={"enabled": False})
    assert accuracy > run(alone, "linear", 150) + 0.2
    # on xor the network wins and the linear model, at chance, is left out
    xor = chain(memory={"enabled": False})
    run(xor, "xor", 150)
    assert xor.linear.share < 0.01


def test_regression_and_the_setting_off_have_no_linear_model():
    assert chain("regression").linear is None
    assert chain(linear={"enabled": False}).linear is None
    assert chain("multiclass").linear is not None


def test_the_export_serves_the_mix_the_worker_scores():
    preq = chain("multiclass")
    run(preq, "linear", 30)
    preq.linear.hedge.set_advantage(-0.4)  # a share between the two (η = 1: σ(-0.4))
    assert 0.3 < preq.linear.share < 0.5
    preq.linear.model.set_loss(np.array([2.0, 1.0]))  # the slow rate's share σ(1)
    artifact = export_prequential(preq)
    assert artifact.meta["linear_share"] == pytest.approx(preq.linear.share)
    assert artifact.meta["linear_rate_shares"] == pytest.approx([1 - 0.7311, 0.7311], abs=1e-4)
    fast, slow = preq.linear.model.models
    assert np.abs(fast.flat - slow.flat).max() > 1e-3  # the rates differ: both are served
    cols, _ = columns(np.random.default_rng(9), 64, "linear")
    feats = preq.encoder.encode_columns(cols)
    z = preq.encoder.standardize(feats.num).astype(np.float32)
    served = ort.InferenceSession(artifact.onnx).run(["prediction"], {"num": z, "cat": feats.cat})
    base, _ = preq.base_prediction(z, feats.cat)
    np.testing.assert_allclose(served[0], base, rtol=1e-4, atol=1e-5)
    network = preq.learner.predict(z, feats.cat)
    assert np.abs(base - network).max() > 1e-3  # the linear model's part is in it


def test_a_restored_chain_continues_the_mix_bit_for_bit_and_old_states_load():
    preq = chain()
    run(preq, "linear", 20)
    state = preq.state_dict()
    restored = chain()
    restored.load_state_dict(state)
    assert restored.linear.share == preq.linear.share
    rng = np.random.default_rng(4)
    cols, ys = columns(rng, 32, "linear")
    np.testing.assert_array_equal(
        preq.process_columns(cols, ys).prediction, restored.process_columns(cols, ys).prediction
    )
    older = {k: v for k, v in state.items() if k != "linear"}  # saved before the linear model
    fresh = chain()
    fresh.load_state_dict(older)
    assert not fresh.linear.model.flat.any() and fresh.linear.share == 0.5
    assert fresh.linear.model.shares.tolist() == [0.5, 0.5]


def test_a_chain_pickled_before_the_linear_model_scores_without_one():
    preq = chain(memory={"enabled": False})
    run(preq, "linear", 3)
    state = dict(preq.__dict__)
    del state["linear"]
    older = Prequential.__new__(Prequential)
    older.__setstate__(state)
    assert older.linear is None
    cols, ys = columns(np.random.default_rng(2), 8, "linear")
    assert older.process_columns(cols, ys).prediction.shape == (8, 16)
