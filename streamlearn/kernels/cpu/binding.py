"""The compiled CPU kernels: load the build this CPU runs, bind the training step.

On a CPU a micro-batch costs more in torch's per-op dispatch than in its arithmetic
(docs/decisions/0004-compiled-cpu-kernels.md). step.c runs FusedTrainer's whole update
(forward, loss, backward, clipping, AdamW, lazy sparse Adam) in one call on the same buffers;
async.c runs a batch's updates on a worker thread; memory.c the error memory's top-k
compensation (bound in core/memory/error_memory.py), replay.c the reservoir's inserts
(core/replay.py), drift.c the loss-deviation detector and features.c the encoder's
standardisation and statistics (both in kernels/compiled.py). All go into one library.

setup.py compiles that library when the package is installed, once per build variant, each an
extension module of this package (:data:`VARIANTS`): on x86-64 for the x86-64-v4 (AVX-512) and
x86-64-v3 (AVX2, FMA) levels and the baseline, elsewhere for the baseline alone. :func:`load`
asks the baseline module which level this CPU runs and loads the best variant built for it,
through ctypes on the module's file. Nothing is compiled at run time. Where no variant was
built (no C compiler when the package was installed, a platform the build skips), :func:`load`
raises :class:`KernelsUnavailable` and the learner runs the torch step (``learner.kernel``:
auto): the same results to float32 rounding, slower. ``python -m
streamlearn.kernels.cpu.binding`` says which variant loads and from where, or why none can.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import logging
import platform
from pathlib import Path
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
    "ReloadsKernelsWhenUnpickled",
    "address",
    "bind",
    "built",
    "find",
    "load",
    "reload",
]

log = logging.getLogger(__name__)

PACKAGE = "streamlearn.kernels.cpu"  # where setup.py puts the variants' modules
# the extension modules setup.py builds, best first, each with the x86-64 level (the baseline
# module's cpu_level) a CPU needs to run it; the last, the baseline, runs on every CPU of its
# architecture and is the only one built elsewhere
VARIANTS = (("_kernels_v4", 4), ("_kernels_v3", 3), ("_kernels", 0))
MAX_LAYERS = 16  # MAX_LAYERS in step.c: hidden layers + the head
# a batch's rows: numeric [B, slots] float32, bucket ids [B, slots] int64, targets [B]
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]
# the reservoir's numeric, bucket and target tensors, and the rows of them to take
Replay = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", np.ndarray]
# (loc, scale) standardising regression targets, then (loc, scale) de-standardising values
Target = tuple[float, float, float, float]
APPLIED, SKIPPED, FORWARD_ONLY, NO_MEMORY, BAD_BUCKET = 1, 0, -1, -2, -3  # fused_step's codes
BAD_CLASS = -5  # batch_inputs': a class slot outside the ones switched on


class KernelsUnavailable(RuntimeError):
    """The compiled kernels cannot be had here (none built for this installation, a build
    that does not load)."""


_P = ctypes.c_void_p
_I = ctypes.c_int32
_F = ctypes.c_float


class _Net(ctypes.Structure):
    """``Net`` of step.c: the model's fixed shape and its buffers."""

    _fields_ = [
        ("layers", _I),
        ("numeric_slots", _I),
        ("categorical_slots", _I),
        ("emb_dim", _I),
        ("in_full", _I),
        ("width", _I * MAX_LAYERS),
        ("regression", _I),
        ("weight", _P * MAX_LAYERS),
        ("bias", _P * MAX_LAYERS),
        ("grad_weight", _P * MAX_LAYERS),
        ("grad_bias", _P * MAX_LAYERS),
        ("flat", _P),
        ("grad", _P),
        ("exp_avg", _P),
        ("exp_avg_sq", _P),
        ("flat_size", ctypes.c_int64),
        ("table", _P),
        ("table_moments", _P),
        ("buckets", ctypes.c_int64),
        ("step", _P),
        ("weight_decay", _F),
        ("clip_norm", _F),
        ("beta1", _F),
        ("beta2", _F),
        ("eps", _F),
    ]


