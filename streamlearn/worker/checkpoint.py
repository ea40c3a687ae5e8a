"""CheckpointStore: the worker's whole state on disk, written atomically, read back safely.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and dicts,
so ``torch.load(path, weights_only=True)`` reads it without unpickling arbitrary objects. It is
written to a temporary file, fsynced, renamed into place and the directory fsynced, so a crash
(even ``kill -9``) leaves either the previous or the new checkpoint, never half of one.

Layout: ``<dir>/ckpt-<seq:010d>-<sha256[:16]>.pt``; the name carries a digest of the bytes, so a
file damaged after it was written (torch checks no CRCs) is detected on restore, renamed to
``*.corrupt`` and skipped for the next older one. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pickle
import random
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FORMAT", "CheckpointStore", "Loaded", "restore_rng", "rng_state", "to_plain"]

FORMAT = 1
_NAME = re.compile(r"^ckpt-(\d{10})-([0-9a-f]{16})\.pt$")
_SEQ = re.compile(r"^\.?ckpt-(\d{10})")
_TENSOR_KINDS = "bif"  # numpy kinds that become tensors (bool, signed ints, floats)

log = logging.getLogger(__name__)


def to_plain(obj: Any) -> Any:
    """Tensors (moved to CPU), numbers, strings, lists and dicts only; numpy becomes torch.

    Anything else raises TypeError: a checkpoint must never need a pickled object to load.
    """
    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in _TENSOR_KINDS or obj.dtype == np.uint8:
            return torch.from_numpy(np.ascontiguousarray(obj))
        return obj.tolist()
    if isinstance(obj, Mapping):
        return {k if isinstance(k, str | int) else str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def rng_state() -> dict[str, Any]:
    """The process-wide generators (torch, CUDA, numpy, random) as plain values; the two
    Mersenne Twister states (625 words each) as int64 tensors, not lists: a list costs the
    checkpoint's pickler a Python call per word."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss_next],
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Undo :func:`rng_state` (also of checkpoints that hold the words as lists); CUDA states
    only where the same number of devices exists."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(keys).astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(np.asarray(internal).tolist()), gauss_next))


@dataclass(frozen=True, slots=True)
class Loaded:
    """A checkpoint read back: where it came from and what it holds."""

    path: Path
    seq: int
    state: dict[str, Any]


class CheckpointStore:
    """Numbered, digest-named checkpoint files in one directory."""

    def __init__(self, directory: Path | str, keep: int = 3) -> None:
        """Create ``directory`` if needed; OSError if it cannot be created or written (a file
        is written and dropped now, so a read-only volume fails at start-up, not at the first
        checkpoint)."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.keep = keep
        self.corrupt_skipped = 0  # checkpoints found unreadable on restore
        self.saved = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=self.directory).close()
        for stale in self.directory.glob(".ckpt-*.tmp"):  # a crash mid-write leaves these
            stale.unlink(missing_ok=True)
        seqs = [int(m.group(1)) for p in self.directory.iterdir() if (m := _SEQ.match(p.name))]
        self._next_seq = max(seqs, default=0) + 1

    def checkpoints(self) -> list[tuple[int, Path, str]]:
        """(seq, path, digest) of every well-named checkpoint, oldest first."""
        found = []
        for path in self.directory.iterdir():
            if m := _NAME.match(path.name):
                found.append((int(m.group(1)), path, m.group(2)))
        return sorted(found)

    def save(self, state: Mapping[str, Any]) -> Path:
        """Write the next checkpoint atomically and drop the ones beyond ``keep``."""
        return self.write(self.encode(state))

    @staticmethod
    def encode(state: Mapping[str, Any]) -> bytes:
        """A checkpoint's bytes: a copy of ``state`` as it is now (the first half of
        :meth:`save`; the state may change as soon as this returns)."""
        buffer = io.BytesIO()
        torch.save(to_plain({"format": FORMAT, "created": time.time(), **state}), buffer)
        return buffer.getvalue()

    def write(self, data: bytes) -> Path:
        """The second half of :meth:`save`: ``data`` (from :meth:`encode`) as the next
        checkpoint, durable when this returns; one write at a time per store (any thread)."""
        seq = self._next_seq
        final = self.directory / f"ckpt-{seq:010d}-{hashlib.sha256(data).hexdigest()[:16]}.pt"
        tmp = self.directory / f".ckpt-{seq:010d}.tmp"
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        self._fsync_dir()
        self._next_seq = seq + 1
        self.saved += 1
        for _, old, _ in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        return final

    def _fsync_dir(self) -> None:
        """Make the rename itself durable (POSIX: fsync the directory)."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load_latest(self) -> Loaded | None:
        """The newest checkpoint that reads back intact; damaged ones are set aside."""
        for seq, path, digest in reversed(self.checkpoints()):
            state = self._read(path, digest)
            if state is not None:
                return Loaded(path, seq, state)
            self.corrupt_skipped += 1
            with contextlib.suppress(OSError):
                path.rename(path.with_name(path.name + ".corrupt"))
        return None

    def _read(self, path: Path, digest: str) -> dict[str, Any] | None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("checkpoint %s unreadable (%s); trying an older one", path.name, exc)
            return None
        if hashlib.sha256(data).hexdigest()[:16] != digest:
            log.warning("checkpoint %s is damaged (digest mismatch); trying an older one", path)
            return None
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as exc:
            log.warning("checkpoint %s does not load (%s); trying an older one", path, exc)
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            log.warning("checkpoint %s has an unknown format; trying an older one", path)
            return None
        return state
