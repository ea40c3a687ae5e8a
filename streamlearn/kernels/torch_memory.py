"""The error memory's compute in torch: the reference form, on a CPU or a CUDA device.

:class:`TorchMemory` compensates base predictions and stores labelled rows for an
:class:`~streamlearn.core.memory.error_memory.ErrorMemory` over either of its stores, through
the store's ``read`` and ``write``; the top-k ring's are :func:`topk_read` and
:func:`topk_write` here (the LSH sketch keeps its own). The compiled form
(``CompiledMemory`` in kernels/compiled.py) does the top-k ring's compensation and store on the
CPU in one call each, with the same arithmetic, and is tested against this one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from streamlearn.core.memory.error_memory import ErrorMemory, TopKStore

__all__ = [
    "Labelled",
    "Mirror",
    "TorchMemory",
    "as_tensor",
    "host",
    "ring_write",
    "topk_read",
    "topk_write",
    "unit_rows",
]


# (hidden rows, labels, base predictions) of a labelled batch: host arrays or tensors
Labelled = tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]
# (numeric ring, bucket ring, numeric rows, bucket rows): see ErrorMemory.update
Mirror = tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]


def as_tensor(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 on ``device``; a host float32 array, the usual input, is wrapped without a copy
    by ``from_numpy``, a third of the cost of ``as_tensor``."""
    if isinstance(array, np.ndarray) and array.dtype == np.float32 and device.type == "cpu":
        return torch.from_numpy(array)
    return torch.as_tensor(array, dtype=torch.float32, device=device)