class _Call(ctypes.Structure):
    """``Call`` of step.c: one update's rows, widths and outputs."""

    _fields_ = [
        ("num", _P),
        ("cat", _P),
        ("y", _P),
        ("batch", _I),
        ("r_num", _P),
        ("r_cat", _P),
        ("r_y", _P),
        ("r_idx", _P),
        ("r_rows", _I),
        ("active_num", _I),
        ("active_cat", _I),
        ("outputs", _I),
        ("lr", _F),
        ("target_loc", _F),
        ("target_scale", _F),
        ("pred_loc", _F),
        ("pred_scale", _F),
        ("prediction", _P),
        ("pred_stride", _I),
        ("loss", _P),
        ("hidden", _P),
        ("unit_hidden", _I),
        ("score_only", _I),
    ]


class _Job(ctypes.Structure):
    """``Job`` of async.c: a batch's updates for the worker thread."""

    _fields_ = [
        ("net", ctypes.POINTER(_Net)),
        ("call", _Call),
        ("updates", _I),
        ("per_update", _I),
        ("lrs", _P),
        ("codes", _P),
    ]


_L = ctypes.c_int64
_D = ctypes.c_double
# every function Python calls: (argument types, result type); the C files say what each does
_SIGNATURES: dict[str, tuple[list[Any], Any]] = {
    "fused_step": ([ctypes.POINTER(_Net), ctypes.POINTER(_Call)], ctypes.c_int),
    # batch_inputs(num, cat, labels, rows, num_slots, cat_slots, buckets, outputs, active)
    "batch_inputs": ([_P, _P, _P, _L, _I, _I, _L, _I, _P], ctypes.c_int),
    # memory_compensate(ring_keys, ring_values, filled, hidden_dim, width, hidden, base, rows,
    #                   k, tau, lam, gamma, regression, out, keys_out)
    "memory_compensate": (
        [_P, _P, _I, _I, _I, _P, _P, _I, _I, _F, _F, _F, _I, _P, _P],
        ctypes.c_int,
    ),
    # memory_store(ring_keys, ring_values, size, cursor, hidden_dim, width, hidden, labels,
    #              targets, base, rows, ring_num, ring_cat, num, cat, num_dim, cat_dim)
    "memory_store": (
        [_P, _P, _L, _L, _I, _I, _P, _P, _P, _P, _L, _P, _P, _P, _P, _I, _I],
        ctypes.c_int,
    ),
    # reservoir_insert(num, cat, y, capacity, seen, batch_num, batch_cat, batch_y, rows,
    #                  num_dim, cat_dim, y_size, drawn)
    "reservoir_insert": ([_P, _P, _P, _L, _L, _P, _P, _P, _L, _I, _I, _I, _P], None),
    # drift_update(losses, n, ring, window, alpha, k, min_samples, min_rise, cooldown,
    #              counters, smoothed, fired)
    "drift_update": ([_P, _I, _P, _L, _D, _D, _L, _D, _L, _P, _P, _P], ctypes.c_int32),
    # features_standardize(num, rows, slots, used, count, mean, m2, out)
    "features_standardize": ([_P, _L, _L, _L, _P, _P, _P, _P], None),
    # features_observe(num, rows, slots, used, count, mean, m2)
    "features_observe": ([_P, _L, _L, _L, _P, _P, _P], ctypes.c_int64),
    "updates_submit": ([ctypes.POINTER(_Job)], ctypes.c_int),
    "updates_wait": ([], None),
}


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


def bind(path: Path) -> ctypes.CDLL:
    """The library of a variant's module file, its functions typed as :data:`_SIGNATURES`
    says: the object the kernels' callers hold. Only for a variant this CPU runs."""
    library = ctypes.CDLL(str(path))
    for name, (argtypes, restype) in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes, function.restype = argtypes, restype
    return library


_loaded: ctypes.CDLL | KernelsUnavailable | None = None  # one attempt per process


