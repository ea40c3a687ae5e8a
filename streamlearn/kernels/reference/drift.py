"""The loss-deviation rule in numpy (batched): the reference form of the drift kernel.

The smoothed values equal a per-event loop's bit for bit (lfilter runs the recurrence in order);
the window's mean and spread come from cumulative sums, equal to the loop's to rounding.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from streamlearn.kernels.drift_state import DriftParams, DriftState

__all__ = ["NumpyDrift"]


class NumpyDrift:
    """:class:`~streamlearn.kernels.backend.DriftKernel` in numpy."""

    name = "numpy"

    def update(self, losses: np.ndarray, state: DriftState, params: DriftParams) -> list[int]:
        offsets = None
        x = losses
        if not np.isfinite(x).all():  # rare: keep the finite ones, remember where they were
            offsets = np.flatnonzero(np.isfinite(x))
            x = x[offsets]
        if not len(x):
            return []
        s = _smooth(x, state.smoothed, params.alpha)
        state.smoothed = float(s[-1])
        state.seen += len(s)
        fired: list[int] = []
        start = 0
        while (hit := _first_fire(s, start, state, params)) is not None:  # firings are rare
            _push_many(s[start:hit], state)
            fired.append(hit if offsets is None else int(offsets[hit]))
            state.quiet = params.cooldown
            state.filled = state.head = 0  # the window restarts
            start = hit + 1
        _push_many(s[start:], state)
        return fired


def _smooth(x: np.ndarray, smoothed: float | None, alpha: float) -> np.ndarray:
    """The EWMA of the batch. lfilter runs the recurrence in order, with the loop's own
    arithmetic, so the smoothed values (and the ring) do not depend on the batching."""
    c = 1.0 - alpha
    if smoothed is None:  # the first loss starts the EWMA as it is
        s, _ = lfilter([alpha], [1.0, -c], x[1:], zi=[c * x[0]])
        return np.concatenate((x[:1], s))
    return lfilter([alpha], [1.0, -c], x, zi=[c * smoothed])[0]


def _push_many(values: np.ndarray, state: DriftState) -> None:
    """Ring writes in event order (only the last ``window`` values can survive)."""
    ring = state.ring
    w, n = len(ring), len(values)
    state.filled = min(state.filled + n, w)
    if n > w:
        state.head = (state.head + n - w) % w
        values, n = values[-w:], w
    head = state.head
    split = min(n, w - head)
    ring[head : head + split] = values[:split]
    ring[: n - split] = values[split:]
    state.head = (head + n) % w


def _first_fire(s: np.ndarray, start: int, state: DriftState, params: DriftParams) -> int | None:
    """Index of the first event from ``start`` on that deviates, spending the cooldown first.

    Event j is tested against the last min(filled, window) values pushed before it: window
    sums are differences of cumulative sums over [ring, oldest first ‖ s[start:]], shifted by
    one smoothed value so that the variance does not cancel against the squared mean.
    """
    n, w = len(s), params.window
    quiet = min(state.quiet, n - start)
    state.quiet -= quiet
    filled, head = state.filled, state.head
    # the first event to test: past the cooldown, with min_samples (at least 1) values before it
    first = max(start + quiet, start + max(params.min_samples, 1) - filled)
    if first >= n:
        return None
    e0 = filled + first - start  # values pushed before the first tested event
    pad = max(w - e0, 0) + 1  # leading zeros: every window start is then a slice start
    shift = s[first]
    d = np.zeros(pad + filled + n - 1 - start)
    # the ring oldest first (head == filled until it is full), then the batch
    parts = (state.ring[head:filled], state.ring[:head], s[start:-1])
    np.subtract(np.concatenate(parts), shift, out=d[pad:])
    top, k = pad - 1 + e0, n - first  # cumsum[top]: all values before the first tested event
    m = w if e0 >= w else np.minimum(np.arange(e0, e0 + k), w)

    def window_mean(v: np.ndarray) -> np.ndarray:
        c = np.cumsum(v)
        return (c[top : top + k] - c[top - w : top - w + k]) / m

    mean, rise = window_mean(d), s[first:] - shift
    if not (rise > mean + params.min_rise).any():  # implied by the test below; usually settles it
        return None
    std = np.sqrt(np.maximum(window_mean(d * d) - mean * mean, 0.0))
    hits = np.flatnonzero(rise > mean + np.maximum(params.k * std, params.min_rise))
    return first + int(hits[0]) if len(hits) else None