def host(array: np.ndarray | torch.Tensor) -> np.ndarray:
    """A host array (labels and base predictions are built into rows on the host)."""
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def unit_rows(rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``F.normalize(rows, dim=1, eps=1e-8)``, bit for bit, in three ops instead of five
    (its ``torch.norm`` wrapper alone costs more than the arithmetic); written into ``out``
    when given, to skip a copy."""
    norm = torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min_(1e-8)
    return torch.div(rows, norm, out=out)


def ring_write(ring: torch.Tensor, cursor: int, rows: torch.Tensor) -> None:
    """Copy ``rows`` (at most ``len(ring)``) into ``ring`` from slot ``cursor`` on, wrapping
    to slot 0: one or two slice copies (converting dtype and device), no index tensor."""
    n, room = rows.shape[0], ring.shape[0] - cursor  # Tensor.__len__ is Python code
    if n <= room:  # the usual case: one run of slots, no view of the rows needed
        ring[cursor : cursor + n] = rows
    else:
        ring[cursor:] = rows[:room]
        ring[: n - room] = rows[room:]


def _nearest(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest similarities per row and their columns, in no particular order.

    On CPU numpy's introselect (``argpartition``) takes a third of ``torch.topk``'s time on
    these [batch, ring] matrices; among exactly tied similarities the two may pick different,
    equally valid neighbours.
    """
    if sim.device.type != "cpu":
        return torch.topk(sim, k, dim=1, sorted=False)
    n = sim.shape[1]
    idx = torch.from_numpy(np.argpartition(sim.numpy(), n - k, axis=1)[:, n - k :])
    return sim.gather(1, idx), idx


def topk_read(ring: TopKStore, keys: torch.Tensor) -> torch.Tensor:
    """``[ȳ ‖ ȳ_base]`` [B, 2W]: the stored values weighted by softmax(s/τ) over the ``k``
    nearest of the filled slots (every one for ``k`` = 0 or ≥ the slots filled) by cosine
    similarity s to unit ``keys``; the ring must hold at least one sample."""
    n = ring.filled
    stored, values = ring.full if n == ring.size else (ring.keys[:n].T, ring.values[:n])
    # s/τ [B, n] in one op: cosine similarities of unit keys, divided by the temperature
    sim = torch.addmm(ring.zero, keys, stored, beta=0.0, alpha=1.0 / ring.tau)
    if ring.k == 0 or ring.k >= n:  # every stored sample is a neighbour
        weight = torch.softmax(sim, dim=1)
    else:  # softmax over the k nearest, scattered into [B, n]: one matmul, no gather
        top, idx = _nearest(sim, ring.k)
        weight = torch.zeros_like(sim).scatter_(1, idx, torch.softmax(top, dim=1))
    return weight @ values


def topk_write(ring: TopKStore, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Write rows into the ring from its cursor on (only the newest ``size`` of a larger
    batch), advancing the cursor and the fill."""
    n = keys.shape[0]
    if n > ring.size:  # only the newest `size` rows would survive anyway
        keys, values, n = keys[-ring.size :], values[-ring.size :], ring.size
    ring_write(ring.keys, ring.cursor, keys)
    ring_write(ring.values, ring.cursor, values)
    ring.cursor = (ring.cursor + n) % ring.size
    ring.filled = min(ring.filled + n, ring.size)


class TorchMemory:
    """:class:`~streamlearn.kernels.backend.MemoryKernel` in torch ops, for either store, on
    the memory's device."""

    name = "torch"

    def compensate(
        self, memory: ErrorMemory, hidden: np.ndarray, base: np.ndarray
    ) -> tuple[np.ndarray, torch.Tensor]:
        keys = memory.keys(hidden)
        return self.compensate_with(memory, base, keys), keys

    def compensate_with(
        self, memory: ErrorMemory, base: np.ndarray | torch.Tensor, keys: torch.Tensor
    ) -> np.ndarray:
        """ŷ for unit ``keys``: probabilities clamped to [0, 1] and renormalised per row; the
        base prediction (a copy) while nothing is stored."""
        base_t = memory.values_of(base)
        out = self.corrected(memory, base_t, keys)
        if out is base_t:  # nothing stored: the base prediction unchanged (a copy)
            out = base_t.clone()
        elif not memory.regression:  # clamp, then renormalise; all-zero rows stay zero
            out.clamp_(0.0, 1.0)
            out.div_(out.sum(1, keepdim=True).clamp_min_(1e-12))
        return (out[:, 0] if memory.regression else out).cpu().numpy()

    @staticmethod
    def corrected(memory: ErrorMemory, base: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """ŷ_base + λ·y_err [B, W] before clamping; ``base`` itself while nothing is stored or
        λ = 0, its rows where nothing similar is stored."""
        if len(memory.storage) == 0 or memory.lam == 0.0:
            return base
        mean, found = memory.storage.read(keys)
        out = torch.addmm(base, mean, memory.mix, beta=1.0 - memory.lam * memory.gamma)
        return out if found is None else torch.where(found.unsqueeze(1), out, base)

    def store(
        self, memory: ErrorMemory, rows: Labelled, keys: torch.Tensor | None, mirror: Mirror | None
    ) -> np.ndarray:
        hidden, y, base = rows
        ring = memory.storage
        cursor = getattr(ring, "cursor", 0)  # the top-k ring's; the mirror is top-k only
        keys = memory.keys(hidden) if keys is None else keys
        values = self._rows(memory, y, base)
        if memory.store == "errors":
            w = memory.width
            keep = self._errors(memory, values[:, :w], values[:, w:])
            keys, values = keys[keep], values[keep]
            stored = keep.cpu().numpy()
        else:
            stored = np.ones(keys.shape[0], dtype=bool)
        if keys.shape[0]:
            ring.write(keys, values)
        if mirror is not None:
            ring_num, ring_cat, num, cat = mirror
            if memory.store == "errors":  # the rows it skipped are not in the ring
                num, cat = num[stored], cat[stored]
            n = min(len(num), len(ring_num))  # the ring kept only the newest `size` rows
            ring_write(ring_num, cursor, torch.from_numpy(num[len(num) - n :]))
            ring_write(ring_cat, cursor, torch.from_numpy(cat[len(cat) - n :]))
        return stored

    @staticmethod
    def _rows(
        memory: ErrorMemory, y: np.ndarray | torch.Tensor, base: np.ndarray | torch.Tensor
    ) -> torch.Tensor:
        """Stored values ``[y ‖ ŷ_base]`` [B, 2W], built on the host (y one-hot by indexing)
        and moved to the device in one copy: a few numpy ops instead of several torch ones."""
        labels = host(y)
        if memory.regression:
            target = labels.reshape(-1, 1)
        else:
            target = memory.one_hot[labels.astype(np.int64, copy=False)]
        rows = np.concatenate([target, host(base).reshape(len(target), -1)], axis=1)
        return as_tensor(rows, memory.device)

    @staticmethod
    def _errors(memory: ErrorMemory, target: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Rows worth storing under store="errors"; for regression, updates the memory's
        running mean absolute error."""
        if not memory.regression:
            return (target * base).sum(1) < 1.0 - memory.error_threshold
        error = (target - base).abs()[:, 0]
        batch = float(error.mean())
        memory.abs_error = batch if memory.writes == 0 else 0.9 * memory.abs_error + 0.1 * batch
        return error > memory.error_threshold * memory.abs_error
