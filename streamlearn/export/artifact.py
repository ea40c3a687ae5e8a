"""The model artifact contract: ``model.onnx`` + ``meta.json``, and how a reader trusts it.

Export writes it, the registry stores it as opaque bytes, serving and the publish gate load it
with :func:`load_bundle`, which refuses anything it cannot vouch for — a ``meta.json`` that does
not parse or lacks fields, ONNX bytes whose sha256 differs from the one recorded, a graph
onnxruntime cannot load, the wrong signature, or a warm-up batch that fails or is not finite.
A refusal is an :class:`~streamlearn.errors.ArtifactError` with a short ``reason`` for metrics.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from streamlearn.core.features import FeatureEncoder
from streamlearn.errors import ArtifactError

__all__ = [
    "FORMAT",
    "Artifact",
    "ModelBundle",
    "load_bundle",
    "parse_meta",
    "sha256_hex",
]

FORMAT = "streamlearn-model/1"
_REQUIRED = (
    "format",
    "version",
    "task",
    "classes",
    "features",
    "sha256",
    "n_outputs",
    "hidden_dim",
)
_ORT_ERRORS: tuple[type[BaseException], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidProtobuf,
    ort_state.InvalidGraph,
    ort_state.RuntimeException,
    ort_state.NotImplemented,
    ort_state.EPFail,
    RuntimeError,
    ValueError,
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """One exported model: the ONNX bytes and its metadata (``version`` set on publish)."""

    onnx: bytes
    meta: Mapping[str, Any]

    def meta_bytes(self) -> bytes:
        """``meta.json`` as written (strict JSON: NaN/inf would be a bug, so they raise)."""
        return json.dumps(dict(self.meta), indent=1, allow_nan=False).encode("utf-8")

    def with_version(self, version: int) -> Artifact:
        return Artifact(self.onnx, {**self.meta, "version": version})


def parse_meta(data: bytes) -> dict[str, Any]:
    """Parse and minimally type-check ``meta.json``; ArtifactError("bad_meta") otherwise."""
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError("bad_meta", f"meta.json does not parse: {exc}") from None
    if not isinstance(meta, dict):
        raise ArtifactError("bad_meta", "meta.json is not an object")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ArtifactError("bad_meta", f"meta.json lacks {', '.join(missing)}")
    if meta["format"] != FORMAT:
        raise ArtifactError("bad_meta", f"unknown artifact format {meta['format']!r}")
    if not isinstance(meta["classes"], list) or not isinstance(meta["features"], dict):
        raise ArtifactError("bad_meta", "meta.json classes/features have the wrong type")
    return meta


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """Everything one served version needs, immutable once built (swapped as one reference).

    ``encoder`` is frozen (``auto`` off): serving never assigns slots to names it has not seen,
    so a request cannot change what later requests mean. It is only touched by the event-loop
    thread (its ``ignored`` counters and bucket cache are not shared across threads).
    """

    version: int
    meta: dict[str, Any]
    session: ort.InferenceSession
    encoder: FeatureEncoder
    classes: list[Any]
    regression: bool
    n_outputs: int
    hidden_dim: int
    sha256: str
    loaded_at: float = field(default_factory=time.time)

    @property
    def numeric_slots(self) -> int:
        return self.encoder.numeric_slots

    @property
    def categorical_slots(self) -> int:
        return self.encoder.categorical_slots

    @property
    def hash_buckets(self) -> int:
        return self.encoder.hash_buckets

    def run(self, num: np.ndarray, cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, hidden) for standardised numeric float32 and bucket int64 inputs."""
        pred, hidden = self.session.run(None, {"num": num, "cat": cat})
        return pred, hidden

    def encode(self, rows: list[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Raw feature dicts → model inputs, with the worker's own encoder code and stats."""
        feats = self.encoder.encode(rows)
        return self.encoder.standardize(feats.num), feats.cat


def _session(onnx: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # tiny graphs: threads cost more than they give
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def _check_signature(session: ort.InferenceSession, encoder: FeatureEncoder) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    expected = {
        "num": ("tensor(float)", encoder.numeric_slots),
        "cat": ("tensor(int64)", encoder.categorical_slots),
    }
    if set(inputs) != set(expected) or outputs != ["prediction", "hidden"]:
        found = f"inputs {sorted(inputs)}, outputs {outputs}"
        raise ArtifactError("bad_signature", f"{found}; want num, cat → prediction, hidden")
    for name, (dtype, width) in expected.items():
        node = inputs[name]
        if node.type != dtype or len(node.shape) != 2 or node.shape[1] != width:
            found = f"input {name} is {node.type} {node.shape}"
            raise ArtifactError("bad_signature", f"{found}, want {dtype} [N, {width}]")


def load_bundle(version: int, onnx: bytes, meta_bytes: bytes, warm_rows: int = 8) -> ModelBundle:
    """Verify, load and warm one artifact; raise ArtifactError rather than serve a doubtful one."""
    meta = parse_meta(meta_bytes)
    if meta["version"] != version:
        raise ArtifactError("version_mismatch", f"meta.json says {meta['version']}, not {version}")
    digest = sha256_hex(onnx)
    if digest != meta["sha256"]:
        raise ArtifactError(
            "sha256_mismatch",
            f"model.onnx sha256 {digest[:12]}… ≠ meta {str(meta['sha256'])[:12]}…",
        )
    try:
        encoder = FeatureEncoder.from_state_dict(meta["features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError("bad_meta", f"feature state unusable: {exc!r}") from None
    encoder.auto = False
    try:
        session = _session(onnx)
    except _ORT_ERRORS as exc:
        raise ArtifactError("unloadable", f"onnxruntime cannot load model.onnx: {exc}") from None
    _check_signature(session, encoder)
    regression = meta["task"] == "regression"
    bundle = ModelBundle(
        version=version,
        meta=meta,
        session=session,
        encoder=encoder,
        classes=list(meta["classes"]),
        regression=regression,
        n_outputs=int(meta["n_outputs"]),
        hidden_dim=int(meta["hidden_dim"]),
        sha256=digest,
    )
    _warm(bundle, warm_rows)
    return bundle


def _warm(bundle: ModelBundle, rows: int) -> None:
    """Run the graph on 1 and ``rows`` rows (first-run allocations happen here, not in a
    request) and check shapes and finiteness."""
    for n in sorted({1, rows}):
        num = np.zeros((n, bundle.numeric_slots), dtype=np.float32)
        cat = np.zeros((n, bundle.categorical_slots), dtype=np.int64)
        try:
            pred, hidden = bundle.run(num, cat)
        except _ORT_ERRORS as exc:
            raise ArtifactError("warmup_failed", f"warm-up run failed: {exc}") from None
        want = (n,) if bundle.regression else (n, bundle.n_outputs)
        if pred.shape != want or hidden.shape != (n, bundle.hidden_dim):
            found = f"outputs {pred.shape} and {hidden.shape}"
            raise ArtifactError(
                "warmup_failed", f"{found}, want {want} and (n, {bundle.hidden_dim})"
            )
        if not (np.isfinite(pred).all() and np.isfinite(hidden).all()):
            raise ArtifactError("warmup_failed", "warm-up outputs are not finite")
