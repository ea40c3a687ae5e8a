"""The host-side kernels of the compiled library: feature statistics and the drift detector.

Thin classes over the C functions (kernels/cpu/features.c, drift.c) with the same contract as
the numpy reference forms in kernels/reference/, against which they are tested.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from streamlearn.kernels.cpu.binding import KernelsUnavailable, load
from streamlearn.kernels.drift_state import DriftParams, DriftState
from streamlearn.kernels.reference.drift import NumpyDrift
from streamlearn.kernels.reference.statistics import NumpyStatistics

__all__ = ["CompiledDrift", "CompiledStatistics"]


class CompiledStatistics:
    """:class:`~streamlearn.kernels.backend.FeatureStatistics` in features.c: bit for bit the
    numpy form for a fully present batch (batches with missing values: to rounding). Rows of
    another width than the statistics take the numpy form."""

    name = "compiled"

    def __init__(self, library: ModuleType) -> None:
        self._library = library
        self._other_widths = NumpyStatistics()

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _reloaded_statistics, ()

    def standardize(
        self, num: np.ndarray, used: int, count: np.ndarray, mean: np.ndarray, m2: np.ndarray
    ) -> np.ndarray:
        if num.shape[1:] != count.shape:
            return self._other_widths.standardize(num, used, count, mean, m2)
        raw = np.ascontiguousarray(num, dtype=np.float64)
        z = np.empty(raw.shape, dtype=np.float32)
        self._library.features_standardize(raw, used, count, mean, m2, z)
        return z

    def observe(
        self, num: np.ndarray, used: int, count: np.ndarray, mean: np.ndarray, m2: np.ndarray
    ) -> int:
        if num.shape[1:] != count.shape:
            return self._other_widths.observe(num, used, count, mean, m2)
        if not len(num) or not used:
            return 0
        raw = np.ascontiguousarray(num, dtype=np.float64)
        return int(self._library.features_observe(raw, used, count, mean, m2))


class CompiledDrift:
    """:class:`~streamlearn.kernels.backend.DriftKernel` in drift.c: one per-event loop; the
    smoothed values equal the numpy form's bit for bit, the window's mean and spread to
    rounding."""

    name = "compiled"

    def __init__(self, library: ModuleType) -> None:
        self._library = library

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _reloaded_drift, ()

    def update(self, losses: np.ndarray, state: DriftState, params: DriftParams) -> list[int]:
        x = np.ascontiguousarray(losses)
        fired = np.empty(len(x), dtype=np.int32)
        count = self._library.drift_update(
            x,
            state.ring,
            params.window,
            params.alpha,
            params.k,
            params.min_samples,
            params.min_rise,
            params.cooldown,
            state.counters,
            state.value,
            fired,
        )
        return fired[:count].tolist()


# unpickling: the library is loaded again (it is not picklable); the numpy form where it cannot
# be had in the unpickling process
def _reloaded_statistics() -> CompiledStatistics | NumpyStatistics:
    try:
        return CompiledStatistics(load())
    except KernelsUnavailable:
        return NumpyStatistics()


def _reloaded_drift() -> CompiledDrift | NumpyDrift:
    try:
        return CompiledDrift(load())
    except KernelsUnavailable:
        return NumpyDrift()
