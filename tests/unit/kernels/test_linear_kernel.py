"""The compiled linear model (kernels/cpu/linear.c) against the numpy form."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from streamlearn.core.linear import LinearModel, LinearRates
from streamlearn.kernels.compiled import CompiledLinear
from streamlearn.kernels.cpu import binding
from streamlearn.kernels.reference.linear import NumpyLinear

SLOTS, BUCKETS, WIDTH = 6, 32, 5


def setup(seed: int, rows: int, used: tuple[int, int], lrs: tuple[float, ...] = (0.05,)):
    """Rates with random weights, losses and shares, and rows that use a prefix of the slots
    (views with rows far apart)."""
    rng = np.random.default_rng(seed)
    rates = LinearRates([LinearModel(SLOTS, BUCKETS, WIDTH, lr, NumpyLinear()) for lr in lrs], 0.99)
    rates.flat[:] = rng.normal(0, 0.5, rates.flat.shape)
    for model in rates.models:
        model.buckets[0] = 0.0
    rates.set_loss(rng.uniform(0, 3, len(lrs)))
    num = rng.normal(0, 2, (rows, SLOTS)).astype(np.float32)
    num[rng.random((rows, SLOTS)) < 0.2] = 0.0
    cat = rng.integers(0, BUCKETS, (rows, 3))
    return rates, (num[:, : used[0]], cat[:, : used[1]])


@pytest.mark.parametrize("lrs", [(0.05,), (0.05, 0.005), (0.1, 0.02, 0.001)])
@pytest.mark.parametrize("active", [0, 1, 2, 5])
@pytest.mark.parametrize("used", [(6, 3), (2, 1), (0, 0)])
def test_the_compiled_form_computes_what_numpy_does(active, used, lrs):
    compiled = CompiledLinear(binding.load())
    rates, rows = setup(active * 7 + used[0], 40, used, lrs)
    each, mixed = NumpyLinear().predict(rates, rows, active)
    got_each, got_mixed = compiled.predict(rates, rows, active)
    np.testing.assert_allclose(got_each, each, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_mixed, mixed, rtol=1e-5, atol=1e-6)
    if not active:
        assert not got_mixed.any()  # no class yet: all zero
        return
    target = np.random.default_rng(active).integers(0, active, 40)
    stepped = pickle.loads(pickle.dumps(rates))
    before, loss_before = rates.flat.copy(), rates.loss.copy()
    loss = NumpyLinear().learn(rates, rows, active, target, each)
    got_loss = compiled.learn(stepped, rows, active, target, each)
    np.testing.assert_array_equal(rates.loss, loss_before)  # the caller takes the losses
    np.testing.assert_allclose(got_loss, loss, rtol=1e-9)
    assert (loss >= 0.99**40 * loss_before).all()  # every row adds its log loss (≥ 0)
    assert np.array_equal(rates.flat, before) == (active == 1)  # one class: nothing to learn
    np.testing.assert_allclose(stepped.flat, rates.flat, rtol=1e-5, atol=1e-6)
    assert not any(model.buckets[0].any() for model in stepped.models)  # bucket 0 untouched


def test_each_rate_steps_at_its_own_rate():
    compiled = CompiledLinear(binding.load())
    rates, rows = setup(3, 8, (6, 3), (0.1, 0.01))
    rates.flat[:] = 0.0  # both rates predict alike: their steps differ by their rates alone
    each, _ = compiled.predict(rates, rows, 3)
    compiled.learn(rates, rows, 3, np.zeros(8, np.int64), each)
    fast, slow = rates.models
    np.testing.assert_allclose(fast.flat, 10 * slow.flat, rtol=1e-5, atol=1e-7)
    assert fast.flat.any()


def test_bad_buckets_and_classes_are_refused_with_nothing_written():
    compiled = CompiledLinear(binding.load())
    rates, (num, cat) = setup(1, 8, (6, 3), (0.05, 0.01))
    before = rates.flat.copy()
    bad = cat.copy()
    bad[3, 1] = BUCKETS
    with pytest.raises(IndexError, match="bucket"):
        compiled.predict(rates, (num, bad), 2)
    each, _ = compiled.predict(rates, (num, cat), 2)
    with pytest.raises(IndexError, match="class"):
        compiled.learn(rates, (num, cat), 2, np.full(8, 2), each)
    with pytest.raises(IndexError, match="bucket"):
        compiled.learn(rates, (num, bad), 2, np.zeros(8), each)
    np.testing.assert_array_equal(rates.flat, before)


def test_arrays_of_the_wrong_shape_are_refused():
    library = binding.load()
    rates, (num, cat) = setup(2, 4, (6, 3), (0.05, 0.01))
    each = np.empty((2, 4, WIDTH), np.float32)
    mixed = np.empty((4, WIDTH), np.float32)
    with pytest.raises(ValueError, match="shares"):
        library.linear_predict(rates.by_rate, SLOTS, num, cat, np.ones(3), 2, each, mixed)
    with pytest.raises(ValueError, match="each"):
        library.linear_predict(rates.by_rate, SLOTS, num, cat, rates.shares, 2, each[:1], mixed)
    with pytest.raises(ValueError, match="loss"):
        library.linear_learn(
            rates.by_rate, SLOTS, num, cat, rates.lrs, 2, np.zeros(4, np.int64), each,
            np.zeros(3), 0.9,
        )  # fmt: skip


def test_a_pickled_compiled_kernel_loads_the_library_again():
    kernel = pickle.loads(pickle.dumps(CompiledLinear(binding.load())))
    assert kernel.name == "compiled"
    rates, rows = setup(4, 6, (6, 3))
    _, mixed = kernel.predict(rates, rows, 3)
    np.testing.assert_allclose(mixed.sum(1), 1.0, rtol=1e-6)
