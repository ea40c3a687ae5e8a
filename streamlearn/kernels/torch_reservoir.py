"""The replay reservoir's insert in torch: the reference form, on a CPU or a CUDA device.

Algorithm R for a batch of rows entering a reservoir of ``capacity`` slots that has seen
``seen`` items: row i is item seen + i; while that is below capacity it takes the free slot
seen + i, after that its draw j ~ U{0..seen + i} (made by the reservoir, core/replay.py), and
it is kept in slot j when j < capacity. Rows are written in batch order, so a later row
overwrites an earlier one drawn to the same slot, as one-by-one insertion would. The compiled
form (kernels/compiled.py, replay.c) writes the same rows.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Reservoir", "Row", "Rows", "TorchReservoir", "slots_written"]

# the reservoir's numeric [capacity, a] float32, bucket [capacity, c] int64 and target
# [capacity] tensors
Reservoir = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# a batch's numeric [n, a], bucket [n, c] and target [n] rows: host arrays or tensors
Row = np.ndarray | torch.Tensor
Rows = tuple[Row, Row, Row]


def slots_written(
    capacity: int, seen: int, n: int, drawn: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the batch, reservoir slots) that n rows write, each slot once (the last
    row drawn to it); ``drawn``: the draws of the rows that find no free slot (None: all do)."""
    fill = min(n, max(capacity - seen, 0))
    positions, slots = np.arange(fill), np.arange(seen, seen + fill)
    if drawn is None:
        return positions, slots
    kept = np.flatnonzero(drawn < capacity)
    positions = np.concatenate([positions, kept + fill])
    slots = np.concatenate([slots, drawn[kept]])
    if len(set(slots.tolist())) < len(slots):
        # Later items overwrite earlier ones in the same slot, as sequential insertion would.
        _, last = np.unique(slots[::-1], return_index=True)
        chosen = len(slots) - 1 - last
        positions, slots = positions[chosen], slots[chosen]
    return positions, slots


class TorchReservoir:
    """:class:`~streamlearn.kernels.backend.ReservoirInsert` as torch ops on the reservoir's
    device: a slice assignment while the rows fill free slots, else index_select/index_copy_
    (a fraction of advanced indexing's cost). Rows of other dtypes are cast to the
    reservoir's."""

    name = "torch"

    def insert(self, reservoir: Reservoir, seen: int, rows: Rows, drawn: np.ndarray | None) -> None:
        r_num, r_cat, r_y = reservoir
        num, cat, y = rows
        if isinstance(y, np.ndarray):
            num, cat, y = torch.from_numpy(num), torch.from_numpy(cat), torch.from_numpy(y)
        if drawn is None:  # still filling up: one run of free slots
            run = slice(seen, seen + len(y))
            r_num[run], r_cat[run], r_y[run] = num, cat, y
            return
        positions, slots = slots_written(r_y.shape[0], seen, len(y), drawn)
        if len(slots):
            src = torch.from_numpy(positions).to(num.device)
            dst = torch.from_numpy(slots).to(r_num.device)
            r_num.index_copy_(0, dst, num.index_select(0, src).to(r_num.dtype))
            r_cat.index_copy_(0, dst, cat.index_select(0, src))
            r_y.index_copy_(0, dst, y.index_select(0, src).to(r_y.dtype))
