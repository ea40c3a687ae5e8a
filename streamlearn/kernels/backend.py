"""The compute backend: chosen once, at the composition root, and passed to every algorithm.

Two backends: ``torch`` (the reference: numpy for the host-side statistics and the drift
detector, torch ops for the training step, the reservoir and the error memory, on a CPU or a
CUDA device) and ``compiled`` (the C kernels built into the package at install time: the
host-side kernels always; the training step, the reservoir's inserts and the error memory's
top-k where the model runs on the CPU). ``learner.kernel`` chooses: ``auto`` takes the compiled
one where the extension loads, ``compiled`` insists on it, ``torch`` forces the reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from streamlearn.errors import ConfigError
from streamlearn.kernels.cpu import binding
from streamlearn.kernels.drift_state import DriftParams, DriftState
from streamlearn.kernels.reference.statistics import NumpyStatistics

if TYPE_CHECKING:
    import torch

    from streamlearn.core.memory.error_memory import ErrorMemory
    from streamlearn.kernels.torch_memory import Labelled, Mirror
    from streamlearn.kernels.torch_reservoir import Reservoir, Rows

__all__ = [
    "Backend",
    "DriftKernel",
    "FeatureStatistics",
    "MemoryKernel",
    "ReservoirInsert",
    "reference_backend",
    "select_backend",
]

log = logging.getLogger(__name__)


class FeatureStatistics(Protocol):
    """The feature encoder's compute over its running statistics (float64 arrays [slots])."""

    name: str

    def standardize(
        self, num: np.ndarray, used: int, count: np.ndarray, mean: np.ndarray, m2: np.ndarray
    ) -> np.ndarray:
        """float32 rows [N, width] of ``num`` [N, width] (raw values, NaN = missing)
        standardised by the statistics, clipped; missing values and slots from ``used`` on
        are 0."""
        ...

    def observe(
        self, num: np.ndarray, used: int, count: np.ndarray, mean: np.ndarray, m2: np.ndarray
    ) -> int:
        """Fold the present values of the first ``used`` columns into the statistics in
        place; the number of column updates skipped because they overflowed."""
        ...


class DriftKernel(Protocol):
    """The loss-deviation rule over a batch of losses, updating ``state`` in place."""

    name: str

    def update(self, losses: np.ndarray, state: DriftState, params: DriftParams) -> list[int]:
        """Offsets into ``losses`` (float64 [n]) where drift fired; non-finite losses are
        skipped."""
        ...


class ReservoirInsert(Protocol):
    """The replay reservoir's inserts (Algorithm R, kernels/torch_reservoir.py) into its
    tensors, in place."""

    name: str

    def insert(self, reservoir: Reservoir, seen: int, rows: Rows, drawn: np.ndarray | None) -> None:
        """Write ``rows`` into ``reservoir`` (capacity ≥ 1), which has seen ``seen`` items:
        the first rows into its free slots, each of the others into the slot it drew
        (``drawn``, int64, one per such row; None where every row finds a free slot) where
        that is below capacity, later rows over earlier ones."""
        ...


class MemoryKernel(Protocol):
    """The error memory's per-batch compute (kernels/torch_memory.py): it reads the memory's
    configuration and store and writes the store (and, for store="errors", its running
    error); the memory counts the writes."""

    name: str

    def compensate(
        self, memory: ErrorMemory, hidden: np.ndarray, base: np.ndarray
    ) -> tuple[np.ndarray, torch.Tensor]:
        """The compensated predictions of base predictions ``base`` for hidden rows
        ``hidden`` (``ErrorMemory.compensate``) and the rows' unit keys."""
        ...

    def store(
        self, memory: ErrorMemory, rows: Labelled, keys: torch.Tensor | None, mirror: Mirror | None
    ) -> np.ndarray:
        """Store the labelled ``rows`` (hidden, y, base) the memory's ``store`` rule keeps
        (their unit ``keys`` where known), their inputs into ``mirror``'s rings; which rows
        were stored [B]."""
        ...


