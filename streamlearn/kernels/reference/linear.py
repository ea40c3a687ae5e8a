"""A classifier's linear model (core/linear.py) in numpy: the reference form of the compiled
kernels in kernels/cpu/linear.c.

Each rate's weights are one float32 array [numeric_slots + buckets + 1, W]: a row per numeric
slot, a row per categorical bucket (bucket 0, a missing value, stays zero), then the bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from streamlearn.core.linear import LinearModel, LinearRates
    from streamlearn.kernels.backend import LinearRows

__all__ = ["NumpyLinear"]


class NumpyLinear:
    """:class:`~streamlearn.kernels.backend.LinearKernel` in numpy, rate by rate."""

    name = "numpy"

    def predict(
        self, rates: LinearRates, rows: LinearRows, active: int
    ) -> tuple[np.ndarray, np.ndarray]:
        each = np.stack([_predict(model, rows, active) for model in rates.models])
        mixed = np.float32(rates.shares[0]) * each[0]
        for share, own in zip(rates.shares[1:], each[1:], strict=True):
            mixed += np.float32(share) * own
        return each, mixed

    def learn(
        self,
        rates: LinearRates,
        rows: LinearRows,
        active: int,
        target: np.ndarray,
        each: np.ndarray,
    ) -> np.ndarray:
        n = len(target)
        rows_at, fade = np.arange(n), rates.discount**n
        loss = rates.loss.copy()
        for k, (model, own) in enumerate(zip(rates.models, each, strict=True)):
            hit = own[rows_at, target].astype(np.float64)
            loss[k] = fade * loss[k] - float(np.log(np.maximum(hit, 1e-7)).sum())
            _learn(model, rows, active, target, own)
        return loss


def _predict(model: LinearModel, rows: LinearRows, active: int) -> np.ndarray:
    """One rate's probabilities [B, W]."""
    (num, cat), weights = rows, model.weights
    linear = np.zeros((len(num), weights.shape[1]), dtype=np.float32)
    if active and len(num):
        logits = num @ weights[: num.shape[1], :active]
        logits += weights[-1, :active]
        if cat.shape[1]:
            logits += model.buckets[cat, :active].sum(axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        linear[:, :active] = logits / logits.sum(axis=1, keepdims=True)
    return linear


def _learn(
    model: LinearModel, rows: LinearRows, active: int, target: np.ndarray, linear: np.ndarray
) -> None:
    """One rate's SGD step in place."""
    (num, cat), weights, lr = rows, model.weights, np.float32(model.lr)
    step = linear[:, :active] * -lr
    step[np.arange(len(target)), target] += lr
    weights[: num.shape[1], :active] += num.T @ step
    weights[-1, :active] += step.sum(axis=0)
    if cat.shape[1]:
        flat = model.buckets.reshape(-1)  # a view: the bucket rows are contiguous
        at = (cat[:, :, None] * weights.shape[1] + np.arange(active)).ravel()
        np.add.at(flat, at, np.broadcast_to(step[:, None, :], (*cat.shape, active)).ravel())
        model.buckets[0] = 0.0
