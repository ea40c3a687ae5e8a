"""A classifier's linear model (core/linear.py) in numpy: the reference form of the compiled
kernels in kernels/cpu/linear.c.

The weights are one float32 array [numeric_slots + buckets + 1, W]: a row per numeric slot,
a row per categorical bucket (bucket 0, a missing value, stays zero), then the bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from streamlearn.core.linear import LinearModel
    from streamlearn.kernels.backend import LinearRows

__all__ = ["NumpyLinear"]


class NumpyLinear:
    """:class:`~streamlearn.kernels.backend.LinearKernel` in numpy."""

    name = "numpy"

    def predict(self, model: LinearModel, rows: LinearRows, active: int) -> np.ndarray:
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

    def learn(
        self,
        model: LinearModel,
        rows: LinearRows,
        active: int,
        target: np.ndarray,
        linear: np.ndarray,
    ) -> None:
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
