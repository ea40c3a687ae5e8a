"""Feature statistics in numpy: running standardisation (Chan et al.'s parallel update).

The reference form of the encoder's two kernels, for any width of rows; the serving tier runs
it (no compiled code needed there) and the compiled kernels are tested against it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLIP", "NumpyStatistics"]

CLIP = 8.0  # standardised values are clipped to ±CLIP


class NumpyStatistics:
    """:class:`~streamlearn.kernels.backend.FeatureStatistics` in numpy."""

    name = "numpy"

    def standardize(
        self, num: np.ndarray, used: int, count: np.ndarray, mean: np.ndarray, m2: np.ndarray
    ) -> np.ndarray:
        k = used
        std = np.sqrt(m2[:k] / np.maximum(count[:k] - 1, 1))
        std[std <= 1e-12] = 1.0
        block = (num[:, :k] - mean[:k]) / std
        np.clip(block, -CLIP, CLIP, out=block)  # ±inf too; NaN (missing) passes through ...
        np.copyto(block, 0.0, where=np.isnan(block))  # ... and becomes the mean
        z = np.zeros(num.shape, dtype=np.float32)
        z[:, :k] = block
        return z

    def observe(
        self, num: np.ndarray, used: int, count: np.ndarray, mean: np.ndarray, m2: np.ndarray
    ) -> int:
        x = num[:, :used]
        if not x.size:
            return 0
        # overflow is detected below and counted; numpy's warning would only add log noise
        with np.errstate(over="ignore", invalid="ignore"):
            present = ~np.isnan(x)
            if present.all():  # the usual batch: every named feature present in every row
                cols, n_b = slice(0, x.shape[1]), float(len(x))
                mean_b = x.sum(axis=0) / n_b
                m2_b = ((x - mean_b) ** 2).sum(axis=0)
            else:
                n_col = present.sum(axis=0)
                cols = np.flatnonzero(n_col)
                if not len(cols):
                    return 0
                x, n_b, seen = x[:, cols], n_col[cols], present[:, cols]
                mean_b = np.where(seen, x, 0.0).sum(axis=0) / n_b
                m2_b = (np.where(seen, x - mean_b, 0.0) ** 2).sum(axis=0)
            n_a, mean_a, m2_a = count[cols], mean[cols], m2[cols]
            total = n_a + n_b
            delta = mean_b - mean_a
            frac = n_b / total
            new_mean = mean_a + delta * frac
            new_m2 = m2_a + (m2_b + delta**2 * n_a * frac)
            fits = np.isfinite(new_m2)
            overflowed = 0
            if not fits.all():  # values near the float range overflow the variance: such a column
                # keeps its statistics through this batch (counted) instead of turning inf for good
                overflowed = int(np.count_nonzero(~fits))
                new_mean, new_m2, total = (
                    np.where(fits, new_mean, mean_a),
                    np.where(fits, new_m2, m2_a),
                    np.where(fits, total, n_a),
                )
            mean[cols] = new_mean
            m2[cols] = new_m2
            count[cols] = total
        return overflowed