def load() -> ctypes.CDLL:
    """:func:`bind` on :func:`find`'s variant, once per process; raises
    :class:`KernelsUnavailable` (the same one on every later call: a failed load is not retried
    within the process)."""
    global _loaded
    if _loaded is None:
        try:
            kernels = find()
            _loaded = bind(kernels.path)
            log.info("compiled CPU kernels: the %s build, %s", kernels.variant, kernels.path)
        except (KernelsUnavailable, OSError) as error:
            _loaded = error if isinstance(error, KernelsUnavailable) else KernelsUnavailable(error)
            log.warning("compiled CPU kernels unavailable, using the torch step: %s", _loaded)
    if isinstance(_loaded, KernelsUnavailable):
        raise _loaded
    return _loaded


def _data_offset() -> int | None:
    """Where this interpreter keeps an ndarray's data pointer inside the array object
    (PyArrayObject's ``data``, after the object header: 16 bytes on CPython), found by
    looking at probe arrays rather than assumed; None where it is not found."""
    probes = (np.arange(3.0), np.zeros((2, 5), dtype=np.float32), np.ones(7, dtype=np.int64))
    for offset in range(8, 72, 8):  # within the header and PyArrayObject's first fields
        if all(_POINTER_AT(id(p) + offset).value == p.ctypes.data for p in probes):
            return offset
    return None


_POINTER_AT = ctypes.c_void_p.from_address
_DATA_OFFSET = _data_offset() if platform.python_implementation() == "CPython" else None


def address(array: np.ndarray) -> int:
    """The data pointer of a C-contiguous array for a kernel, read from the array object
    itself (≈ 0.15 µs, against ≈ 0.25 through a ctypes view of its buffer and ≈ 0.75 for
    ``array.ctypes.data``, paid for every array of every call); ``ctypes.data`` where the
    object's layout is not the one found at import (another interpreter, a subclass)."""
    if type(array) is np.ndarray and _DATA_OFFSET is not None:
        return _POINTER_AT(id(array) + _DATA_OFFSET).value or 0
    return int(array.ctypes.data)


def reload(used: object) -> ctypes.CDLL | None:
    """For unpickling an object whose pickle says whether it ``used`` the library: the library
    again, or None (its torch path) where it cannot be had or was not used."""
    try:
        return load() if used else None
    except KernelsUnavailable:
        return None


class ReloadsKernelsWhenUnpickled:
    """For objects that keep the compiled library (or None) in ``_compiled``: they pickle with a
    flag in its place (a loaded library is not picklable) and load it again when unpickled
    (pickles of releases before the rename keep the flag in ``_native``)."""

    _compiled: ctypes.CDLL | None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_compiled": self._compiled is not None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        used = state.pop("_compiled", state.pop("_native", None))
        self.__dict__.update(state)
        self._compiled = reload(used)  # None: the object's numpy/torch path


