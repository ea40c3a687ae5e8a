"""ReservoirBuffer: a uniform sample of everything seen, kept on the model's device.

Vitter's Algorithm R (1985): item t (0-based) enters while t < capacity, afterwards it replaces
slot j ~ U{0..t} when j < capacity, so every item seen so far is kept with equal probability.
Batches are inserted in one vectorised step that gives the same result as one-by-one insertion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["ReservoirBuffer"]


class ReservoirBuffer:
    """Fixed-capacity reservoir of (num, cat, y) rows; seeded, device-resident."""

    def __init__(
        self,
        capacity: int,
        num_dim: int,
        cat_dim: int,
        y_dtype: torch.dtype,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        self.capacity = capacity
        self.seen = 0
        self.num = torch.zeros((capacity, num_dim), dtype=torch.float32, device=device)
        self.cat = torch.zeros((capacity, cat_dim), dtype=torch.long, device=device)
        self.y = torch.zeros(capacity, dtype=y_dtype, device=device)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def slots_for(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the batch, reservoir slots) for the next n items, last write wins."""
        fill = min(n, max(self.capacity - self.seen, 0))  # items that find a free slot
        positions, slots = np.arange(fill), np.arange(self.seen, self.seen + fill)
        if fill == n:
            return positions, slots
        t = np.arange(self.seen + fill, self.seen + n)
        drawn = self._rng.integers(0, t + 1)
        kept = np.flatnonzero(drawn < self.capacity)
        positions = np.concatenate([positions, kept + fill])
        slots = np.concatenate([slots, drawn[kept]])
        if len(set(slots.tolist())) < len(slots):
            # Later items overwrite earlier ones in the same slot, as sequential insertion would.
            _, last = np.unique(slots[::-1], return_index=True)
            chosen = len(slots) - 1 - last
            positions, slots = positions[chosen], slots[chosen]
        return positions, slots

    def add(self, num: torch.Tensor, cat: torch.Tensor, y: torch.Tensor) -> None:
        if self.capacity == 0:
            self.seen += len(y)
            return
        if self.seen + len(y) <= self.capacity:  # still filling up: one run of free slots
            run = slice(self.seen, self.seen + len(y))
            self.num[run], self.cat[run], self.y[run] = num, cat, y
            self.seen += len(y)
            return
        positions, slots = self.slots_for(len(y))
        self.seen += len(y)
        if len(slots):  # index_select / index_copy_: a fraction of advanced indexing's cost
            src = torch.from_numpy(positions).to(num.device)
            dst = torch.from_numpy(slots).to(self.num.device)
            self.num.index_copy_(0, dst, num.index_select(0, src).to(self.num.dtype))
            self.cat.index_copy_(0, dst, cat.index_select(0, src))
            self.y.index_copy_(0, dst, y.index_select(0, src).to(self.y.dtype))

    def clear(self) -> None:
        """Forget every row (after a drift the old concept's labels may be wrong)."""
        self.seen = 0

    def draw(self, k: int) -> np.ndarray:
        """Positions of k rows drawn uniformly with replacement from what the reservoir holds."""
        return self._rng.integers(0, len(self), size=k)

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k rows drawn uniformly with replacement from what the reservoir holds."""
        idx = torch.from_numpy(self.draw(k)).to(self.num.device)
        return (
            self.num.index_select(0, idx),
            self.cat.index_select(0, idx),
            self.y.index_select(0, idx),
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "num": self.num,
            "cat": self.cat,
            "y": self.y,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.num.copy_(state["num"])
        self.cat.copy_(state["cat"])
        self.y.copy_(state["y"])
        self._rng.bit_generator.state = state["rng"]
