"""Uniform integer draws for the reservoir (core/replay.py), from its numpy generator.

Each function gives the values numpy's ``Generator.integers`` gives for the same call, and
leaves the generator in the same state: draws.c makes them in one call where the compiled
kernels load (numpy's own call costs a few microseconds of argument handling for a few dozen
draws, twice per learner step); numpy makes them elsewhere. The generator must be the
caller's own, used from one thread at a time (the compiled draws do not take numpy's lock).
"""

from __future__ import annotations

import numpy as np

from streamlearn.kernels.cpu import binding

__all__ = ["uniform_below", "uniform_through"]


def uniform_below(rng: np.random.Generator, high: int, count: int) -> np.ndarray:
    """``rng.integers(0, high, size=count)``: int64 draws uniform on [0, high)."""
    if high < 1:
        raise ValueError(f"no integers below {high} to draw from")
    return _draws(rng, high - 1, False, count)


def uniform_through(rng: np.random.Generator, first: int, count: int) -> np.ndarray:
    """``rng.integers(0, np.arange(first, first + count) + 1)``: draw i uniform on
    [0, first + i] (Algorithm R's slot for item first + i)."""
    if first < 0:
        raise ValueError(f"draws through {first}: a count of items is at least 0")
    return _draws(rng, first, True, count)


def _draws(rng: np.random.Generator, last: int, growing: bool, count: int) -> np.ndarray:
    library = binding.loaded()
    if library is None:
        high = np.arange(last, last + count) + 1 if growing else last + 1
        return rng.integers(0, high, size=None if growing else count)
    out = np.empty(count, dtype=np.int64)
    library.uniform_draws(rng.bit_generator.capsule, last, int(growing), out)
    return out
