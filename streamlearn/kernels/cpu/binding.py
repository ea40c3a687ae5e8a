"""The compiled CPU kernels: import the build this CPU runs, bind the training step.

On a CPU a micro-batch costs more in torch's per-op dispatch than in its arithmetic
(docs/decisions/0004-compiled-cpu-kernels.md). step.c runs FusedTrainer's whole update
(forward, loss, backward, clipping, AdamW, lazy sparse Adam) in one call on the same buffers;
async.c runs a batch's updates on a worker thread; memory.c the error memory's top-k
compensation and store, replay.c the reservoir's inserts, drift.c the loss-deviation detector
and features.c the encoder's standardisation and statistics (all four bound in
kernels/compiled.py).

setup.py compiles them when the package is installed, once per build variant, each an
extension module of this package (:data:`VARIANTS`): on x86-64 for the x86-64-v4 (AVX-512) and
x86-64-v3 (AVX2, FMA) levels and the baseline, elsewhere for the baseline alone. module.c,
bind_host.c and bind_step.c are their Python binding: functions that take numpy arrays
(checking their element types, shapes and contiguity) and torch tensors' ``data_ptr()``, and a
``Step`` type that holds a trainer's buffers. :func:`load` asks the baseline module which
level this CPU runs and imports the best variant built for it. Nothing is compiled at run
time. Where no variant was built (no C compiler when the package was installed, a platform the
build skips), :func:`load` raises :class:`KernelsUnavailable` and the learner runs the torch
step (``learner.kernel``: auto): the same results to float32 rounding, slower.
``python -m streamlearn.kernels.cpu.binding`` says which variant loads and from where, or why
none can.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import torch

    from streamlearn.core.training_step import FusedTrainer

__all__ = [
    "VARIANTS",
    "CompiledStep",
    "Kernels",
    "KernelsUnavailable",
    "built",
    "compensate_top_k",
    "find",
    "float32_rows",
    "load",
    "loaded",
]

log = logging.getLogger(__name__)

PACKAGE = "streamlearn.kernels.cpu"  # where setup.py puts the variants' modules
# the extension modules setup.py builds, best first, each with the x86-64 level (the baseline
# module's cpu_level) a CPU needs to run it; the last, the baseline, runs on every CPU of its
# architecture and is the only one built elsewhere
VARIANTS = (("_kernels_v4", 4), ("_kernels_v3", 3), ("_kernels", 0))
MAX_LAYERS = 16  # MAX_LAYERS in step.h: hidden layers + the head (the modules' MAX_LAYERS)
# a batch's rows: numeric [B, slots] float32, bucket ids [B, slots] int64, targets [B]
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]
# the reservoir's numeric, bucket and target tensors, and the rows of them to take
Replay = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", np.ndarray]
# (loc, scale) standardising regression targets, then (loc, scale) de-standardising values
Target = tuple[float, float, float, float]
APPLIED, SKIPPED, FORWARD_ONLY = 1, 0, -1  # a fused step's codes (kernels.h)


class KernelsUnavailable(RuntimeError):
    """The compiled kernels cannot be had here (none built for this installation, a build
    that does not load)."""


class Kernels(NamedTuple):
    """The build variant :func:`load` takes on this machine."""

    module: str  # its extension module's full name
    variant: str  # the level it was compiled for: "x86-64-v4", ..., "baseline"
    path: Path  # its file
    cpu_level: int  # the x86-64 level this CPU runs (0: not x86-64)


def built() -> list[str]:
    """The full names of the variants' modules installed here, best first."""
    names = (f"{PACKAGE}.{module}" for module, _ in VARIANTS)
    return [name for name in names if importlib.util.find_spec(name) is not None]


