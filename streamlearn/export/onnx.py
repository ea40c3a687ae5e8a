"""torch → ONNX export with a checker pass, a torch↔onnxruntime parity check and metadata.

The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``): in
torch 2.13 the default dynamo exporter needs the extra ``onnxscript`` package and takes seconds
per export, while the TorchScript path exports this MLP in tens of milliseconds with a dynamic
batch axis (measured; DESIGN.md "Decisions (issue 5)"). The model is copied to the CPU in eval
mode first, so exporting never touches the live training model or its device.

The graph is refused (:class:`~streamlearn.errors.ExportError`) when ``onnx.checker`` rejects it
or when onnxruntime and torch differ by more than ``tolerance`` on a seeded sample batch.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from datetime import datetime, timezone
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from streamlearn.core.features import FeatureEncoder
from streamlearn.core.labels import LabelMap
from streamlearn.core.linear import LinearWeights
from streamlearn.core.model import ServedNet, TabularNet
from streamlearn.core.prequential import Prequential
from streamlearn.errors import ExportError
from streamlearn.export.artifact import FORMAT, Artifact, sha256_hex

__all__ = ["export_artifact", "export_prequential", "parity_error", "to_onnx"]

INPUTS = ("num", "cat")
OUTPUTS = ("prediction", "hidden")


def to_onnx(
    model: TabularNet,
    numeric_slots: int,
    categorical_slots: int,
    opset: int,
    linear: LinearWeights | None = None,
) -> bytes:
    """Serialised ONNX of a CPU/eval copy of ``model`` as served (:class:`ServedNet`: its
    input ``num`` the standardised values, its periodic features computed in the graph, mixed
    with ``linear`` where given) with a dynamic batch axis."""
    clone = _served_copy(model, linear)
    sample = (
        torch.zeros((2, numeric_slots), dtype=torch.float32),
        torch.zeros((2, categorical_slots), dtype=torch.int64),
    )
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in (*INPUTS, *OUTPUTS)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript path, chosen
        try:
            torch.onnx.export(
                clone,
                sample,
                buffer,
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc
    data = buffer.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"onnx.checker rejected the export: {exc}") from exc
    return data


def _served_copy(model: TabularNet, linear: LinearWeights | None) -> ServedNet:
    """A CPU, float32, eval-mode copy of ``model`` as served; the live model is not touched."""
    return ServedNet(copy.deepcopy(model).to("cpu").float(), linear).eval()


def _parity_batch(
    rows: int, numeric_slots: int, categorical_slots: int, buckets: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded inputs over the range serving sees: standardised values (±8) and any bucket."""
    rng = np.random.default_rng(seed)
    num = np.clip(rng.normal(0.0, 2.0, (rows, numeric_slots)), -8, 8).astype(np.float32)
    cat = rng.integers(0, buckets, (rows, categorical_slots), dtype=np.int64)
    num[0], cat[0] = 0.0, 0  # the all-missing row
    return num, cat


def parity_error(
    data: bytes,
    model: TabularNet,
    num: np.ndarray,
    cat: np.ndarray,
    linear: LinearWeights | None = None,
) -> float:
    """Largest |onnxruntime − torch| / (1 + |torch|) over both outputs (prediction, hidden).

    Absolute for values near 0 (probabilities), relative for large ones (a regression target
    in its own units), so one tolerance fits both.
    """
    clone = _served_copy(model, linear)
    with torch.no_grad():
        ref = [t.numpy() for t in clone(torch.from_numpy(num), torch.from_numpy(cat))]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUTS), {"num": num, "cat": cat})
    worst = 0.0
    for expected, actual in zip(ref, got, strict=True):
        if expected.shape != actual.shape:
            raise ExportError(f"onnx output shape {actual.shape} ≠ torch {expected.shape}")
        scaled = np.abs(expected - actual) / (1.0 + np.abs(expected))
        worst = max(worst, float(np.max(scaled, initial=0.0)))
    return worst


def export_prequential(prequential: Prequential, **options: Any) -> Artifact:
    """:func:`export_artifact` of what ``prequential`` serves: its network, mixed with its
    linear model where it has one; ``options`` as export_artifact's."""
    linear = prequential.linear
    return export_artifact(
        prequential.learner.model,
        prequential.encoder,
        prequential.labels,
        prequential.learner.settings.task,
        linear=None if linear is None else linear.weights(),
        **options,
    )


def export_artifact(
    model: TabularNet,
    encoder: FeatureEncoder,
    labels: LabelMap,
    task: str,
    *,
    opset: int = 17,
    tolerance: float = 1e-4,
    parity_rows: int = 64,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    linear: LinearWeights | None = None,
) -> Artifact:
    """Export, check and describe one model (mixed with a classifier's ``linear`` model, as
    the worker scores, where given); ``meta["version"]`` is set when published."""
    start = time.perf_counter()
    numeric_slots, categorical_slots = encoder.numeric_slots, encoder.categorical_slots
    data = to_onnx(model, numeric_slots, categorical_slots, opset, linear)
    num, cat = _parity_batch(
        parity_rows, numeric_slots, categorical_slots, encoder.hash_buckets, seed
    )
    error = parity_error(data, model, num, cat, linear)
    if not error <= tolerance:  # also refuses NaN
        raise ExportError(f"torch↔onnxruntime parity error {error:.3g} > tolerance {tolerance:g}")
    now = time.time()
    n_outputs = int(model.class_mask.shape[0])
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": None,
        "created": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
        "created_unix": now,
        "task": task,
        "classes": list(labels.classes),
        "n_outputs": n_outputs,
        "hidden_dim": model.hidden_dim,
        "linear_share": None if linear is None else linear.share,  # the linear model's mix
        "linear_rate_shares": None if linear is None else [float(w) for w in linear.rate_shares],
        "hash_buckets": encoder.hash_buckets,
        "features": encoder.state_dict(),
        "inputs": {
            "num": {"datatype": "FP32", "shape": [-1, numeric_slots]},
            "cat": {"datatype": "INT64", "shape": [-1, categorical_slots]},
        },
        "outputs": {
            "prediction": {
                "datatype": "FP32",
                "shape": [-1] if task == "regression" else [-1, n_outputs],
            },
            "hidden": {"datatype": "FP32", "shape": [-1, model.hidden_dim]},
        },
        "sha256": sha256_hex(data),
        "parity_error": error,
        "parity": {"max_abs_error": error, "tolerance": tolerance, "rows": parity_rows},
        "onnx": {
            "file": "model.onnx",
            "bytes": len(data),
            "opset": opset,
            "exporter": f"torch.onnx TorchScript (dynamo=False), torch {torch.__version__}",
        },
        "export_seconds": round(time.perf_counter() - start, 4),
        **(extra or {}),
    }
    return Artifact(data, meta)
