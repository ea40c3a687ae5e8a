"""LossDeviationDetector: drift when the smoothed loss leaves its recent range (after TAME).

TAME (task-aware mixture of experts, see seed-abstracts) detects a task shift from a deviation
of the loss. Here the loss is smoothed by an EWMA, s_t = α·l_t + (1−α)·s_{t−1}; a window of the
last W smoothed values gives mean μ and std σ, and drift fires when s_t > μ + max(k·σ, δ):
the floor δ (``min_rise``, in loss units) keeps a well-learned concept, whose smoothed loss
barely moves, from firing on small bumps (measured on agrawal-drift: δ = 0.2 turns eleven
detections into the two true drifts and one more). After a detection the window restarts (the new
concept sets the next baseline) and a cooldown passes before the next detection can fire.

With the compiled kernels (learn/native.py; the pipeline passes them where the learner's step is
compiled) one call into drift.c runs the same rule as a per-event loop; the smoothed
values are the same bit for bit, the window's mean and spread agree to rounding.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from scipy.signal import lfilter

from streamlearn.kernels.cpu import binding as native

__all__ = ["LossDeviationDetector"]

# drift.c's counters, in this order: window filled, ring head, cooldown left, losses
# seen, whether the EWMA has a value
_COUNTERS = ("filled", "head", "quiet", "seen", "has_value")
_HAS_VALUE = _COUNTERS.index("has_value")


def _counter(name: str, doc: str) -> property:
    """An int attribute kept in the detector's counters array."""
    index = _COUNTERS.index(name)

    def get(self: LossDeviationDetector) -> int:
        return int(self._counters[index])

    def put(self: LossDeviationDetector, value: int) -> None:
        self._counters[index] = value

    return property(get, put, doc=doc)


