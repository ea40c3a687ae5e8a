"""ReservoirBuffer: a uniform sample of everything seen, kept on the model's device.

Vitter's Algorithm R (1985): item t (0-based) enters while t < capacity, afterwards it replaces
slot j ~ U{0..t} when j < capacity, so every item seen so far is kept with equal probability.
Batches are inserted in one vectorised step that gives the same result as one-by-one insertion;
on a CPU with the compiled kernels (kernels/cpu/) one call into replay.c does the
inserts, with the same random draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

from streamlearn.kernels.cpu import binding

__all__ = ["PreparedRows", "ReservoirBuffer"]


@dataclass(frozen=True, slots=True)
class PreparedRows:
    """Rows to insert and the draws made for them (ReservoirBuffer.prepare)."""

    rows: tuple[np.ndarray, np.ndarray, np.ndarray]  # numeric, bucket ids, targets
    seen: int  # the reservoir's count the draws were made at
    compiled: bool  # inserted by the compiled call (else through add, which draws itself)
    drawn: np.ndarray | None  # the compiled call's draws (None: all rows find a free slot)


class ReservoirBuffer(binding.ReloadsKernelsWhenUnpickled):
    """Fixed-capacity reservoir of (num, cat, y) rows; seeded, device-resident."""

    def __init__(
        self,
        capacity: int,
        num_dim: int,
        cat_dim: int,
        y_dtype: torch.dtype,
        device: torch.device | str = "cpu",
        seed: int = 0,
        compiled: ModuleType | None = None,
    ) -> None:
        """``compiled``: the compiled kernels (the compiled backend's library), for inserts on
        the CPU."""
        self.capacity = capacity
        self.seen = 0
        self.num = torch.zeros((capacity, num_dim), dtype=torch.float32, device=device)
        self.cat = torch.zeros((capacity, cat_dim), dtype=torch.long, device=device)
        self.y = torch.zeros(capacity, dtype=y_dtype, device=device)
        self._rng = np.random.default_rng(seed)
        self._compiled = compiled if self.num.device.type == "cpu" else None
        self._y_dtype = self.y.numpy().dtype if self._compiled is not None else None

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def _draws(self, n: int) -> tuple[int, np.ndarray | None]:
        """(how many of the next n items find a free slot, the others' uniform draws from
        [0, their index]: None when all found one)."""
        fill = min(n, max(self.capacity - self.seen, 0))
        if fill == n:
            return fill, None
        return fill, self._rng.integers(0, np.arange(self.seen + fill, self.seen + n) + 1)

    def slots_for(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the batch, reservoir slots) for the next n items, last write wins."""
        fill, drawn = self._draws(n)
        positions, slots = np.arange(fill), np.arange(self.seen, self.seen + fill)
        if drawn is None:
            return positions, slots
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

    def add_rows(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray) -> None:
        """:meth:`add` for host arrays: one compiled call when they lie as the buffer keeps
        its rows (C-contiguous, its dtypes and widths), else through :meth:`add`."""
        self.insert(self.prepare(num, cat, y))

    def prepare(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray) -> PreparedRows:
        """:meth:`add_rows`' first half: the random draws for these rows, taken now (while
        something may still read the buffer); :meth:`insert` copies them in, next."""
        compiled = (
            self._compiled is not None and self.capacity > 0 and self._host_layout(num, cat, y)
        )
        # the C side derives the free slots itself
        drawn = self._draws(len(y))[1] if compiled else None
        return PreparedRows((num, cat, y), self.seen, compiled, drawn)

    def insert(self, prepared: PreparedRows) -> None:
        """:meth:`add_rows`' second half: the rows into the slots drawn by :meth:`prepare`."""
        num, cat, y = prepared.rows
        if prepared.seen != self.seen:
            raise RuntimeError("the reservoir changed between prepare and insert")
        library = self._compiled
        if not prepared.compiled or library is None:
            self.add(torch.from_numpy(num), torch.from_numpy(cat), torch.from_numpy(y))
            return
        drawn = prepared.drawn
        library.reservoir_insert(
            self.num.data_ptr(),
            self.cat.data_ptr(),
            self.y.data_ptr(),
            self.capacity,
            self.seen,
            self.num.shape[1],
            self.cat.shape[1],
            self.y.element_size(),
            num,
            cat,
            y,
            drawn,
        )
        self.seen += len(y)

    def _host_layout(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray) -> bool:
        return (
            num.dtype == np.float32
            and cat.dtype == np.int64
            and y.dtype == self._y_dtype
            and num.shape == (len(y), self.num.shape[1])
            and cat.shape == (len(y), self.cat.shape[1])
            and num.flags.c_contiguous
            and cat.flags.c_contiguous
            and y.flags.c_contiguous
        )

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