def find() -> Kernels:
    """The best variant built for this CPU; :class:`KernelsUnavailable` where none was built or
    the one chosen does not import.

    Only the baseline module and the one chosen are imported: a variant for a level above the
    CPU's would stop the process (an illegal instruction) wherever its code ran."""
    modules = built()
    baseline = f"{PACKAGE}.{VARIANTS[-1][0]}"
    if baseline not in modules:
        raise KernelsUnavailable(
            f"no compiled kernels were built with this installation ({baseline} is missing): "
            "installing streamlearn builds them where it finds a C compiler and Python's headers"
        )
    try:
        cpu_level = int(importlib.import_module(baseline).cpu_level)
        name = next(
            f"{PACKAGE}.{module}"
            for module, level in VARIANTS
            if level <= cpu_level and f"{PACKAGE}.{module}" in modules
        )  # the baseline's level, 0, is every CPU's
        chosen = importlib.import_module(name)
    except ImportError as error:
        raise KernelsUnavailable(f"the compiled kernels do not import: {error}") from error
    return Kernels(name, str(chosen.variant), Path(str(chosen.__file__)), cpu_level)


_loaded: ModuleType | KernelsUnavailable | None = None  # one attempt per process


def load() -> ModuleType:
    """:func:`find`'s variant, its extension module: the object the kernels' callers hold;
    once per process. Raises :class:`KernelsUnavailable` (the same one on every later call: a
    failed load is not retried within the process)."""
    global _loaded
    if _loaded is None:
        try:
            kernels = find()
            _loaded = importlib.import_module(kernels.module)
            log.info("compiled CPU kernels: the %s build, %s", kernels.variant, kernels.path)
        except KernelsUnavailable as error:
            _loaded = error
            log.warning(
                "compiled CPU kernels unavailable (the torch step and numpy run instead): %s",
                _loaded,
            )
    if isinstance(_loaded, KernelsUnavailable):
        raise _loaded
    return _loaded


def loaded() -> ModuleType | None:
    """:func:`load`'s module, or None where the kernels are unavailable: for callers with a
    numpy path of the same result (the first attempt logs why)."""
    try:
        return load()
    except KernelsUnavailable:
        return None


def float32_rows(*arrays: np.ndarray) -> bool:
    """Whether every array is C-contiguous float32 [rows, width] of the first one's shape: the
    predictions mix.c's kernels take (callers pass others to numpy)."""
    shape = arrays[0].shape
    return all(
        a.dtype == np.float32 and a.ndim == 2 and a.shape == shape and a.flags.c_contiguous
        for a in arrays
    )


