"""ReservoirBuffer: a uniform sample of everything seen, kept on the model's device.

Vitter's Algorithm R (1985): item t (0-based) enters while t < capacity, afterwards it replaces
slot j ~ U{0..t} when j < capacity, so every item seen so far is kept with equal probability.
The reservoir is its tensors, its count and its generator: it makes a batch's draws
(kernels/draws.py: numpy's Generator.integers, in one compiled call where it can) and hands
the rows to the insert kernel it was given (kernels/torch_reservoir.py, or the compiled form
in kernels/compiled.py), which writes them in one vectorised step with the result of
one-by-one insertion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from streamlearn.kernels.compiled import reloaded_reservoir
from streamlearn.kernels.draws import uniform_below, uniform_through
from streamlearn.kernels.torch_reservoir import Row, Rows, TorchReservoir

if TYPE_CHECKING:
    from streamlearn.kernels.backend import ReservoirInsert

__all__ = ["PreparedRows", "ReservoirBuffer"]


@dataclass(slots=True)  # not frozen: a frozen one costs three times as much to make
class PreparedRows:
    """Rows to insert and the draws made for them (ReservoirBuffer.prepare)."""

    rows: Rows  # numeric, bucket ids, targets: host arrays or tensors
    seen: int  # the reservoir's count the draws were made at
    drawn: np.ndarray | None  # the draws of the rows that find no free slot (None: all do)


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
        kernel: ReservoirInsert | None = None,
    ) -> None:
        """``kernel``: the inserts (the backend's ``reservoir``; default: the torch form,
        which runs on any device)."""
        self.capacity = capacity
        self.seen = 0
        self.num = torch.zeros((capacity, num_dim), dtype=torch.float32, device=device)
        self.cat = torch.zeros((capacity, cat_dim), dtype=torch.long, device=device)
        self.y = torch.zeros(capacity, dtype=y_dtype, device=device)
        self._rng = np.random.default_rng(seed)
        self.kernel = kernel if kernel is not None else TorchReservoir()

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickles from before the kernel was passed in hold a flag, ``_compiled`` (earlier
        ``_native``), for the compiled inserts: those again where they can be had."""
        if "kernel" not in state:
            used = state.pop("_compiled", state.pop("_native", False))
            state.pop("_y_dtype", None)
            state["kernel"] = reloaded_reservoir() if used else TorchReservoir()
        self.__dict__.update(state)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def _draws(self, n: int) -> np.ndarray | None:
        """Uniform draws from [0, their index] for those of the next n items that find no free
        slot (None when all find one)."""
        free = max(self.capacity - self.seen, 0)
        if n <= free:
            return None
        return uniform_through(self._rng, self.seen + free, n - free)

    def add(self, num: Row, cat: Row, y: Row) -> None:
        """Insert a batch's rows (host arrays or tensors on any device): :meth:`prepare`, then
        :meth:`insert`."""
        self.insert(self.prepare(num, cat, y))

    def prepare(self, num: Row, cat: Row, y: Row) -> PreparedRows:
        """:meth:`add`'s first half: the random draws for these rows, taken now (while
        something may still read the buffer); :meth:`insert` copies them in, next."""
        drawn = self._draws(len(y)) if self.capacity else None
        return PreparedRows((num, cat, y), self.seen, drawn)

    def insert(self, prepared: PreparedRows) -> None:
        """:meth:`add`'s second half: the rows into the slots drawn by :meth:`prepare`."""
        if prepared.seen != self.seen:
            raise RuntimeError("the reservoir changed between prepare and insert")
        if self.capacity:
            self.kernel.insert(
                (self.num, self.cat, self.y), self.seen, prepared.rows, prepared.drawn
            )
        self.seen += len(prepared.rows[2])

    def clear(self) -> None:
        """Forget every row (after a drift the old concept's labels may be wrong)."""
        self.seen = 0

    def draw(self, k: int) -> np.ndarray:
        """Positions of k rows drawn uniformly with replacement from what the reservoir holds."""
        return uniform_below(self._rng, len(self), k)

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