def _numpy_drift() -> DriftKernel:
    from streamlearn.kernels.reference.drift import NumpyDrift  # scipy: the worker's, not serve's

    return NumpyDrift()


def _torch_reservoir() -> ReservoirInsert:
    from streamlearn.kernels.torch_reservoir import TorchReservoir  # torch: not serve's

    return TorchReservoir()


def _torch_memory() -> MemoryKernel:
    from streamlearn.kernels.torch_memory import TorchMemory  # torch: not serve's

    return TorchMemory()


@dataclass(frozen=True)
class Backend:
    """What every algorithm of one process computes with.

    ``library``: the compiled kernels for the training step (which takes them where the model
    runs on the CPU), or None for its torch form.
    ``reservoir``: the compiled inserts where ``library`` is set, else the torch form (on the
    model's device, CPU or CUDA).
    ``memory``: the error memory's compiled top-k where ``library`` is set, else the torch form.
    """

    name: Literal["compiled", "torch"]
    statistics: FeatureStatistics = field(default_factory=NumpyStatistics)
    drift: DriftKernel = field(default_factory=_numpy_drift)
    library: ModuleType | None = None
    reservoir: ReservoirInsert = field(default_factory=_torch_reservoir)
    memory: MemoryKernel = field(default_factory=_torch_memory)

    def __reduce__(self) -> tuple[object, tuple[bool, bool]]:
        """Pickled as what it is made of: loaded again where unpickled (a loaded library is
        not picklable), the torch backend where the compiled kernels cannot be had there."""
        return _restore, (self.name == "compiled", self.library is not None)


def _restore(compiled: bool, step: bool) -> Backend:
    from streamlearn.kernels.compiled import (
        CompiledDrift,
        CompiledMemory,
        CompiledReservoir,
        CompiledStatistics,
    )

    if not compiled:
        return reference_backend()
    try:
        library = binding.load()
    except binding.KernelsUnavailable:
        return reference_backend()
    return Backend(
        "compiled",
        CompiledStatistics(library),
        CompiledDrift(library),
        library if step else None,
        reservoir=CompiledReservoir(library) if step else _torch_reservoir(),
        memory=CompiledMemory(library) if step else _torch_memory(),
    )


def reference_backend() -> Backend:
    """The torch backend: numpy and torch ops throughout, no compiled code."""
    return Backend("torch")


def select_backend(kernel: str, device_type: str, hidden_layers: int) -> Backend:
    """The backend ``learner.kernel`` asks for, on a model on ``device_type`` with
    ``hidden_layers`` hidden layers; logs which one runs and why."""
    from streamlearn.kernels.compiled import (
        CompiledDrift,
        CompiledMemory,
        CompiledReservoir,
        CompiledStatistics,
    )

    if kernel == "torch":
        log.info("compute backend: torch (learner.kernel: torch)")
        return reference_backend()
    too_deep = hidden_layers + 1 > binding.MAX_LAYERS
    if kernel == "compiled" and device_type != "cpu":
        raise ConfigError(f"learner.kernel: 'compiled' runs on the CPU, not on {device_type}")
    if kernel == "compiled" and too_deep:
        raise ConfigError(
            f"learner.kernel: 'compiled' takes at most {binding.MAX_LAYERS - 1} hidden layers"
        )
    try:
        library = binding.load()
    except binding.KernelsUnavailable as error:
        if kernel == "compiled":
            raise ConfigError(f"learner.kernel: 'compiled' is unavailable here: {error}") from error
        log.warning("compute backend: torch (the compiled kernels are unavailable: %s)", error)
        return reference_backend()
    step = device_type == "cpu" and not too_deep
    log.info(
        "compute backend: compiled (%s)",
        "every stage" if step else f"host-side stages; the model's stages run on {device_type}",
    )
    return Backend(
        "compiled",
        CompiledStatistics(library),
        CompiledDrift(library),
        library if step else None,
        reservoir=CompiledReservoir(library) if step else _torch_reservoir(),
        memory=CompiledMemory(library) if step else _torch_memory(),
    )
