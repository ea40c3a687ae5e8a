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

A classifier's neighbour vote (core/neighbours.py) travels in the same snapshot: its ring's
keys and one-hot labels (``neighbours.keys``, ``neighbours.y``) and, in the header, its k,
numeric slots and share; serving mixes it in before the error memory compensates, as the worker
does. Either part may be absent (the memory off; the vote off, retired or empty).
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
from streamlearn.core.neighbours import TEMPERATURE
from streamlearn.errors import ArtifactError

if TYPE_CHECKING:  # the encoding side runs in the worker, which has torch
    from streamlearn.core.learner import OnlineLearner
    from streamlearn.core.memory.stage import MemoryStage
    from streamlearn.core.model import TabularNet
    from streamlearn.core.neighbours import NeighbourVote

__all__ = ["MEMORY_FORMAT", "MemorySnapshot", "decode_memory", "encode_memory"]

MEMORY_FORMAT = "streamlearn-memory/1"
_HEADER = "__header__"
_CONFIG = ("kind", "lam", "gamma", "tau", "size", "k", "tables", "bits", "decay", "store")


@dataclass(frozen=True, eq=False)
class MemorySnapshot:
    """A decoded snapshot: the rebuilt (read-only) memory, the neighbour vote (its weight the
    vote's share; over the first ``neighbour_slots`` numeric slots) and where they came from."""

    error_memory: FrozenMemory | None
    neighbours: FrozenMemory | None
    neighbour_slots: int
    hidden_dim: int
    width: int  # class slots (1 for regression)
    regression: bool
    learner_step: int
    model_version: int | None
    keyed_by_version: int | None  # the model whose hidden space the keys are in; None: live
    pushed_unix: float
    pulled_unix: float


def encode_memory(
    stage: MemoryStage | None,
    model_version: int | None,
    model: TabularNet | None = None,
    neighbours: NeighbourVote | None = None,
    learner: OnlineLearner | None = None,
) -> bytes:
    """Serialise a MemoryStage's error memory (its arrays and the config to rebuild it) and
    the ``neighbours``' vote; ``model`` is the published ``model_version``, to re-key the
    snapshot with; ``learner``: the chain's, where there is no stage (the memory off)."""
    learner = stage.learner if stage is not None else learner
    if learner is None:
        raise ValueError("encode_memory needs the memory stage or the learner")
    arrays: dict[str, np.ndarray] = {}
    header: dict[str, Any] = {"config": None, "scalars": {}, "keyed_by_version": None}
    regression = learner.regression
    if stage is not None:
        memory, settings = stage.memory, stage.settings
        state, rekeyed = stage.state_for(model)
        arrays = {k: np.asarray(v) for k, v in state.items() if isinstance(v, np.ndarray)}
        header = {
            # λ as the memory applies it (memory.lam_regression for a regression target)
            "config": {**{k: getattr(settings, k) for k in _CONFIG}, "lam": memory.lam},
            "scalars": {k: v for k, v in state.items() if k not in arrays},
            "keyed_by_version": model_version if rekeyed else None,
        }
    if neighbours is not None and neighbours.lookup() is not None:
        arrays["neighbours.keys"] = neighbours.keys[: neighbours.filled]
        arrays["neighbours.y"] = neighbours.values[: neighbours.filled, : neighbours.width]
        header["neighbours"] = {
            "k": neighbours.k, "slots": neighbours.active, "share": neighbours.share,
        }  # fmt: skip
    header |= {
        "format": MEMORY_FORMAT,
        "hidden_dim": int(learner.model.hidden_dim),
        "width": int(learner.model.class_mask.shape[0]),
        "regression": regression,
        "learner_step": int(learner.steps),
        "model_version": model_version,
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
        regression, width = bool(header["regression"]), int(header["width"])
        memory = None
        if header["config"] is not None:
            memory = FrozenMemory.from_state(
                {**header["scalars"], **arrays},
                header["config"],
                int(header["hidden_dim"]),
                width,
                regression,
            )
        neighbours, slots = _neighbours(header.get("neighbours"), arrays, width)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ArtifactError("bad_memory", f"error-memory snapshot unusable: {exc}") from None
    return MemorySnapshot(
        error_memory=memory,
        neighbours=neighbours,
        neighbour_slots=slots,
        hidden_dim=int(header["hidden_dim"]),
        width=1 if regression else width,
        regression=regression,
        learner_step=int(header["learner_step"]),
        model_version=header.get("model_version"),
        keyed_by_version=header.get("keyed_by_version"),
        pushed_unix=float(header["pushed_unix"]),
        pulled_unix=time.time(),
    )


def _neighbours(
    config: dict[str, Any] | None, arrays: dict[str, np.ndarray], width: int
) -> tuple[FrozenMemory | None, int]:
    """The neighbour vote as a read-only memory (its weight the vote's share) and the numeric
    slots its keys span; (None, 0) where the snapshot has none."""
    if config is None:
        return None, 0
    slots = int(config["slots"])
    state = {
        "kind": "topk",
        "keys": arrays["neighbours.keys"],
        "y": arrays["neighbours.y"],
        "base": np.zeros_like(arrays["neighbours.y"]),
        "weight": float(config["share"]),
    }
    settings = {"kind": "topk", "k": int(config["k"]), "tau": TEMPERATURE, "lam": 1.0, "gamma": 1.0}
    return FrozenMemory.from_state(state, settings, slots + 1, width, False), slots