class CompiledStep:
    """FusedTrainer's update as one call into step.c, on the trainer's own buffers.

    It holds raw pointers into the trainer's tensors: make a new one whenever those are
    replaced (FusedTrainer does on unpickling). CPU float32 tensors only.
    """

    def __init__(
        self, library: ctypes.CDLL, trainer: FusedTrainer, betas: tuple[float, float], eps: float
    ) -> None:
        if len(trainer.weights) > MAX_LAYERS:
            raise KernelsUnavailable(f"more than {MAX_LAYERS - 1} hidden layers")
        self._fused_step = library.fused_step
        self._trainer = trainer  # keeps every buffer the pointers below point into alive
        net = self._net = _Net()
        net.layers = len(trainer.weights)
        net.numeric_slots = trainer.numeric_slots
        net.categorical_slots = trainer.categorical_slots
        net.emb_dim = trainer.table.shape[1]
        net.in_full = trainer.weights[0].shape[1]
        net.regression = int(trainer.regression)
        parts = zip(
            trainer.weights, trainer.biases, trainer.weight_grads, trainer.bias_grads, strict=True
        )
        for i, (weight, bias, grad_weight, grad_bias) in enumerate(parts):
            net.width[i] = weight.shape[0]
            net.weight[i], net.bias[i] = weight.data_ptr(), bias.data_ptr()
            net.grad_weight[i], net.grad_bias[i] = grad_weight.data_ptr(), grad_bias.data_ptr()
        net.flat, net.grad = trainer.flat.data_ptr(), trainer.grad.data_ptr()
        net.exp_avg, net.exp_avg_sq = trainer.exp_avg.data_ptr(), trainer.exp_avg_sq.data_ptr()
        net.flat_size = trainer.flat.numel()
        net.table, net.table_moments = trainer.table.data_ptr(), trainer.table_moments.data_ptr()
        net.buckets = trainer.table.shape[0]
        net.step = trainer.step.data_ptr()
        net.weight_decay, net.clip_norm = trainer.weight_decay, trainer.clip_norm
        net.beta1, net.beta2 = betas
        net.eps = eps
        self._call = _Call()
        self._net_ref, self._call_ref = ctypes.byref(net), ctypes.byref(self._call)
        self.library = library
        self._job = _Job()
        self._job.net = ctypes.pointer(net)
        self._job_ref = ctypes.byref(self._job)
        self._in_flight: tuple[object, ...] | None = None
        self._active = np.zeros(2, dtype=np.int32)  # batch_inputs' widths, in and out
        self._active_at = address(self._active)

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
        C reads raw memory: callers pass the batch through :meth:`check` first (the kernel
        still refuses a bucket id outside the table: IndexError, nothing changed).
        """
        self._set_call(batch, replay, outputs, lr, target, (prediction, loss, hidden))
        return self._run()

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
        """Score the batch here, then start its ``len(lrs)`` updates on the worker thread of
        async.c; arguments as :meth:`update`'s, ``loss`` [B].

        Scoring is the first update's forward pass over the batch rows alone (rows do not mix,
        so the replay rows change none of its outputs), nothing learned. Update u then takes
        the u-th equal share of the replay rows and ``lrs[a]`` after ``a`` applied updates.
        False when no worker thread could be started (scored, nothing learned: run the
        updates with :meth:`update`). Until :meth:`wait` nothing may read or change the
        trainer's buffers, the reservoir's rows or the arrays passed.
        """
        updates = len(lrs)
        per_update = 0 if replay is None else len(replay[3]) // updates
        call = self._call
        self._set_call(batch, replay, outputs, 0.0, target, (prediction, loss, hidden))
        call.r_rows, call.score_only = 0, 1
        self._run_forward()
        call.r_rows, call.score_only = per_update, 0
        call.prediction = call.loss = call.hidden = None
        return self._submit(updates, per_update, np.asarray(lrs, dtype=np.float32), (batch, replay))

    def _submit(self, updates: int, per_update: int, rates: np.ndarray, keep: object) -> bool:
        """Hand the call as it stands to the worker as a Job of ``updates`` calls; ``keep``:
        what it reads and writes, kept alive until :meth:`wait`."""
        self._set_active()
        job = self._job
        job.call = self._call
        job.updates, job.per_update = updates, per_update
        codes = np.empty(updates, dtype=np.int32)
        job.lrs, job.codes = address(rates), address(codes)
        if self.library.updates_submit(self._job_ref) != 0:
            return False
        self._in_flight = (keep, rates, codes)
        return True

    def wait(self) -> list[int]:
        """Block until the submitted Job has run; its codes (APPLIED or SKIPPED for updates,
        FORWARD_ONLY for a forward pass)."""
        assert self._in_flight is not None, "nothing submitted"
        self.library.updates_wait()
        codes = self._in_flight[2]
        self._in_flight = None
        for code in codes:
            self._raise_for(int(code))
        return codes.tolist()

    def __del__(self) -> None:
        """Updates still running write into this object's job and the trainer's buffers:
        let them finish before either is freed (a learner dropped between begin and settle)."""
        if getattr(self, "_in_flight", None) is not None:
            self.library.updates_wait()

    def _set_call(
        self,
        batch: Batch,
        replay: Replay | None,
        outputs: int,
        lr: float,
        target: Target,
        written: tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None],
    ) -> None:
        """The call's fields; ``written``: the prediction, loss and hidden arrays filled."""
        prediction, loss, hidden = written
        call = self._call
        num, cat, y = batch
        call.num, call.cat, call.y = address(num), address(cat), address(y)
        call.batch = len(y)
        if replay is None:
            call.r_rows = 0
        else:
            r_num, r_cat, r_y, rows = replay
            call.r_num, call.r_cat, call.r_y = r_num.data_ptr(), r_cat.data_ptr(), r_y.data_ptr()
            call.r_idx, call.r_rows = address(rows), len(rows)
        call.outputs, call.lr = outputs, lr
        call.target_loc, call.target_scale, call.pred_loc, call.pred_scale = target
        call.prediction = None if prediction is None else address(prediction)
        call.pred_stride = 1 if prediction is None or prediction.ndim == 1 else prediction.shape[1]
        call.loss = None if loss is None else address(loss)
        call.hidden = None if hidden is None else address(hidden)
        call.unit_hidden = call.score_only = 0

    def check(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray, outputs: int) -> None:
        """ValueError for inputs of other shapes, IndexError for a bucket id outside the table
        or a class slot outside the ``outputs`` switched on (the errors the torch step
        raises), with nothing changed; else the trainer's active widths are widened to the
        batch (FusedTrainer.observe_inputs), in the same call into C. Inputs as :meth:`update`
        takes them; callers check before changing any state."""
        trainer = self._trainer
        shapes = (len(y), trainer.numeric_slots), (len(y), trainer.categorical_slots)
        if (num.shape, cat.shape) != shapes or y.ndim != 1:
            raise ValueError(
                f"inputs of shapes {num.shape} / {cat.shape} / {y.shape}; the model takes "
                f"{shapes[0]} / {shapes[1]} / ({len(y)},)"
            )
        active = self._active
        active[0], active[1] = trainer.active_num, trainer.active_cat
        code = self.library.batch_inputs(
            address(num),
            address(cat),
            None if trainer.regression else address(y),
            len(y),
            trainer.numeric_slots,
            trainer.categorical_slots,
            trainer.table.shape[0],
            outputs,
            self._active_at,
        )
        if code == BAD_CLASS:
            raise IndexError(f"class slot outside the {outputs} switched on in the batch")
        self._raise_for(code)
        trainer.active_num, trainer.active_cat = active.tolist()

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
    ) -> bool:
        """A forward pass only (nothing learned) over ``num``/``cat`` (contiguous rows of the
        model's full slot layouts), writing the prediction into ``prediction`` [n, ≥ outputs]
        (a row-major view; its rows may be further apart than its width, as a column block of
        a wider buffer) and unit-length last hidden rows into ``hidden`` [n, H] (contiguous).
        ``shown``: (loc, scale) de-standardising regression values. For the error memory's
        re-keying, which writes straight into its ring. With ``overlap`` it runs on the worker
        thread (:meth:`wait` for it; until then nothing may change the weights or touch the
        tensors passed) and False says no worker thread could be started (nothing ran)."""
        call = self._call
        call.num, call.cat, call.y, call.batch = num.data_ptr(), cat.data_ptr(), None, len(num)
        call.r_rows, call.outputs, call.lr = 0, outputs, 0.0
        call.pred_loc, call.pred_scale = shown
        call.prediction, call.pred_stride = prediction.data_ptr(), prediction.stride(0)
        call.loss, call.hidden, call.unit_hidden, call.score_only = None, hidden.data_ptr(), 1, 0
        if overlap:
            return self._submit(1, 0, np.zeros(1, np.float32), (num, cat, prediction, hidden))
        self._run_forward()  # the ring holds only rows a training step has accepted
        return True

    def _set_active(self) -> None:
        """The slots any batch so far has set: the kernel skips the others."""
        self._call.active_num, self._call.active_cat = (
            self._trainer.active_num,
            self._trainer.active_cat,
        )

    def _run(self) -> int:
        self._set_active()
        code = int(self._fused_step(self._net_ref, self._call_ref))
        self._raise_for(code)
        return code

    def _run_forward(self) -> None:
        """:meth:`_run` for a call that learns nothing (y NULL or score_only)."""
        code = self._run()
        if code != FORWARD_ONLY:
            raise MemoryError(f"compiled forward pass failed (code {code})")

    def _raise_for(self, code: int) -> None:
        if code == BAD_BUCKET:
            raise IndexError(f"bucket id outside [0, {self._trainer.table.shape[0]}) in the batch")
        if code == NO_MEMORY:
            raise MemoryError("compiled training step: scratch memory could not be allocated")


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
