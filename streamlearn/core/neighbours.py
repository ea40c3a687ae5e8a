"""NeighbourVote: the nearest recent labelled rows vote, mixed into a classifier's prediction.

A network learns a boundary globally and slowly; a vote of the k nearest recent rows follows a
concept that is local and moving (clusters that drift) and a low-dimensional boundary from its
first rows, where the network is still young (benchmarks/results/levers.md measured the vote on
the suite before it was built). Neither wins everywhere, so the vote is mixed in as the linear
model is (core/linear.py): a :class:`~streamlearn.core.hedge.Hedge` on both predictions'
prequential 0/1 losses gives the vote its share ``w``, and the chain's base prediction becomes
``(1 − w)·p + w·vote`` before the error memory compensates it.

The search is the error memory's top-k read (core/memory/compensation.py: memory.c's kernel
where it is installed, numpy elsewhere; serving replicas run the same read on the same arrays).
Rows are the standardised numeric slots in use, z; the ring holds keys ``[z, −|z|²/2]`` and
the query is ``[z, 1]``. The read ranks keys by their dot product with the unit query,
``(z_q·z_k − |z_k|²/2) / |[z_q, 1]|``, which for one query orders them as ``−|z_q − z_k|²/2``
does: Euclidean nearest first. A temperature of 10⁶ weighs the k chosen alike (a plain vote),
and values ``[one-hot y ‖ 0]`` with λ = γ = 1 make the read's compensation the vote itself.
Categorical features take no part (their hashed buckets have no distance).

Cost control: a vote that keeps losing once its ring is full (its share below 1 % for
``horizon`` rows; a vote over a part-filled ring is judged too early) retires, its ring emptied,
and costs nothing more until a detected drift brings it back with an empty ring and the evidence
at its prior (the rows after a drift are where it can help). A vote still in use keeps its rows
and evidence through a detection: its discounted evidence follows the change, and the old
concept's rows leave the window as the new one's arrive.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamlearn.core.hedge import Hedge
from streamlearn.core.memory.compensation import (
    FrozenMemory,
    TopKLookup,
    gated,
    kernels_available,
)
from streamlearn.kernels.cpu.binding import compensate_top_k, float32_rows, load
from streamlearn.settings import NeighbourSettings

__all__ = ["NeighbourVote"]

TEMPERATURE = 1e6  # the read's τ: softmax weights of the k nearest equal to float32 rounding
RETIRING_SHARE = 0.01  # a share below this for ``horizon`` labelled rows retires the vote


class NeighbourVote:
    """A ring of the last ``window`` labelled rows (their standardised numeric slots in use
    and class slots) and the vote's share of the prediction (see the module docstring)."""

    def __init__(self, settings: NeighbourSettings, width: int) -> None:
        self.k, self.window, self.width = settings.k, settings.window, width
        self.hedge = Hedge.from_settings(settings)
        self.patience = settings.horizon  # rows below RETIRING_SHARE (ring full) to retire
        self.active = 0  # numeric slots the keys span (the last column is −|z|²/2)
        self.keys = np.zeros((self.window, 1), dtype=np.float32)
        self.values = np.zeros((self.window, 2 * width), dtype=np.float32)  # [one-hot ‖ 0]
        self.stored = 0  # rows written since the ring was last emptied
        self.losing = 0  # labelled rows since its share fell below RETIRING_SHARE
        self.retired = False

    @property
    def filled(self) -> int:
        return min(self.stored, self.window)

    @property
    def share(self) -> float:
        """The vote's weight in the prediction (0 while retired or empty)."""
        return 0.0 if self.retired or not self.filled else self.hedge.weight

    def lookup(self) -> FrozenMemory | None:
        """The ring as a read-only memory whose compensation is the vote (None: no vote)."""
        n = self.filled
        if self.retired or not n:
            return None
        ring = TopKLookup(self.keys[:n], self.values[:n], self.k, TEMPERATURE)
        return FrozenMemory(ring, 1.0, 1.0, False, 1.0, compiled=kernels_available())

    def vote(self, z: np.ndarray, like: np.ndarray) -> np.ndarray | None:
        """The vote [B, W] for standardised rows ``z`` (their numeric slots in use), shaped as
        the prediction ``like``; None while there is none. Float32 rows of the ring's width go
        to memory.c's read straight from the ring (what :meth:`lookup`'s compensation calls,
        without the read-only memory's checks and copies around it: a young model's
        sub-batches are a row or two)."""
        self._widen(z.shape[1])
        n = self.filled
        if self.retired or not n or not len(z):
            return None
        rows = queries(z, self.active)
        if kernels_available() and float32_rows(like) and like.shape[1] == self.width:
            ring = (self.keys.ctypes.data, self.values.ctypes.data, n)
            vote, _ = compensate_top_k(
                load(), ring, self.k, TEMPERATURE, 1.0, 1.0, False, rows, like
            )
            return vote
        lookup = self.lookup()  # numpy's read, or the read-only memory's error
        assert lookup is not None
        return lookup.compensate(rows, like)

    def mix(self, prediction: np.ndarray, vote: np.ndarray | None) -> np.ndarray:
        """``prediction`` with the vote mixed in by its share."""
        return prediction if vote is None else gated(prediction, vote, self.share)

    def learn(
        self, z: np.ndarray, target: np.ndarray, prediction: np.ndarray, vote: np.ndarray | None
    ) -> None:
        """Labelled rows (class slots ``target``) after :meth:`vote`: the share learns from
        both predictions' losses, then the rows join the ring (unless retired)."""
        if self.retired or not len(target):
            return
        if vote is not None:
            self.hedge.update(target, prediction, vote)
            losing = self.hedge.weight < RETIRING_SHARE and self.filled == self.window
            self.losing = self.losing + len(target) if losing else 0
            if self.losing >= self.patience:
                self.retired = True
                self.stored = 0
                return
        self._write(z, target)

    def on_drift(self) -> None:
        """A detected drift: a retired vote comes back (ring empty, evidence at its prior);
        one in use goes on as it is."""
        if self.retired:
            self.stored = self.losing = 0
            self.retired = False
            self.hedge.restart()

    def _widen(self, slots: int) -> None:
        """Keys spanning ``slots`` numeric slots (more features in use: zero columns, the
        standardised value of a slot a row never set)."""
        if slots <= self.active:
            return
        keys = np.zeros((self.window, slots + 1), dtype=np.float32)
        keys[:, : self.active] = self.keys[:, : self.active]
        keys[:, slots] = self.keys[:, self.active]
        self.keys, self.active = keys, slots

    def _write(self, z: np.ndarray, target: np.ndarray) -> None:
        """The rows into the ring at its cursor, oldest replaced first."""
        self._widen(z.shape[1])
        rows = z[-self.window :, : self.active].astype(np.float32)
        labels = np.asarray(target[-self.window :], dtype=np.int64)
        norms = -0.5 * (rows * rows).sum(axis=1)
        start, done = self.stored % self.window, 0
        while done < len(rows):  # at most two runs of slots: to the ring's end, then from 0
            run = min(len(rows) - done, self.window - start)
            part = slice(done, done + run)
            self.keys[start : start + run, : self.active] = rows[part]
            self.keys[start : start + run, self.active] = norms[part]
            values = self.values[start : start + run]
            values[:] = 0.0
            values[np.arange(run), labels[part]] = 1.0
            done, start = done + run, 0
        self.stored += len(target)

    def state_dict(self) -> dict[str, Any]:
        n = self.filled
        return {
            "keys": self.keys[:n].copy(),
            "labels": self.values[:n, : self.width].argmax(axis=1),
            "active": self.active,
            "stored": self.stored,
            "losing": self.losing,
            "retired": self.retired,
            "hedge": self.hedge.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        keys = np.asarray(state["keys"], dtype=np.float32)
        labels = np.asarray(state["labels"], dtype=np.int64)
        active, stored = int(state["active"]), int(state["stored"])
        n = min(stored, self.window)
        if keys.shape != (n, active + 1) or labels.shape != (n,):
            raise ValueError(f"neighbour ring of {keys.shape} / {labels.shape} does not fit")
        if n and (labels.min() < 0 or labels.max() >= self.width):
            raise ValueError(f"neighbour labels outside the {self.width} class slots")
        self.active, self.stored = active, stored
        self.keys = np.zeros((self.window, active + 1), dtype=np.float32)
        self.keys[:n] = keys
        self.values[:] = 0.0
        self.values[np.arange(n), labels] = 1.0
        self.losing, self.retired = int(state["losing"]), bool(state["retired"])
        self.hedge.load_state_dict(state["hedge"])


def queries(z: np.ndarray, active: int) -> np.ndarray:
    """The read's query rows ``[z, 1]`` over the first ``active`` slots (float32)."""
    out = np.ones((len(z), active + 1), dtype=np.float32)
    out[:, :active] = z[:, :active]
    return out
