"""The compiled linear model (kernels/cpu/linear.c) against the numpy form."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from streamlearn.core.linear import LinearModel
from streamlearn.kernels.compiled import CompiledLinear
from streamlearn.kernels.cpu import binding
from streamlearn.kernels.reference.linear import NumpyLinear

SLOTS, BUCKETS, WIDTH = 6, 32, 5


def setup(seed: int, rows: int, used: tuple[int, int]):
    """A model with random weights, and rows that use a prefix of the slots (views with rows
    far apart)."""
    rng = np.random.default_rng(seed)
    model = LinearModel(SLOTS, BUCKETS, WIDTH, 0.05, NumpyLinear())
    model.weights[:] = rng.normal(0, 0.5, model.weights.shape)
    model.buckets[0] = 0.0
    num = rng.normal(0, 2, (rows, SLOTS)).astype(np.float32)
    num[rng.random((rows, SLOTS)) < 0.2] = 0.0
    cat = rng.integers(0, BUCKETS, (rows, 3))
    network = rng.dirichlet(np.ones(WIDTH), rows).astype(np.float32)
    return model, (num[:, : used[0]], cat[:, : used[1]]), network


@pytest.mark.parametrize("active", [0, 1, 2, 5])
@pytest.mark.parametrize("used", [(6, 3), (2, 1), (0, 0)])
def test_the_compiled_form_computes_what_numpy_does(active, used):
    compiled = CompiledLinear(binding.load())
    model, rows, _ = setup(active * 7 + used[0], 40, used)
    linear = NumpyLinear().predict(model, rows, active)
    np.testing.assert_allclose(compiled.predict(model, rows, active), linear, rtol=1e-5, atol=1e-6)
    if not active:
        return
    target = np.random.default_rng(active).integers(0, active, 40)
    stepped = pickle.loads(pickle.dumps(model))
    before = model.weights.copy()
    NumpyLinear().learn(model, rows, active, target, linear)
    compiled.learn(stepped, rows, active, target, linear)
    assert np.array_equal(model.weights, before) == (active == 1)  # one class: nothing to learn
    np.testing.assert_allclose(stepped.weights, model.weights, rtol=1e-5, atol=1e-6)
    assert not stepped.buckets[0].any()  # bucket 0 untouched


def test_bad_buckets_and_classes_are_refused_with_nothing_written():
    compiled = CompiledLinear(binding.load())
    model, (num, cat), _ = setup(1, 8, (6, 3))
    before = model.weights.copy()
    bad = cat.copy()
    bad[3, 1] = BUCKETS
    with pytest.raises(IndexError, match="bucket"):
        compiled.predict(model, (num, bad), 2)
    linear = compiled.predict(model, (num, cat), 2)
    with pytest.raises(IndexError, match="class"):
        compiled.learn(model, (num, cat), 2, np.full(8, 2), linear)
    np.testing.assert_array_equal(model.weights, before)


def test_a_pickled_compiled_kernel_loads_the_library_again():
    kernel = pickle.loads(pickle.dumps(CompiledLinear(binding.load())))
    assert kernel.name == "compiled"