def compensate_top_k(
    library: ModuleType,
    ring: tuple[int, int, int],
    k: int,
    tau: float,
    lam: float,
    gamma: float,
    regression: bool,
    hidden: np.ndarray,
    base: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """memory.c's top-k read and compensation of float32 ``hidden`` [B, H] and ``base`` [B, W]
    over a ring (its keys' and values' addresses, float32 [>= filled, H] and [>= filled, 2 W],
    and its rows in use, ``filled``): (compensated [B, W], the unit keys of hidden [B, H]).
    The kernel reads the ring by address: the caller vouches for its widths. Torch-free, so the
    serving tier's read-only memory calls it too."""
    keys_at, values_at, filled = ring
    out, keys = np.empty_like(base), np.empty_like(hidden)
    code = library.memory_compensate(
        keys_at, values_at, filled, k, tau, lam, gamma, int(regression), hidden, base, out, keys
    )
    if code != 0:
        raise MemoryError("compiled error memory: scratch memory could not be allocated")
    return out, keys


class CompiledStep:
    """FusedTrainer's update as one call into step.c, on the trainer's own buffers.

    The module's ``Step`` holds numpy views of the trainer's tensors (made once: their memory
    lives as long as it does), checked there, and the job it hands to the worker thread: make a
    new one whenever those tensors are replaced (CompiledTraining in kernels/compiled.py does,
    bound again on unpickling). CPU float32 tensors only. The arrays a call takes are checked
    in C (element types, shapes, contiguity); the reservoir's tensors go by ``data_ptr()``.
    """

    def __init__(
        self, library: ModuleType, trainer: FusedTrainer, betas: tuple[float, float], eps: float
    ) -> None:
        if len(trainer.weights) > MAX_LAYERS:
            raise KernelsUnavailable(f"more than {MAX_LAYERS - 1} hidden layers")
        self._trainer = trainer
        self.library = library

        def views(tensors: list[torch.Tensor]) -> list[np.ndarray]:
            return [tensor.numpy() for tensor in tensors]

        flat = (trainer.flat, trainer.grad, trainer.exp_avg, trainer.exp_avg_sq)
        table = (trainer.table, trainer.table_moments, trainer.step)
        self._step = library.Step(
            *map(
                views, (trainer.weights, trainer.biases, trainer.weight_grads, trainer.bias_grads)
            ),
            *views([*flat, *table]),
            trainer.regression,
            trainer.numeric_slots,
            trainer.categorical_slots,
            trainer.weight_decay,
            trainer.clip_norm,
            *betas,
            eps,
            *([None, None] if trainer.wide is None else views([trainer.wide, trainer.wide_grad])),
            None if trainer.frequencies is None else trainer.frequencies.numpy(),
            trainer.periodic_scale,
        )

    @property
    def in_flight(self) -> bool:
        """Whether a job handed to the worker thread awaits :meth:`wait`."""
        return bool(self._step.in_flight)

    def update(
        self,
        batch: Batch,
        replay: Replay | None,
        outputs: int,
        lr: float,
        target: Target = (0.0, 1.0, 0.0, 1.0),
        prediction: np.ndarray | None = None,
        loss: np.ndarray | None = None,
        hidden: np.ndarray | None = None,
    ) -> int:
        """One update over the batch rows followed by the replay rows ``replay[3]`` picks.

        ``batch``: C-contiguous numeric [B, numeric_slots] float32, bucket ids [B,
        categorical_slots] int64, targets [B] (int64 slots or float32 values); ``replay``: the
        reservoir's tensors of the same layouts and the int64 rows to take. ``target``:
        (loc, scale) standardising regression targets for the loss, then (loc, scale)
        de-standardising the prediction. Outputs, when given, are filled: ``prediction``
        [B, ≥ outputs] float32 (probabilities or values), ``loss`` [B + replay rows] float32,
        ``hidden`` [B, H] float32. Returns APPLIED or SKIPPED (non-finite: nothing changed).
        Callers pass the batch through :meth:`check` first (the kernel still refuses a bucket
        id outside the table: IndexError, nothing changed).
        """
        return self._step.update(
            *self._rows(batch, replay, outputs), lr, *target, prediction, loss, hidden
        )

    def begin(
        self,
        batch: Batch,
        replay: Replay | None,
        outputs: int,
        lrs: list[float],
        target: Target,
        prediction: np.ndarray,
        loss: np.ndarray,
        hidden: np.ndarray,
    ) -> bool:
        """Score the batch, then run its ``len(lrs)`` updates, both on the worker thread of
        async.c (the scoring where the last updates left the weights); returns once the scores
        are written. Arguments as :meth:`update`'s, ``loss`` [B].

        Scoring is the first update's forward pass over the batch rows alone (rows do not mix,
        so the replay rows change none of its outputs), nothing learned. Update u then takes
        the u-th equal share of the replay rows and ``lrs[a]`` after ``a`` applied updates.
        False when no worker thread could be started (scored here, nothing learned: run the
        updates with :meth:`update`). Until :meth:`wait` nothing may read or change the
        trainer's buffers, the reservoir's rows or the arrays passed (the job holds them).
        """
        return self._step.begin(
            *self._rows(batch, replay, outputs),
            lrs,
            *target,
            prediction,
            loss,
            hidden,
            replay,  # the reservoir's tensors, kept alive by the job until wait()
        )

    def _rows(self, batch: Batch, replay: Replay | None, outputs: int) -> tuple[Any, ...]:
        """update's and begin's first arguments: the batch, the reservoir's tensors (by
        address) and the rows of them to take, the active widths, the outputs."""
        trainer = self._trainer
        if replay is None:
            reservoir: tuple[Any, ...] = (None, None, None, None)
        else:
            r_num, r_cat, r_y, rows = replay
            reservoir = (r_num.data_ptr(), r_cat.data_ptr(), r_y.data_ptr(), rows)
        return (*batch, *reservoir, trainer.active_num, trainer.active_cat, outputs)

    def wait(self) -> list[int]:
        """Block until the submitted job has run; its codes (APPLIED or SKIPPED for updates,
        FORWARD_ONLY for a forward pass). IndexError or MemoryError where one failed."""
        codes: list[int] = self._step.wait()
        return codes

    def check(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray, outputs: int) -> None:
        """ValueError for inputs of other shapes, IndexError for a bucket id outside the table
        or a class slot outside the ``outputs`` switched on (the errors the torch step
        raises), with nothing changed; else the trainer's active widths are widened to the
        batch (FusedTrainer.observe_inputs), in the same call into C. Inputs as :meth:`update`
        takes them; callers check before changing any state."""
        if y.shape != (len(num),):
            raise ValueError(f"targets of shape {y.shape} for {len(num)} rows")
        self.widen(num, cat, None if self._trainer.regression else y, outputs)

    def forward_into(
        self,
        num: torch.Tensor,
        cat: torch.Tensor,
        outputs: int,
        prediction: torch.Tensor,
        hidden: torch.Tensor,
        shown: tuple[float, float] = (0.0, 1.0),
        *,
        overlap: bool = False,
        unit: bool = True,
    ) -> bool:
        """A forward pass only (nothing learned) over ``num``/``cat`` (contiguous rows of the
        model's full slot layouts), writing the prediction into ``prediction`` [n, ≥ outputs]
        (a row-major view; its rows may be further apart than its width, as a column block of
        a wider buffer) and the last hidden rows into ``hidden`` [n, H] (contiguous), scaled
        to unit length unless ``unit`` is False.
        ``shown``: (loc, scale) de-standardising regression values. For the error memory's
        re-keying, which writes straight into its ring. With ``overlap`` it runs on the worker
        thread (:meth:`wait` for it; until then nothing may change the weights or touch the
        tensors passed) and False says no worker thread could be started (nothing ran)."""
        trainer = self._trainer
        return bool(
            self._step.forward(
                num.numpy(),
                cat.numpy(),
                outputs,
                trainer.active_num,
                trainer.active_cat,
                *shown,
                prediction.numpy(),
                hidden.numpy(),
                overlap,
                unit,
            )
        )

    def widen(
        self, num: np.ndarray, cat: np.ndarray, labels: np.ndarray | None = None, outputs: int = 1
    ) -> None:
        """Check rows (ValueError for other shapes, IndexError for a bucket id outside the table
        or a label outside the ``outputs`` slots, nothing changed) and widen the trainer's
        active slots to every one they set: a forward pass over the active slots then gives
        the module's result for them (score-only rows take no ``labels``)."""
        trainer = self._trainer
        shapes = (len(num), trainer.numeric_slots), (len(num), trainer.categorical_slots)
        if (num.shape, cat.shape) != shapes:
            raise ValueError(
                f"inputs of shapes {num.shape} / {cat.shape}; the model takes "
                f"{shapes[0]} / {shapes[1]}"
            )
        trainer.active_num, trainer.active_cat = self._step.check(
            num, cat, labels, outputs, trainer.active_num, trainer.active_cat
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streamlearn.kernels.cpu.binding",
        description="Say which build of the compiled CPU kernels (training step, error memory, "
        "reservoir, drift detector, feature statistics) this machine loads and from where, or "
        "why none can be loaded. Installing streamlearn builds them (setup.py): on x86-64 one "
        "each for x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and the baseline, elsewhere the "
        "baseline alone; the learner loads the best one this CPU runs. Where none was built "
        "(no C compiler or no Python headers at install time) it runs the torch step, slower: "
        "reinstall with gcc or clang and Python's headers on the machine. Nothing is compiled "
        "at run time.",
        epilog="Exit status: 0 when a build loads, 1 when none can.",
    )
    parser.parse_args(argv)
    try:
        kernels = find()
        load()
    except KernelsUnavailable as error:
        parser.exit(1, f"no compiled kernels: {error}\n")
    level = {0: "not x86-64", 1: "x86-64"}.get(kernels.cpu_level, f"x86-64-v{kernels.cpu_level}")
    print(f"loaded: the {kernels.variant} build ({kernels.module})")
    print(f"from: {kernels.path}")
    print(f"this CPU: {level}; built: {', '.join(name.rpartition('.')[2] for name in built())}")


if __name__ == "__main__":
    main()
