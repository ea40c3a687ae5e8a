"""mix.c: Hedge's evidence count and the gated mix, against the numpy expressions they replace
(the same count, the same bits) and through the Python functions that choose between them."""

import numpy as np
import pytest

from streamlearn.core import hedge
from streamlearn.core.hedge import Hedge, hit_gain
from streamlearn.core.memory import compensation
from streamlearn.core.memory.compensation import gated
from streamlearn.kernels.cpu import binding

kernels = binding.loaded()
pytestmark = pytest.mark.skipif(kernels is None, reason="the compiled kernels are not built")


def _predictions(rows: int, width: int, seed: int) -> tuple[np.ndarray, ...]:
    """Targets and two predictions with ties (a uniform row), NaN rows and exact zeros."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, width, rows)
    first = rng.dirichlet(np.ones(width), rows).astype(np.float32)
    second = rng.dirichlet(np.ones(width), rows).astype(np.float32)
    if rows > 4:
        first[1] = 1.0 / width  # every slot ties: the first one is the arg max
        second[2, -1] = np.nan  # a NaN is numpy's arg max
        first[3, :] = np.nan
        second[4] = 0.0
    return target, first, second


@pytest.mark.parametrize(("rows", "width", "seed"), [(0, 2, 1), (1, 1, 2), (7, 2, 3), (64, 5, 4)])
def test_hits_count_as_numpy_argmax_does(rows, width, seed):
    target, first, second = _predictions(rows, width, seed)
    expected = int(np.count_nonzero(second.argmax(1) == target)) - int(
        np.count_nonzero(first.argmax(1) == target)
    )
    assert kernels.hedge_hits(target, first, second) == expected
    assert hit_gain(target, first, second) == expected


@pytest.mark.parametrize("weight", [1e-7, 0.3, 0.5, 0.999999])
def test_the_gated_mix_is_numpys_bit_for_bit(weight):
    _, base, compensated = _predictions(33, 3, 5)
    compensated[6, 0] = np.inf
    w = np.float32(weight)
    expected = ((np.float32(1.0) - w) * base + w * compensated).astype(np.float32)
    got = gated(base, compensated, weight)
    assert got.dtype == np.float32 and got is not base and got is not compensated
    assert np.array_equal(got, expected, equal_nan=True)


def test_other_arrays_take_numpys_path_with_the_same_results(monkeypatch):
    """Float64, strided or mismatched arrays go to numpy; without the kernels everything
    does: the Hedge learns the same evidence either way."""
    target, first, second = _predictions(40, 4, 6)
    strided = np.asfortranarray(second)
    assert not binding.float32_rows(first, strided)
    assert not binding.float32_rows(first, second.astype(np.float64))
    assert hit_gain(target, first, strided) == hit_gain(target, first, second)
    mixed = gated(first.astype(np.float64), second, 0.25)
    assert mixed.dtype == np.float32

    def learned(target, first, second):
        h = Hedge(0.99, 1.0, (-8.0, 8.0), 0.0)
        for _ in range(3):
            h.update(target, first, second)
        return h.advantage, h.weight, gated(first, second, h.weight)

    with_kernels = learned(target, first, second)
    monkeypatch.setattr(hedge, "loaded", lambda: None)
    monkeypatch.setattr(compensation, "loaded", lambda: None)
    without = learned(target, first, second)
    assert with_kernels[:2] == without[:2] and with_kernels[0] != 0.0
    assert np.array_equal(with_kernels[2], without[2], equal_nan=True)


def test_the_bindings_refuse_what_they_cannot_take():
    target, first, second = _predictions(8, 3, 7)
    out = np.empty_like(first)
    with pytest.raises(TypeError):
        kernels.hedge_hits(target, first.astype(np.float64), second)
    with pytest.raises(ValueError):
        kernels.hedge_hits(target[:5], first, second)
    with pytest.raises(ValueError):
        kernels.hedge_hits(target, first, second[:, :2])
    with pytest.raises(ValueError):
        kernels.hedge_hits(target[:0], first[:0, :0], second[:0, :0])  # no class slot
    with pytest.raises(ValueError):
        kernels.mix_gated(first, second[:4], 0.5, out)
    with pytest.raises(ValueError):
        kernels.mix_gated(first, second, 0.5, out[:4])
    with pytest.raises(TypeError):
        kernels.mix_gated(first, second, "half", out)
