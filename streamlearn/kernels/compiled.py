"""The host-side kernels of the compiled library: feature statistics, the drift detector and a
classifier's linear model.

Thin classes over the C functions (kernels/cpu/features.c, drift.c, linear.c) with the same
contract as the numpy reference forms in kernels/reference/, against which they are tested.
:class:`CompiledReservoir`: the replay reservoir's inserts (replay.c), against the torch form
in kernels/torch_reservoir.py. :class:`CompiledMemory`: the error memory's top-k compensation
and store (memory.c), against the torch form in kernels/torch_memory.py.
:class:`CompiledTraining`: the training step (step.c, async.c, through binding.py's
``CompiledStep``), against the torch form in kernels/torch_step.py.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

from streamlearn.kernels.backend import Inputs, Into, LinearRows, Scored, Shown
from streamlearn.kernels.cpu.binding import (
    APPLIED,
    Batch,
    CompiledStep,
    KernelsUnavailable,
    Replay,
    Target,
    compensate_top_k,
    load,
)
from streamlearn.kernels.drift_state import DriftParams, DriftState
from streamlearn.kernels.reference.drift import NumpyDrift
from streamlearn.kernels.reference.linear import NumpyLinear
from streamlearn.kernels.reference.statistics import NumpyStatistics
from streamlearn.kernels.torch_memory import TorchMemory, host
from streamlearn.kernels.torch_reservoir import Reservoir, Rows, TorchReservoir
from streamlearn.kernels.torch_step import TorchStep

if TYPE_CHECKING:
    from streamlearn.core.linear import LinearRates
    from streamlearn.core.memory.error_memory import ErrorMemory, TopKStore
    from streamlearn.core.training_step import FusedTrainer
    from streamlearn.kernels.torch_memory import Labelled, Mirror

__all__ = [
    "CompiledDrift",
    "CompiledLinear",
    "CompiledMemory",
    "CompiledReservoir",
    "CompiledStatistics",
    "CompiledTraining",
    "reloaded_linear",
    "reloaded_memory",
    "reloaded_reservoir",
    "reloaded_step",
]

# the reservoir's target dtypes (class slots, regression values) as numpy's
_HOST_DTYPES = {torch.int64: np.dtype(np.int64), torch.float32: np.dtype(np.float32)}


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


class CompiledReservoir:
    """:class:`~streamlearn.kernels.backend.ReservoirInsert` in replay.c: one call per batch,
    bit for bit the torch form. Rows that do not lie as the reservoir keeps its own (host
    arrays, C-contiguous, of its dtypes and widths), or a reservoir off the CPU, take the torch
    form."""

    name = "compiled"

    def __init__(self, library: ModuleType) -> None:
        self._library = library
        self._other_layouts = TorchReservoir()

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return reloaded_reservoir, ()

    def insert(self, reservoir: Reservoir, seen: int, rows: Rows, drawn: np.ndarray | None) -> None:
        r_num, r_cat, r_y = reservoir
        num, cat, y = rows
        if not (  # (a tensor's dtype equals no numpy dtype)
            r_num.is_cpu
            and num.dtype == np.float32
            and cat.dtype == np.int64
            and y.dtype == _HOST_DTYPES.get(r_y.dtype)
            and num.shape == (len(y), r_num.shape[1])
            and cat.shape == (len(y), r_cat.shape[1])
            and num.flags.c_contiguous
            and cat.flags.c_contiguous
            and y.flags.c_contiguous
        ):
            self._other_layouts.insert(reservoir, seen, rows, drawn)
            return
        self._library.reservoir_insert(
            r_num.data_ptr(),
            r_cat.data_ptr(),
            r_y.data_ptr(),
            r_y.shape[0],
            seen,
            r_num.shape[1],
            r_cat.shape[1],
            r_y.element_size(),
            num,
            cat,
            y,
            drawn,
        )


_TORCH_MEMORY = TorchMemory()  # what CompiledMemory leaves to the torch form


class CompiledMemory:
    """:class:`~streamlearn.kernels.backend.MemoryKernel` in memory.c, for a top-k ring on the
    CPU: one call per compensation and per store, the torch form's arithmetic. An empty ring,
    λ = 0 and ``store="errors"`` take the torch form."""

    name = "compiled"

    def __init__(self, library: ModuleType) -> None:
        self._library = library

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return reloaded_memory, ()

    def compensate(
        self, memory: ErrorMemory, hidden: np.ndarray, base: np.ndarray
    ) -> tuple[np.ndarray, torch.Tensor]:
        ring: TopKStore = memory.storage  # type: ignore[assignment]
        if ring.filled == 0 or memory.lam == 0.0:
            return _TORCH_MEMORY.compensate(memory, hidden, base)
        h = np.ascontiguousarray(hidden, dtype=np.float32)
        b = np.ascontiguousarray(base, dtype=np.float32).reshape(len(h), -1)
        _check_widths(h, b, ring)
        out, keys = compensate_top_k(
            self._library,
            (ring.keys.data_ptr(), ring.values.data_ptr(), ring.filled),
            ring.k,
            ring.tau,
            memory.lam,
            memory.gamma,
            memory.regression,
            h,
            b,
        )
        return (out[:, 0] if memory.regression else out), torch.from_numpy(keys)

    def store(
        self, memory: ErrorMemory, rows: Labelled, keys: torch.Tensor | None, mirror: Mirror | None
    ) -> np.ndarray:
        if memory.store != "all":
            return _TORCH_MEMORY.store(memory, rows, keys, mirror)
        hidden, y, base = rows
        ring: TopKStore = memory.storage  # type: ignore[assignment]
        h = np.ascontiguousarray(host(hidden), dtype=np.float32)
        n = len(h)
        newest = slice(max(n - ring.size, 0), None)  # only these would survive
        h = h[newest]
        b = np.ascontiguousarray(host(base)[newest], dtype=np.float32).reshape(len(h), -1)
        labels = host(y)[newest]
        _check_widths(h, b, ring)
        if memory.regression:
            targets, labels = np.ascontiguousarray(labels, dtype=np.float64), None
        else:
            targets, labels = None, np.ascontiguousarray(labels, dtype=np.int64)
        ring_num = ring_cat = num = cat = None
        if mirror is not None:
            ring_num, ring_cat, num_rows, cat_rows = mirror
            num = np.ascontiguousarray(num_rows[newest], dtype=np.float32)
            cat = np.ascontiguousarray(cat_rows[newest], dtype=np.int64)
            if num.shape[1:] != ring_num.shape[1:] or cat.shape[1:] != ring_cat.shape[1:]:
                raise ValueError(f"inputs {num.shape} / {cat.shape} do not fit the rings")
        code = self._library.memory_store(
            ring.keys.data_ptr(),
            ring.values.data_ptr(),
            ring.size,
            ring.cursor,
            h,
            labels,
            targets,
            b,
            None if ring_num is None else ring_num.data_ptr(),
            None if ring_cat is None else ring_cat.data_ptr(),
            num,
            cat,
        )
        if code != 0:
            raise IndexError(f"class label outside the memory's {ring.width} slots")
        ring.cursor = (ring.cursor + len(h)) % ring.size
        ring.filled = min(ring.filled + len(h), ring.size)
        return np.ones(n, dtype=bool)


class CompiledLinear:
    """:class:`~streamlearn.kernels.backend.LinearKernel` in linear.c: one call for every
    rate's prediction and their mix, one for their losses and steps (the numpy form's
    arithmetic, its sums in another order)."""

    name = "compiled"

    def __init__(self, library: ModuleType) -> None:
        self._library = library

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return reloaded_linear, ()

    def predict(
        self, rates: LinearRates, rows: LinearRows, active: int
    ) -> tuple[np.ndarray, np.ndarray]:
        num, cat = rows
        weights = rates.by_rate
        each = np.empty((len(weights), len(num), weights.shape[2]), dtype=np.float32)
        mixed = np.empty(each.shape[1:], dtype=np.float32)
        slots, shares = rates.models[0].numeric_slots, rates.shares
        _linear_code(
            self._library.linear_predict(weights, slots, num, cat, shares, active, each, mixed)
        )
        return each, mixed

    def learn(
        self,
        rates: LinearRates,
        rows: LinearRows,
        active: int,
        target: np.ndarray,
        each: np.ndarray,
    ) -> np.ndarray:
        num, cat = rows
        target = np.ascontiguousarray(target, dtype=np.int64)
        loss, fade = rates.loss.copy(), rates.discount ** len(target)
        slots = rates.models[0].numeric_slots
        _linear_code(
            self._library.linear_learn(
                rates.by_rate, slots, num, cat, rates.lrs, active, target, each, loss, fade
            )
        )
        return loss


def _linear_code(code: int) -> None:
    if code == -3:
        raise IndexError("a bucket outside the linear model's weights")
    if code == -5:
        raise IndexError("a class label outside the linear model's active slots")


class CompiledTraining:
    """:class:`~streamlearn.kernels.backend.StepKernel` in step.c, for a trainer on the CPU:
    one call per update, the replay rows gathered inside it, the torch form's arithmetic to
    float32 rounding. Overlapping, one call scores the batch and the updates run on async.c's
    worker thread (``binding``: the trainer's ``CompiledStep``, made when bound)."""

    name = "compiled"
    overlaps = True

    def __init__(self, library: ModuleType, trainer: FusedTrainer | None = None) -> None:
        self._library = library
        self._trainer = trainer
        if trainer is not None:
            self.binding = CompiledStep(library, trainer, trainer.betas, trainer.eps)
            classes = int(trainer.model.class_mask.shape[0])
            self._row_shape = () if trainer.regression else (classes,)
            self._hidden = trainer.model.hidden_dim
            self._targets = np.dtype(np.float32 if trainer.regression else np.int64)

    def __reduce__(self) -> tuple[object, tuple[FusedTrainer | None]]:
        """Bound again to the trainer where unpickled (the binding holds raw pointers)."""
        return reloaded_step, (self._trainer,)

    def bind(self, trainer: FusedTrainer) -> CompiledTraining:
        return CompiledTraining(self._library, trainer)

    def check(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray, outputs: int) -> Batch:
        rows = (
            np.ascontiguousarray(num, dtype=np.float32),
            np.ascontiguousarray(cat, dtype=np.int64),
            np.ascontiguousarray(y, dtype=self._targets),
        )
        self.binding.check(*rows, outputs)  # before any state changes; widens the active slots
        return rows

    def begin(
        self, rows: Batch, replay: Replay | None, outputs: int, lrs: list[float], target: Target
    ) -> Scored | None:
        prediction, hidden = self._outputs(len(rows[2]))
        loss = np.empty(len(rows[2]), dtype=np.float32)
        step = self.binding
        if not step.begin(rows, replay, outputs, lrs, target, prediction, loss, hidden):
            return None  # no worker thread here: scored, nothing learned
        return Scored(prediction, loss, hidden, loss, math.nan, None, step.wait)

    def run(
        self, rows: Batch, replay: Replay | None, outputs: int, lrs: list[float], target: Target
    ) -> Scored:
        batch, updates = len(rows[2]), len(lrs)
        prediction, hidden = self._outputs(batch)
        per_update = 0 if replay is None else len(replay[3]) // updates
        loss = np.empty(batch + per_update, dtype=np.float32)
        codes: list[int] = []
        for update in range(updates):
            picked = None
            if replay is not None:
                share = replay[3][update * per_update : (update + 1) * per_update]
                picked = (*replay[:3], share)
            outs = (prediction, loss, hidden) if update == 0 else (None, None, None)
            lr = lrs[codes.count(APPLIED)]
            codes.append(self.binding.update(rows, picked, outputs, lr, target, *outs))
        return Scored(prediction, loss[:batch], hidden, loss[:batch], math.nan, codes, None)

    def _outputs(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch's prediction and hidden rows, to be filled by the step."""
        prediction = np.zeros((batch, *self._row_shape), dtype=np.float32)
        return prediction, np.empty((batch, self._hidden), dtype=np.float32)

    def wait(self) -> list[int]:
        return self.binding.wait()

    def score(
        self, num: np.ndarray, cat: np.ndarray, outputs: int, shown: Shown
    ) -> tuple[np.ndarray, np.ndarray]:
        num = np.ascontiguousarray(num, dtype=np.float32)
        cat = np.ascontiguousarray(cat, dtype=np.int64)
        self.binding.widen(num, cat)
        prediction, hidden = self._outputs(len(num))
        into = prediction.reshape(len(num), -1)  # values [N] as a column [N, 1]
        inputs = torch.from_numpy(num), torch.from_numpy(cat)
        self.binding.forward_into(
            *inputs, outputs, torch.from_numpy(into), torch.from_numpy(hidden), shown, unit=False
        )
        return prediction, hidden

    def forward_into(
        self, inputs: Inputs, outputs: int, into: Into, shown: Shown, overlap: bool = False
    ) -> bool:
        return self.binding.forward_into(*inputs, outputs, *into, shown, overlap=overlap)


def _check_widths(hidden: np.ndarray, base: np.ndarray, ring: TopKStore) -> None:
    """ValueError unless rows fit the ring's keys and values: the compiled calls trust
    shapes."""
    if hidden.shape[1:] != ring.keys.shape[1:] or base.shape[1] != ring.width:
        raise ValueError(
            f"hidden {hidden.shape} / base {base.shape}: the memory holds keys of width "
            f"{ring.keys.shape[1]} and values of width {ring.width}"
        )


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


def reloaded_memory() -> CompiledMemory | TorchMemory:
    """The compiled memory kernel, or the torch form where the library cannot be had."""
    try:
        return CompiledMemory(load())
    except KernelsUnavailable:
        return TorchMemory()


def reloaded_linear() -> CompiledLinear | NumpyLinear:
    """The compiled linear kernel, or the numpy form where the library cannot be had."""
    try:
        return CompiledLinear(load())
    except KernelsUnavailable:
        return NumpyLinear()


def reloaded_reservoir() -> CompiledReservoir | TorchReservoir:
    """The compiled reservoir inserts, or the torch form where the library cannot be had."""
    try:
        return CompiledReservoir(load())
    except KernelsUnavailable:
        return TorchReservoir()


def reloaded_step(trainer: FusedTrainer | None = None) -> CompiledTraining | TorchStep:
    """The compiled training step (bound to ``trainer`` where given), or the torch form where
    the library cannot be had."""
    try:
        return CompiledTraining(load(), trainer)
    except KernelsUnavailable:
        return TorchStep(trainer)
