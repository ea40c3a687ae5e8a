"""draws.c: the reservoir's uniform integers, against numpy's Generator.integers for the same
calls (the same values, the generator left in the same state), compiled and where the
compiled kernels are not loaded."""

import numpy as np
import pytest

from streamlearn.kernels import draws
from streamlearn.kernels.cpu import binding
from streamlearn.kernels.draws import uniform_below, uniform_through

kernels = binding.loaded()
compiled = pytest.mark.skipif(kernels is None, reason="the compiled kernels are not built")

# around the 32-bit draws' limits (2^32 - 1 takes a whole 32-bit draw) and into 64-bit ones
HIGHS = (1, 2, 3, 7, 2048, 2**31 + 1, 2**32 - 1, 2**32, 2**32 + 1, 2**40 + 3, 2**62, 2**63 - 1)
FIRSTS = (0, 1, 5, 2047, 2**32 - 3, 2**40)


@pytest.fixture(params=["compiled", "numpy"])
def path(request, monkeypatch):
    """Each test on both paths: the compiled draws (skipped where not built) and numpy's."""
    if request.param == "compiled":
        if kernels is None:
            pytest.skip("the compiled kernels are not built")
    else:
        monkeypatch.setattr(draws.binding, "loaded", lambda: None)
    return request.param


def _same_state(a: np.random.Generator, b: np.random.Generator) -> bool:
    return a.bit_generator.state == b.bit_generator.state


@pytest.mark.parametrize("high", HIGHS)
@pytest.mark.parametrize("seed", [0, 7])
def test_draws_below_are_numpys(path, high, seed):
    ours, numpys = np.random.default_rng(seed), np.random.default_rng(seed)
    got = uniform_below(ours, high, 65)
    expected = numpys.integers(0, high, size=65)
    assert got.dtype == np.int64 and np.array_equal(got, expected)
    assert _same_state(ours, numpys)


@pytest.mark.parametrize("first", FIRSTS)
def test_draws_through_growing_bounds_are_numpys(path, first):
    ours, numpys = np.random.default_rng(11), np.random.default_rng(11)
    got = uniform_through(ours, first, 40)
    expected = numpys.integers(0, np.arange(first, first + 40) + 1)
    assert got.dtype == np.int64 and np.array_equal(got, expected)
    assert _same_state(ours, numpys)


def test_interleaved_with_other_draws_the_stream_is_numpys(path):
    """numpy keeps half of a 64-bit draw for the next 32-bit one: draws of either width,
    ours and numpy's own in any order, take the same bits."""
    ours, numpys = np.random.default_rng(5), np.random.default_rng(5)
    for count in (1, 2, 3, 33):
        a = (
            uniform_below(ours, 100, count),
            ours.random(1),
            uniform_through(ours, 2**32 + count, count),
            uniform_through(ours, count, 1),
        )
        b = (
            numpys.integers(0, 100, size=count),
            numpys.random(1),
            numpys.integers(0, np.arange(2**32 + count, 2**32 + 2 * count) + 1),
            numpys.integers(0, np.arange(count, count + 1) + 1),
        )
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)
    assert _same_state(ours, numpys)


def test_no_draws_take_no_bits(path):
    rng, untouched = np.random.default_rng(2), np.random.default_rng(2)
    assert uniform_below(rng, 10, 0).shape == (0,)
    assert uniform_through(rng, 10, 0).shape == (0,)
    assert np.array_equal(uniform_below(rng, 1, 4), [0, 0, 0, 0])  # [0, 0]: nothing to draw
    assert _same_state(rng, untouched)


def test_an_empty_range_is_refused(path):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no integers below 0"):
        uniform_below(rng, 0, 3)
    with pytest.raises(ValueError, match="at least 0"):
        uniform_through(rng, -1, 3)


@compiled
def test_the_binding_checks_its_arguments():
    rng = np.random.default_rng(0)
    capsule = rng.bit_generator.capsule
    with pytest.raises(ValueError):  # last + i would pass 2^63 - 1
        kernels.uniform_draws(capsule, 2**63 - 2, 1, np.empty(4, dtype=np.int64))
    with pytest.raises(TypeError):
        kernels.uniform_draws(capsule, 5, 0, np.empty(4, dtype=np.int32))
    with pytest.raises(ValueError):  # not a BitGenerator's capsule
        kernels.uniform_draws(object(), 5, 0, np.empty(4, dtype=np.int64))
