"""ErrorMemory: ReLoop2's fast, non-parametric error compensation beside the slow model.

ReLoop2 (Cai et al., KDD'23) keys recent labelled samples by the model's last hidden
representation h and keeps, per sample, the true label y and the base prediction ŷ_base made
before learning from it. A query retrieves similar stored samples with weights
a_i = softmax(s_i / τ) over their similarities s_i, forms ȳ = Σ a_i·y_i and
ȳ_base = Σ a_i·ŷ_base,i, and corrects the base prediction::

    y_err = γ·(ȳ − ŷ_base) + (1 − γ)·(ȳ − ȳ_base)
    ŷ     = ŷ_base + λ·y_err          (class probabilities clamped to [0, 1], renormalised)

For classification y is one-hot over the model's class slots and the correction is per class;
for regression it is on the value. Two stores, same interface:

- :class:`TopKStore` — an exact top-k by cosine similarity over a ring buffer of the most
  recent ``size`` samples (one [B, H] × [H, size] product and ``torch.topk`` per batch);
- :class:`LSHStore` — the paper's sketch: ``tables`` arrays of 2^``bits`` buckets addressed by
  the signs of random hyperplane projections of h (SimHash), each bucket holding the count and
  the sums of y, ŷ_base and the unit key. A query reads one bucket per table (O(1) in the
  number of stored samples); a bucket's similarity is the cosine between the query and the
  bucket's mean key, so the softmax runs over the ``tables`` colliding buckets, each standing
  for the mean of the samples that collided with the query there.

Both are bounded, live on the model's device, work on whole batches, and export their whole
state as plain numpy arrays and scalars (:meth:`ErrorMemory.state_dict`) so it can travel to
serving replicas. Keys go stale as the model trains; the reset rule is in
:class:`MemoryStage` (see DESIGN.md, "Error memory").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch

from streamlearn.kernels.torch_memory import (
    Mirror,
    TorchMemory,
    as_tensor,
    topk_read,
    topk_write,
    unit_rows,
)

if TYPE_CHECKING:
    from streamlearn.kernels.backend import MemoryKernel

__all__ = ["ErrorMemory", "LSHStore", "MemoryStore", "TopKStore"]

Kind = Literal["lsh", "topk"]
REFERENCE = TorchMemory()  # the torch form: any store, any device


class MemoryStore(Protocol):
    """Where samples live and how they are retrieved; tensors on one device.

    Values are rows ``[y ‖ ŷ_base]`` of width 2W; ``read`` returns their similarity-weighted
    mean ``[ȳ ‖ ȳ_base]`` [B, 2W] and which rows found anything similar [B] (None: all did).
    """

    def __len__(self) -> int: ...

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> None: ...

    def read(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def clear(self) -> None: ...

    def arrays(self) -> dict[str, Any]: ...

    def load_arrays(self, state: dict[str, Any]) -> None: ...


class TopKStore:
    """Exact top-k cosine retrieval over a ring buffer of the last ``size`` samples: the
    ring's state; its reads and writes are the memory's kernel's (the torch form's
    :func:`~streamlearn.kernels.torch_memory.topk_read` and ``topk_write``).

    ``k`` = 0 (or ≥ the samples held) weights every stored sample by softmax(s/τ): one matmul
    and no selection, the cheapest read.
    """

    def __init__(
        self, size: int, hidden_dim: int, width: int, k: int, tau: float, device: torch.device
    ) -> None:
        self.size, self.k, self.tau, self.width = size, k, tau, width
        self.keys = torch.zeros((size, hidden_dim), device=device)
        self.values = torch.zeros((size, 2 * width), device=device)
        self.zero = torch.zeros(1, device=device)
        self.full = (self.keys.T, self.values)  # read views of a full ring, made once
        self.filled = 0
        self.cursor = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        for old in ("_zero", "_full"):  # pickles of releases before the split
            if old in state:
                state[old[1:]] = state.pop(old)
        self.__dict__.update(state)

    def __len__(self) -> int:
        return self.filled

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        topk_write(self, keys, values)

    def read(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return topk_read(self, keys), None  # callers read only a non-empty store

    def clear(self) -> None:
        self.filled = self.cursor = 0

    def order(self) -> torch.Tensor:
        """Filled ring positions, oldest first."""
        n = self.filled
        return (torch.arange(n, device=self.keys.device) + (self.cursor - n)) % self.size

    def arrays(self) -> dict[str, Any]:
        order, w = self.order(), self.width
        return {
            "keys": self.keys[order].cpu().numpy(),
            "y": self.values[order, :w].cpu().numpy(),
            "base": self.values[order, w:].cpu().numpy(),
        }

    def load_arrays(self, state: dict[str, Any]) -> None:
        self.clear()
        device = self.keys.device
        keys = as_tensor(state["keys"], device).view(-1, self.keys.shape[1])
        y = as_tensor(state["y"], device).view(-1, self.width)
        base = as_tensor(state["base"], device).view(-1, self.width)
        if not len(keys) == len(y) == len(base):
            raise ValueError("memory state: keys, y and base differ in length")
        self.write(keys, torch.cat([y, base], dim=1))


class LSHStore:
    """ReLoop2's sketch: ``tables`` × 2^``bits`` buckets of sums addressed by SimHash of h.

    A bucket row holds ``[count ‖ Σ key ‖ Σ y ‖ Σ ŷ_base]``; with ``decay`` < 1 a sample's
    weight falls by that factor per later sample (an exponential window). Reads only use
    ratios (means and cosines), so the decay is applied lazily: new rows are written with a
    growing weight and the table is rescaled once that weight gets large, not on every write.
    """

    def __init__(
        self,
        tables: int,
        bits: int,
        hidden_dim: int,
        width: int,
        tau: float,
        device: torch.device,
        seed: int = 0,
        decay: float = 1.0,
    ) -> None:
        self.tables, self.bits, self.tau, self.decay = tables, bits, tau, decay
        self.hidden_dim, self.width = hidden_dim, width
        generator = torch.Generator().manual_seed(seed)
        self.planes = torch.randn((hidden_dim, tables * bits), generator=generator).to(device)
        # bits → bucket: one matmul with the block-diagonal powers of two, plus table offsets
        powers = torch.zeros((tables * bits, tables))
        for t in range(tables):
            powers[t * bits : (t + 1) * bits, t] = 2.0 ** torch.arange(bits)
        self._powers = powers.to(device)
        self._offset = (torch.arange(tables) * float(1 << bits)).to(device)
        self.table = torch.zeros((tables << bits, 1 + hidden_dim + 2 * width), device=device)
        self.stored = 0
        self._weight = 1.0  # weight of the next written sample (lazy decay)

    def __len__(self) -> int:
        return self.stored

    def buckets(self, keys: torch.Tensor) -> torch.Tensor:
        """Flat bucket index [B, tables]: one bucket per table, from the projection signs."""
        signs = (keys @ self.planes > 0).float()
        return torch.addmm(self._offset, signs, self._powers).long()

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        n = len(keys)
        rows = torch.cat([torch.ones((n, 1), device=keys.device), keys, values], dim=1)
        if self.decay < 1.0:  # sample j of the batch gets weight w·decay^-(j+1)
            growth = self.decay ** -torch.arange(1, n + 1, device=keys.device, dtype=rows.dtype)
            rows = rows * (self._weight * growth).unsqueeze(1)
            self._weight *= self.decay**-n
            if self._weight > 1e12:  # rescale before float32 runs out of range
                self.table.div_(self._weight)
                self._weight = 1.0
        idx = self.buckets(keys).reshape(-1)  # sample-major: [s0t0, s0t1, ..., s1t0, ...]
        self.table.index_add_(0, idx, rows.repeat_interleave(self.tables, dim=0))
        self.stored += n

    def read(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = self.table[self.buckets(keys)]  # [B, T, 1 + H + 2W]
        count, key_sum = rows[:, :, 0], rows[:, :, 1 : 1 + self.hidden_dim]
        hit = count > 0
        # cos(q, mean key) = q·Σkey / |Σkey| for a unit query
        sim = torch.bmm(key_sum, keys.unsqueeze(2)).squeeze(2)
        sim = sim / key_sum.norm(dim=2).clamp_min(1e-8)
        weight = torch.softmax(sim.masked_fill(~hit, -math.inf) / self.tau, dim=1)
        weight = weight.nan_to_num(0.0) / count.clamp_min(1e-30)  # mean per bucket
        mean = torch.bmm(weight.unsqueeze(1), rows[:, :, 1 + self.hidden_dim :]).squeeze(1)
        return mean, hit.any(1)

    def clear(self) -> None:
        self.table.zero_()
        self.stored = 0
        self._weight = 1.0

    def arrays(self) -> dict[str, Any]:
        """Bucket sums scaled so the newest sample weighs 1 (decay applied)."""
        table, h = (self.table / self._weight).cpu().numpy(), self.hidden_dim
        return {
            "planes": self.planes.cpu().numpy(),
            "count": table[:, 0].copy(),
            "key_sum": table[:, 1 : 1 + h].copy(),
            "y_sum": table[:, 1 + h : 1 + h + self.width].copy(),
            "base_sum": table[:, 1 + h + self.width :].copy(),
            "stored": self.stored,
        }

    def load_arrays(self, state: dict[str, Any]) -> None:
        device = self.table.device
        planes = as_tensor(state["planes"], device)
        parts = [
            as_tensor(state[name], device).view(len(self.table), -1)
            for name in ("count", "key_sum", "y_sum", "base_sum")
        ]
        table = torch.cat(parts, dim=1)
        if planes.shape != self.planes.shape or table.shape != self.table.shape:
            raise ValueError(
                f"memory state does not fit tables={self.tables}, bits={self.bits}, "
                f"hidden={self.hidden_dim}, width={self.width}"
            )
        self.planes.copy_(planes)
        self.table.copy_(table)
        self.stored = int(state["stored"])
        self._weight = 1.0


class ErrorMemory:
    """Error memory over one store: compensates base predictions, learns from labelled rows.

    ``width`` is the number of class slots (ignored for regression). Labels are class slots
    (int) for classification and values for regression; base predictions are the model's
    probabilities [B, width] or values [B]. ``store="errors"`` keeps only rows whose base error
    exceeds ``error_threshold`` (1 − p(true class); for regression, that many times the running
    mean absolute error). Defaults match :class:`~streamlearn.settings.MemorySettings`.

    The memory is state (its store, configuration and counters); what it computes per batch,
    :meth:`compensate_keyed` and :meth:`update`, is its ``kernel``'s
    (:class:`~streamlearn.kernels.backend.MemoryKernel`: the torch form, or the compiled one
    for a top-k ring on the CPU).

    >>> memory = ErrorMemory(hidden_dim=2, width=2, kind="topk", lam=1.0, gamma=1.0, k=1)
    >>> hidden = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> memory.update(hidden, np.array([1]), np.array([[0.9, 0.1]], dtype=np.float32))
    array([ True])
    >>> memory.compensate(hidden, np.array([[0.9, 0.1]], dtype=np.float32)).round(3).tolist()
    [[0.0, 1.0]]
    """

    def __init__(
        self,
        hidden_dim: int,
        width: int,
        *,
        kind: Kind = "topk",
        lam: float = 1.0,
        gamma: float = 0.5,
        tau: float = 0.1,
        size: int = 128,
        k: int = 8,
        tables: int = 8,
        bits: int = 8,
        decay: float = 1.0,
        store: Literal["all", "errors"] = "all",
        error_threshold: float = 0.5,
        regression: bool = False,
        device: torch.device | str = "cpu",
        seed: int = 0,
        kernel: MemoryKernel | None = None,
    ) -> None:
        """``kernel``: the backend's (``Backend.memory``); it computes over a top-k ring on
        the CPU, the torch form over any other store or device (and where none is given)."""
        self.kind, self.lam, self.gamma = kind, lam, gamma
        self.store, self.error_threshold = store, error_threshold
        self.regression = regression
        self.width = w = 1 if regression else width
        self.device = torch.device(device)
        self.storage: MemoryStore
        if kind == "topk":
            self.storage = TopKStore(size, hidden_dim, w, k, tau, self.device)
        elif kind == "lsh":
            self.storage = LSHStore(tables, bits, hidden_dim, w, tau, self.device, seed, decay)
        else:
            raise ValueError(f"unknown memory kind {kind!r} (lsh | topk)")
        on_ring = kind == "topk" and self.device.type == "cpu"
        self.kernel: MemoryKernel = kernel if kernel is not None and on_ring else REFERENCE
        # ŷ = (1 − λγ)·ŷ_base + [ȳ ‖ ȳ_base] @ mix, mix = [λ·I ; −λ(1 − γ)·I]
        eye = torch.eye(w, device=self.device)
        self.mix = torch.cat([lam * eye, -lam * (1.0 - gamma) * eye])
        self.one_hot = np.eye(w, dtype=np.float32)  # labels → y rows, on the host
        self.abs_error = 0.0  # regression: running mean |y − ŷ_base| for store="errors"
        self.writes = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickles of releases before the split name the store ``backend`` and keep a flag,
        ``_compiled`` (or ``_native``), for the compiled kernels: the compiled form again
        where it loads."""
        for old, new in (("backend", "storage"), ("_mix", "mix"), ("_one_hot", "one_hot")):
            if old in state:
                state[new] = state.pop(old)
        used = state.pop("_compiled", state.pop("_native", None))
        if "kernel" not in state:
            state["kernel"] = REFERENCE
            if used:
                from streamlearn.kernels.compiled import reloaded_memory

                state["kernel"] = reloaded_memory()
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self.storage)

    def keys(self, hidden: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Unit-length keys [B, H] for hidden rows; pass them to compensate and update alike
        to normalise a batch once."""
        return unit_rows(as_tensor(hidden, self.device))

    def values_of(self, base: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Base predictions as a tensor [B, W] on the memory's device."""
        values = as_tensor(base, self.device)
        return values.view(-1, 1) if self.regression else values

    # -- read -----------------------------------------------------------------------------
    def correction(
        self, hidden: np.ndarray | torch.Tensor, base: np.ndarray | torch.Tensor
    ) -> torch.Tensor:
        """λ·y_err [B, W] before clamping (zero for rows with nothing similar stored)."""
        base_t = self.values_of(base)
        return REFERENCE.corrected(self, base_t, self.keys(hidden)) - base_t

    def compensate(
        self,
        hidden: np.ndarray | torch.Tensor,
        base: np.ndarray | torch.Tensor,
        keys: torch.Tensor | None = None,
    ) -> np.ndarray:
        """ŷ = ŷ_base + λ·y_err; probabilities clamped to [0, 1] and renormalised per row (the
        torch form)."""
        return REFERENCE.compensate_with(self, base, self.keys(hidden) if keys is None else keys)

    def compensate_keyed(
        self, hidden: np.ndarray, base: np.ndarray
    ) -> tuple[np.ndarray, torch.Tensor]:
        """:meth:`compensate`, and the unit keys of ``hidden`` for :meth:`update`, by the
        memory's kernel."""
        return self.kernel.compensate(self, hidden, base)

    # -- write ----------------------------------------------------------------------------
    def update(
        self,
        hidden: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        base: np.ndarray | torch.Tensor,
        keys: torch.Tensor | None = None,
        mirror: Mirror | None = None,
    ) -> np.ndarray:
        """Store labelled rows (all, or only errors) by the memory's kernel; returns which rows
        were stored [B].

        ``mirror`` (top-k store only): (numeric ring, bucket ring, numeric rows, bucket rows):
        rings of the memory's size that keep each stored row's inputs in its slot (the
        stage's, for re-keying). ``keys``: the unit keys of ``hidden`` where known (the
        compiled form normalises them itself).
        """
        stored = self.kernel.store(self, (hidden, y, base), keys, mirror)
        self.writes += 1
        return stored

    def reset(self) -> None:
        """Forget every stored sample (the model's keys no longer match)."""
        self.storage.clear()

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain numpy arrays and scalars (for Redis, checkpoints)."""
        return {
            "kind": self.kind,
            "abs_error": self.abs_error,
            "writes": self.writes,
            **self.storage.arrays(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output (arrays may be numpy, lists or tensors)."""
        if state["kind"] != self.kind:
            raise ValueError(f"memory state is for kind={state['kind']!r}, not {self.kind!r}")
        self.storage.load_arrays(state)
        self.abs_error = float(state["abs_error"])
        self.writes = int(state["writes"])