class LossDeviationDetector(native.UsesKernels):
    """EWMA-smoothed loss against mean + k·std of its recent window, with a cooldown.

    >>> import numpy as np
    >>> det = LossDeviationDetector(alpha=0.1, window=200, k=4, cooldown=100, min_samples=100)
    >>> rng = np.random.default_rng(0)
    >>> losses = np.concatenate([rng.normal(0.2, 0.05, 1000), rng.normal(0.9, 0.05, 500)])
    >>> det.update(losses)
    [1000]
    """

    def __init__(
        self,
        alpha: float = 0.02,
        window: int = 500,
        k: float = 4.0,
        cooldown: int = 1000,
        min_samples: int = 300,
        min_rise: float = 0.0,
        native: ctypes.CDLL | None = None,
    ) -> None:
        """``native``: the compiled library of learn/native.py, for :meth:`update`."""
        self.alpha = alpha
        self.window = window
        self.k = k
        self.cooldown = cooldown
        self.min_samples = min(min_samples, window)
        self.min_rise = min_rise
        self._ring = np.zeros(window)
        # the counters and the EWMA live in arrays that drift.c updates in place
        self._counters = np.zeros(len(_COUNTERS), dtype=np.int64)
        self._value = np.zeros(1)
        self._native = native

    _filled = _counter("filled", "values in the window")
    _head = _counter("head", "the ring slot written next")
    _quiet = _counter("quiet", "events left in the cooldown")
    seen = _counter("seen", "finite losses seen")

    @property
    def _smoothed(self) -> float | None:
        return float(self._value[0]) if self._counters[_HAS_VALUE] else None

    @_smoothed.setter
    def _smoothed(self, value: float | None) -> None:
        self._counters[_HAS_VALUE] = value is not None
        self._value[0] = 0.0 if value is None else value

    @property
    def smoothed(self) -> float | None:
        """The current EWMA of the loss (None before the first loss)."""
        return self._smoothed

    def _restart_window(self) -> None:
        self._filled = self._head = 0

    def _smooth(self, x: np.ndarray) -> np.ndarray:
        """The EWMA of the batch. lfilter runs the recurrence in order, with the loop's own
        arithmetic, so the smoothed values (and the ring) do not depend on the batching."""
        c = 1.0 - self.alpha
        if self._smoothed is None:  # the first loss starts the EWMA as it is
            s, _ = lfilter([self.alpha], [1.0, -c], x[1:], zi=[c * x[0]])
            return np.concatenate((x[:1], s))
        return lfilter([self.alpha], [1.0, -c], x, zi=[c * self._smoothed])[0]

    def _push_many(self, values: np.ndarray) -> None:
        """Ring writes in event order (only the last ``window`` values can survive)."""
        w, n = self.window, len(values)
        self._filled = min(self._filled + n, w)
        if n > w:
            self._head = (self._head + n - w) % w
            values, n = values[-w:], w
        head = self._head
        split = min(n, w - head)
        self._ring[head : head + split] = values[:split]
        self._ring[: n - split] = values[split:]
        self._head = (head + n) % w

    def _first_fire(self, s: np.ndarray, start: int) -> int | None:
        """Index of the first event from ``start`` on that deviates, spending the cooldown first.

        Event j is tested against the last min(filled, window) values pushed before it: window
        sums are differences of cumulative sums over [ring, oldest first ‖ s[start:]], shifted by
        one smoothed value so that the variance does not cancel against the squared mean.
        """
        n, w = len(s), self.window
        quiet = min(self._quiet, n - start)
        self._quiet -= quiet
        filled, head = self._filled, self._head
        # the first event to test: past the cooldown, with min_samples (at least 1) values before it
        first = max(start + quiet, start + max(self.min_samples, 1) - filled)
        if first >= n:
            return None
        e0 = filled + first - start  # values pushed before the first tested event
        pad = max(w - e0, 0) + 1  # leading zeros: every window start is then a slice start
        shift = s[first]
        d = np.zeros(pad + filled + n - 1 - start)
        # the ring oldest first (head == filled until it is full), then the batch
        parts = (self._ring[head:filled], self._ring[:head], s[start:-1])
        np.subtract(np.concatenate(parts), shift, out=d[pad:])
        top, k = pad - 1 + e0, n - first  # cumsum[top]: all values before the first tested event
        m = w if e0 >= w else np.minimum(np.arange(e0, e0 + k), w)

        def window_mean(v: np.ndarray) -> np.ndarray:
            c = np.cumsum(v)
            return (c[top : top + k] - c[top - w : top - w + k]) / m

        mean, rise = window_mean(d), s[first:] - shift
        if not (rise > mean + self.min_rise).any():  # implied by the test below; usually settles it
            return None
        std = np.sqrt(np.maximum(window_mean(d * d) - mean * mean, 0.0))
        hits = np.flatnonzero(rise > mean + np.maximum(self.k * std, self.min_rise))
        return first + int(hits[0]) if len(hits) else None

    def update(self, losses: np.ndarray) -> list[int]:
        """Offsets into ``losses`` where drift fired; non-finite losses are skipped entirely."""
        x = np.asarray(losses, dtype=np.float64).ravel()
        if self._native is not None:
            return self._update_compiled(np.ascontiguousarray(x))
        offsets = None
        if not np.isfinite(x).all():  # rare: keep the finite ones, remember where they were
            offsets = np.flatnonzero(np.isfinite(x))
            x = x[offsets]
        if not len(x):
            return []
        s = self._smooth(x)
        self._smoothed = float(s[-1])
        self.seen += len(s)
        fired: list[int] = []
        start = 0
        while (hit := self._first_fire(s, start)) is not None:  # firings are rare
            self._push_many(s[start:hit])
            fired.append(hit if offsets is None else int(offsets[hit]))
            self._quiet = self.cooldown
            self._restart_window()
            start = hit + 1
        self._push_many(s[start:])
        return fired

    def _update_compiled(self, x: np.ndarray) -> list[int]:
        """:meth:`update` in one call into drift.c (non-finite losses skipped there)."""
        assert self._native is not None
        fired = np.empty(len(x), dtype=np.int32)
        count = self._native.drift_update(
            native.address(x),
            len(x),
            native.address(self._ring),
            self.window,
            self.alpha,
            self.k,
            self.min_samples,
            self.min_rise,
            self.cooldown,
            native.address(self._counters),
            native.address(self._value),
            native.address(fired),
        )
        return fired[:count].tolist()

    def state_dict(self) -> dict[str, Any]:
        """The ring's sum and sum of squares are derived from it (kept for older readers)."""
        window = self._ring[: self._filled]
        return {
            "ring": self._ring.tolist(),
            "filled": self._filled,
            "head": self._head,
            "sum": float(window.sum()),
            "sumsq": float((window * window).sum()),
            "smoothed": self._smoothed,
            "quiet": self._quiet,
            "seen": self.seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ring = np.array(state["ring"], dtype=np.float64)  # a copy of its own, C-contiguous
        if ring.shape != (self.window,):
            raise ValueError(f"detector state: a ring of {ring.shape}, not ({self.window},)")
        self._ring = ring
        self._filled, self._head = int(state["filled"]), int(state["head"])
        self._smoothed = state["smoothed"]
        self._quiet, self.seen = int(state["quiet"]), int(state["seen"])
