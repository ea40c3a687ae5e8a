"""Error-memory snapshots: the worker's ReLoop2 memory as bytes serving replicas can pull.

A snapshot is an uncompressed ``.npz`` (numpy's zip of arrays, read back with
``allow_pickle=False``: nothing from the network is ever unpickled) holding the memory's arrays
plus one JSON header: the
:class:`~streamlearn.core.memory.error_memory.ErrorMemory` configuration, its
scalar state, the learner step it was taken at, the newest model version published when it was
pushed and, when the keys were re-encoded by that published model (the publisher does so
whenever it can), that version as ``keyed_by_version``: a replica then looks samples up in the
hidden space of the model it serves, not the worker's live one. Decoding needs numpy alone:
serving rebuilds the memory as a read-only
:class:`~streamlearn.core.memory.compensation.FrozenMemory`, which compensates exactly as the
worker's memory on the same state (to float32 rounding).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from streamlearn.core.memory.compensation import FrozenMemory
from streamlearn.errors import ArtifactError

if TYPE_CHECKING:  # the encoding side runs in the worker, which has torch
    from streamlearn.core.memory.stage import MemoryStage
    from streamlearn.core.model import TabularNet

__all__ = ["MEMORY_FORMAT", "MemorySnapshot", "decode_memory", "encode_memory"]

MEMORY_FORMAT = "streamlearn-memory/1"
_HEADER = "__header__"
_CONFIG = ("kind", "lam", "gamma", "tau", "size", "k", "tables", "bits", "decay", "store")


@dataclass(frozen=True, eq=False)
class MemorySnapshot:
    """A decoded snapshot: the rebuilt (read-only) memory and where it came from."""

    error_memory: FrozenMemory
    hidden_dim: int
    width: int  # class slots (1 for regression)
    regression: bool
    learner_step: int
    model_version: int | None
    keyed_by_version: int | None  # the model whose hidden space the keys are in; None: live
    pushed_unix: float
    pulled_unix: float


def encode_memory(
    stage: MemoryStage, model_version: int | None, model: TabularNet | None = None
) -> bytes:
    """Serialise a MemoryStage's error memory (its arrays and the config to rebuild it);
    ``model`` is the published ``model_version``, to re-key the snapshot with."""
    memory, settings = stage.memory, stage.settings
    state, rekeyed = stage.state_for(model)
    arrays = {k: np.asarray(v) for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state.items() if k not in arrays}
    header = {
        "format": MEMORY_FORMAT,
        # λ as the memory applies it (memory.lam_regression for a regression target)
        "config": {**{k: getattr(settings, k) for k in _CONFIG}, "lam": memory.lam},
        "hidden_dim": int(stage.learner.model.hidden_dim),
        "width": int(stage.learner.model.class_mask.shape[0]),
        "regression": memory.regression,
        "scalars": scalars,
        "learner_step": int(stage.learner.steps),
        "model_version": model_version,
        "keyed_by_version": model_version if rekeyed else None,
        "pushed_unix": time.time(),
    }
    raw = np.frombuffer(json.dumps(header, allow_nan=False).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **{_HEADER: raw}, **arrays)
    return buffer.getvalue()


def decode_memory(blob: bytes) -> MemorySnapshot:
    """Rebuild the memory from :func:`encode_memory` bytes; ArtifactError("bad_memory") if not."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        header: dict[str, Any] = json.loads(arrays.pop(_HEADER).tobytes().decode("utf-8"))
        if header.get("format") != MEMORY_FORMAT:
            raise ValueError(f"unknown memory format {header.get('format')!r}")
        memory = FrozenMemory.from_state(
            {**header["scalars"], **arrays},
            header["config"],
            int(header["hidden_dim"]),
            int(header["width"]),
            bool(header["regression"]),
        )
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ArtifactError("bad_memory", f"error-memory snapshot unusable: {exc}") from None
    return MemorySnapshot(
        error_memory=memory,
        hidden_dim=int(header["hidden_dim"]),
        width=1 if memory.regression else int(header["width"]),
        regression=memory.regression,
        learner_step=int(header["learner_step"]),
        model_version=header.get("model_version"),
        keyed_by_version=header.get("keyed_by_version"),
        pushed_unix=float(header["pushed_unix"]),
        pulled_unix=time.time(),
    )
