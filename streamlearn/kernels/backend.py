"""The compute backend: chosen once, at the composition root, and passed to every algorithm.

Two backends: ``torch`` (the reference: numpy for the host-side statistics and the drift
detector, torch ops for the training step, the reservoir and the error memory, on a CPU or a
CUDA device) and ``compiled`` (the C kernels built into the package at install time: the
host-side kernels always; the training step, the reservoir's inserts and the error memory's
top-k where the model runs on the CPU, within the compiled step's layer limit).
``learner.kernel`` chooses: ``auto`` takes the compiled one where the extension loads,
``compiled`` insists on it, ``torch`` forces the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from streamlearn.errors import ConfigError
from streamlearn.kernels.cpu import binding
from streamlearn.kernels.drift_state import DriftParams, DriftState
from streamlearn.kernels.reference.linear import NumpyLinear
from streamlearn.kernels.reference.statistics import NumpyStatistics

if TYPE_CHECKING:
    import torch

    from streamlearn.core.linear import LinearRates
    from streamlearn.core.memory.error_memory import ErrorMemory
    from streamlearn.core.training_step import FusedTrainer
    from streamlearn.kernels.cpu.binding import Replay, Target
    from streamlearn.kernels.torch_memory import Labelled, Mirror
    from streamlearn.kernels.torch_reservoir import Reservoir, Rows

__all__ = [
    "Backend",
    "DriftKernel",
    "FeatureStatistics",
    "LinearKernel",
    "LinearRows",
    "MemoryKernel",
    "ReservoirInsert",
    "Scored",
    "StepKernel",
    "reference_backend",
    "select_backend",
]

log = logging.getLogger(__name__)

LinearRows = tuple[np.ndarray, np.ndarray]  # a batch's numeric values and bucket ids


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


class LinearKernel(Protocol):
    """A classifier's linear model's compute (core/linear.py) at all its SGD rates in one call
    each: ``rates.by_rate`` float32 [rates, numeric_slots + buckets + 1, W] (per rate: numeric
    rows, bucket rows, bias), ``rates.shares`` float64 [rates], ``rates.lrs`` float32 [rates].
    ``rows``: numeric values [B, a] (the first a numeric slots) and bucket ids [B, c], each
    row's elements contiguous."""

    name: str

    def predict(
        self, rates: LinearRates, rows: LinearRows, active: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(each rate's probabilities, float32 [rates, B, W]: the softmax over the first
        ``active`` class slots (zero beyond; all zero with none) of its logits; their mix
        Σ_k share_k · p_k, float32 [B, W])."""
        ...

    def learn(
        self,
        rates: LinearRates,
        rows: LinearRows,
        active: int,
        target: np.ndarray,
        each: np.ndarray,
    ) -> np.ndarray:
        """Every rate's discounted log loss after the rows, float64 [rates]:
        discount^B · L_k − Σ_i log max(p_k(y_i), 1e-7) from ``rates.loss`` (not changed), and
        one SGD step of each rate in place: the log loss's gradient at its predictions
        ``each[k]`` [B, W] (made before it) for class slots ``target`` [B] (int64, below
        ``active`` ≥ 1), summed over the rows, times its ``lr``; bucket 0 stays zero."""
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


# the arguments of a forward pass into buffers (StepKernel.forward_into): the rows (numeric,
# bucket ids), the outputs (predictions [N, ≥ k], unit keys [N, H]), and (loc, scale) of the
# regression values shown
Inputs = tuple["torch.Tensor", "torch.Tensor"]
Into = tuple["torch.Tensor", "torch.Tensor"]
Shown = tuple[float, float]


@dataclass(slots=True)  # not frozen: a frozen one costs more to make, once per batch
class Scored:
    """What :meth:`StepKernel.run` and :meth:`StepKernel.begin` return: the batch scored by the
    weights before the step (host arrays), and the step's outcome."""

    prediction: np.ndarray  # [B, C] probabilities or [B] values
    loss: np.ndarray  # [B] per-row loss of those predictions
    hidden: np.ndarray  # [B, H] last hidden rows (the error memory's key)
    row_loss: Any  # the same losses in the rows' layout (an array or a device tensor)
    total: float  # the first update's loss summed over batch and replay rows (NaN: unknown)
    codes: list[int] | None  # each update's APPLIED or SKIPPED (kernels/cpu/binding.py)
    wait: Callable[[], list[int]] | None  # else: blocks until the updates ran, their codes


class StepKernel(Protocol):
    """The training step's compute (kernels/torch_step.py, or the compiled form in
    kernels/compiled.py) over a FusedTrainer's buffers: the backend holds it unbound,
    :meth:`bind` gives one learner's. The learner owns the schedule, the replay draws, the
    target statistics and the counters, and passes what one batch needs."""

    name: str
    overlaps: bool  # whether begin and forward_into can leave their work on a worker thread

    def bind(self, trainer: FusedTrainer) -> StepKernel:
        """This kernel on ``trainer``'s buffers (the methods below need a bound one)."""
        ...

    def check(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray, outputs: int) -> Any:
        """A batch's rows (numeric, bucket ids, targets) as :meth:`run` takes them; widens the
        trainer's active input slots to the batch. Raises, with nothing changed, where the
        form checks inputs."""
        ...

    def run(
        self, rows: Any, replay: Replay | None, outputs: int, lrs: list[float], target: Target
    ) -> Scored:
        """Score ``rows`` with the first ``outputs`` output slots, then run ``len(lrs)``
        updates over them followed by each update's equal share of the reservoir rows
        ``replay[3]`` picks; an update after ``a`` applied ones takes ``lrs[a]``; a non-finite
        loss or gradient skips it, nothing changed (``Scored.codes``). ``target``: (loc, scale)
        standardising regression targets, then (loc, scale) de-standardising the
        prediction."""
        ...

    def begin(
        self, rows: Any, replay: Replay | None, outputs: int, lrs: list[float], target: Target
    ) -> Scored | None:
        """:meth:`run`, its updates left running on the worker thread (``Scored.wait``):
        nothing may read or change the trainer, the reservoir or ``rows`` until then. None
        where no worker thread can take them (nothing learned: :meth:`run` them)."""
        ...

    def wait(self) -> list[int]:
        """Block until the work left on the worker thread ran; its codes."""
        ...

    def score(
        self, num: np.ndarray, cat: np.ndarray, outputs: int, shown: Shown
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score-only rows (host arrays), nothing learned: predictions [N, C] (zero beyond the
        first ``outputs`` slots) or values [N] de-standardised by ``shown``, and the last
        hidden rows [N, H]. Rows may set slots no batch has set: the active slots are widened
        to them first, so the result is the module's forward (to float32 rounding)."""
        ...

    def forward_into(
        self, inputs: Inputs, outputs: int, into: Into, shown: Shown, overlap: bool = False
    ) -> bool:
        """A forward pass, nothing learned: the predictions (``into[0]`` [N, ≥ outputs]: its
        rows may lie further apart than its width) and the unit-length last hidden rows
        (``into[1]`` [N, H]) of ``inputs``; ``shown``: (loc, scale) de-standardising
        regression values. With ``overlap`` it may run on the worker thread (True:
        :meth:`wait` for it)."""
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


def _torch_step() -> StepKernel:
    from streamlearn.kernels.torch_step import TorchStep  # torch: not serve's

    return TorchStep()


@dataclass(frozen=True)
class Backend:
    """What every algorithm of one process computes with.

    ``step``: the training step, compiled where the model runs on the CPU within the compiled
    step's layer limit, else the torch form (on the model's device, CPU or CUDA).
    ``reservoir``: the compiled inserts where ``step`` is compiled, else the torch form.
    ``memory``: the error memory's compiled top-k where ``step`` is compiled, else the torch
    form. ``linear``: a classifier's linear model, on the host (compiled wherever the library
    loads).
    """

    name: Literal["compiled", "torch"]
    statistics: FeatureStatistics = field(default_factory=NumpyStatistics)
    drift: DriftKernel = field(default_factory=_numpy_drift)
    step: StepKernel = field(default_factory=_torch_step)
    reservoir: ReservoirInsert = field(default_factory=_torch_reservoir)
    memory: MemoryKernel = field(default_factory=_torch_memory)
    linear: LinearKernel = field(default_factory=NumpyLinear)

    def __reduce__(self) -> tuple[object, tuple[bool, bool]]:
        """Pickled as what it is made of: loaded again where unpickled (a loaded library is
        not picklable), the torch backend where the compiled kernels cannot be had there."""
        return _restore, (self.name == "compiled", self.step.name == "compiled")


def _restore(compiled: bool, step: bool) -> Backend:
    if not compiled:
        return reference_backend()
    try:
        library = binding.load()
    except binding.KernelsUnavailable:
        return reference_backend()
    return _compiled_backend(library, step)


def _compiled_backend(library: ModuleType, step: bool) -> Backend:
    """The compiled backend over ``library``; the model's stages compiled where ``step``."""
    from streamlearn.kernels.compiled import (
        CompiledDrift,
        CompiledLinear,
        CompiledMemory,
        CompiledReservoir,
        CompiledStatistics,
        CompiledTraining,
    )

    return Backend(
        "compiled",
        CompiledStatistics(library),
        CompiledDrift(library),
        step=CompiledTraining(library) if step else _torch_step(),
        reservoir=CompiledReservoir(library) if step else _torch_reservoir(),
        memory=CompiledMemory(library) if step else _torch_memory(),
        linear=CompiledLinear(library),
    )


def reference_backend() -> Backend:
    """The torch backend: numpy and torch ops throughout, no compiled code."""
    return Backend("torch")


def select_backend(kernel: str, device_type: str, hidden_layers: int, large: bool) -> Backend:
    """The backend ``learner.kernel`` asks for, on a model on ``device_type`` with
    ``hidden_layers`` hidden layers, ``large`` or not (kernels/model_size.py: 'auto' runs a
    large model's stages as torch ops, faster there than the compiled step); logs which one
    runs and why."""
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
        # binding.load has warned with the reason; this line says what runs instead
        log.info("compute backend: torch (the compiled kernels are unavailable)")
        return reference_backend()
    if device_type != "cpu":
        why = f"the model's stages run on {device_type}"
    elif too_deep:
        why = "the model's stages run as torch ops, deeper than the compiled step takes"
    elif large and kernel == "auto":
        why = "the model's stages run as torch ops, faster than the compiled step on a large model"
    else:
        log.info("compute backend: compiled (every stage)")
        return _compiled_backend(library, step=True)
    log.info("compute backend: compiled (host-side stages; %s)", why)
    return _compiled_backend(library, step=False)
