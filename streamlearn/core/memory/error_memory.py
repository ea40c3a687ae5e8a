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
from types import ModuleType
from typing import Any, Literal, Protocol

import numpy as np
import torch

from streamlearn.kernels.cpu import binding

__all__ = ["ErrorMemory", "LSHStore", "MemoryStore", "TopKStore", "ring_write", "unit_rows"]

Kind = Literal["lsh", "topk"]
# (numeric ring, bucket ring, numeric rows, bucket rows): see ErrorMemory.update
Mirror = tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]


def _as_tensor(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 on ``device``; a host float32 array, the usual input, is wrapped without a copy
    by ``from_numpy``, a third of the cost of ``as_tensor``."""
    if isinstance(array, np.ndarray) and array.dtype == np.float32 and device.type == "cpu":
        return torch.from_numpy(array)
    return torch.as_tensor(array, dtype=torch.float32, device=device)


def _numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
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
    """Exact top-k cosine retrieval over a ring buffer of the last ``size`` samples.

    ``k`` = 0 (or ≥ the samples held) weights every stored sample by softmax(s/τ): one matmul
    and no selection, the cheapest read.
    """

    def __init__(
        self, size: int, hidden_dim: int, width: int, k: int, tau: float, device: torch.device
    ) -> None:
        self.size, self.k, self.tau, self.width = size, k, tau, width
        self.keys = torch.zeros((size, hidden_dim), device=device)
        self.values = torch.zeros((size, 2 * width), device=device)
        self._zero = torch.zeros(1, device=device)
        self._full = (self.keys.T, self.values)  # read views of a full ring, made once
        self.filled = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.filled

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        n = keys.shape[0]
        if n > self.size:  # only the newest `size` rows would survive anyway
            keys, values, n = keys[-self.size :], values[-self.size :], self.size
        ring_write(self.keys, self.cursor, keys)
        ring_write(self.values, self.cursor, values)
        self.cursor = (self.cursor + n) % self.size
        self.filled = min(self.filled + n, self.size)

    def read(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = self.filled  # callers read only a non-empty store
        stored, values = self._full if n == self.size else (self.keys[:n].T, self.values[:n])
        # s/τ [B, n] in one op: cosine similarities of unit keys, divided by the temperature
        sim = torch.addmm(self._zero, keys, stored, beta=0.0, alpha=1.0 / self.tau)
        if self.k == 0 or self.k >= n:  # every stored sample is a neighbour
            weight = torch.softmax(sim, dim=1)
        else:  # softmax over the k nearest, scattered into [B, n]: one matmul, no gather
            top, idx = _nearest(sim, self.k)
            weight = torch.zeros_like(sim).scatter_(1, idx, torch.softmax(top, dim=1))
        return weight @ values, None  # [B, 2W]

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
        keys = _as_tensor(state["keys"], device).view(-1, self.keys.shape[1])
        y = _as_tensor(state["y"], device).view(-1, self.width)
        base = _as_tensor(state["base"], device).view(-1, self.width)
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
        planes = _as_tensor(state["planes"], device)
        parts = [
            _as_tensor(state[name], device).view(len(self.table), -1)
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


class ErrorMemory(binding.ReloadsKernelsWhenUnpickled):
    """Error memory over one store: compensates base predictions, learns from labelled rows.

    ``width`` is the number of class slots (ignored for regression). Labels are class slots
    (int) for classification and values for regression; base predictions are the model's
    probabilities [B, width] or values [B]. ``store="errors"`` keeps only rows whose base error
    exceeds ``error_threshold`` (1 − p(true class); for regression, that many times the running
    mean absolute error). Defaults match :class:`~streamlearn.settings.MemorySettings`.

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
        compiled: ModuleType | None = None,
    ) -> None:
        """``compiled``: the compiled kernels (the compiled backend's library); on CPU a top-k
        memory then compensates in one call (:meth:`compensate_keyed`)."""
        self.kind, self.lam, self.gamma = kind, lam, gamma
        self.store, self.error_threshold = store, error_threshold
        self.regression = regression
        self.width = w = 1 if regression else width
        self.device = torch.device(device)
        self.backend: MemoryStore
        if kind == "topk":
            self.backend = TopKStore(size, hidden_dim, w, k, tau, self.device)
        elif kind == "lsh":
            self.backend = LSHStore(tables, bits, hidden_dim, w, tau, self.device, seed, decay)
        else:
            raise ValueError(f"unknown memory kind {kind!r} (lsh | topk)")
        # ŷ = (1 − λγ)·ŷ_base + [ȳ ‖ ȳ_base] @ mix, mix = [λ·I ; −λ(1 − γ)·I]
        eye = torch.eye(w, device=self.device)
        self._mix = torch.cat([lam * eye, -lam * (1.0 - gamma) * eye])
        self._one_hot = np.eye(w, dtype=np.float32)  # labels → y rows, on the host
        self._compiled = compiled if kind == "topk" and self.device.type == "cpu" else None
        self.abs_error = 0.0  # regression: running mean |y − ŷ_base| for store="errors"
        self.writes = 0

    def __len__(self) -> int:
        return len(self.backend)

    def keys(self, hidden: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Unit-length keys [B, H] for hidden rows; pass them to compensate and update alike
        to normalise a batch once."""
        return unit_rows(_as_tensor(hidden, self.device))

    def _values(self, base: np.ndarray | torch.Tensor) -> torch.Tensor:
        values = _as_tensor(base, self.device)
        return values.view(-1, 1) if self.regression else values

    # -- read -----------------------------------------------------------------------------
    def _compensated(
        self, hidden: np.ndarray | torch.Tensor, base: torch.Tensor, keys: torch.Tensor | None
    ) -> torch.Tensor:
        if len(self.backend) == 0 or self.lam == 0.0:
            return base
        mean, found = self.backend.read(self.keys(hidden) if keys is None else keys)
        out = torch.addmm(base, mean, self._mix, beta=1.0 - self.lam * self.gamma)
        return out if found is None else torch.where(found.unsqueeze(1), out, base)

    def correction(
        self, hidden: np.ndarray | torch.Tensor, base: np.ndarray | torch.Tensor
    ) -> torch.Tensor:
        """λ·y_err [B, W] before clamping (zero for rows with nothing similar stored)."""
        base_t = self._values(base)
        return self._compensated(hidden, base_t, None) - base_t

    def compensate(
        self,
        hidden: np.ndarray | torch.Tensor,
        base: np.ndarray | torch.Tensor,
        keys: torch.Tensor | None = None,
    ) -> np.ndarray:
        """ŷ = ŷ_base + λ·y_err; probabilities clamped to [0, 1] and renormalised per row."""
        base_t = self._values(base)
        out = self._compensated(hidden, base_t, keys)
        if out is base_t:  # nothing stored: the base prediction unchanged (a copy)
            out = base_t.clone()
        elif not self.regression:  # clamp, then renormalise; all-zero rows stay zero
            out.clamp_(0.0, 1.0)
            out.div_(out.sum(1, keepdim=True).clamp_min_(1e-12))
        return (out[:, 0] if self.regression else out).cpu().numpy()

    def compensate_keyed(
        self, hidden: np.ndarray, base: np.ndarray
    ) -> tuple[np.ndarray, torch.Tensor]:
        """:meth:`compensate`, and the unit keys of ``hidden`` for :meth:`update`; on CPU with
        a non-empty top-k store, in one call into memory.c (the same arithmetic)."""
        if self._compiled is None or len(self.backend) == 0 or self.lam == 0.0:
            keys = self.keys(hidden)
            return self.compensate(hidden, base, keys), keys
        store = self.backend
        assert isinstance(store, TopKStore)
        h = np.ascontiguousarray(hidden, dtype=np.float32)
        b = np.ascontiguousarray(base, dtype=np.float32).reshape(len(h), -1)
        self._check_widths(h, b, store)
        out = np.empty((len(h), self.width), dtype=np.float32)
        keys = np.empty_like(h)
        code = self._compiled.memory_compensate(
            store.keys.data_ptr(),
            store.values.data_ptr(),
            store.filled,
            store.k,
            store.tau,
            self.lam,
            self.gamma,
            int(self.regression),
            h,
            b,
            out,
            keys,
        )
        if code != 0:
            raise MemoryError("compiled error memory: scratch memory could not be allocated")
        return (out[:, 0] if self.regression else out), torch.from_numpy(keys)

    def _check_widths(self, hidden: np.ndarray, base: np.ndarray, store: TopKStore) -> None:
        """ValueError unless rows fit the ring's keys and values: the compiled calls trust
        shapes."""
        if hidden.shape[1:] != store.keys.shape[1:] or base.shape[1] != self.width:
            raise ValueError(
                f"hidden {hidden.shape} / base {base.shape}: the memory holds keys of width "
                f"{store.keys.shape[1]} and values of width {self.width}"
            )

    # -- write ----------------------------------------------------------------------------
    def update(
        self,
        hidden: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        base: np.ndarray | torch.Tensor,
        keys: torch.Tensor | None = None,
        mirror: Mirror | None = None,
    ) -> np.ndarray:
        """Store labelled rows (all, or only errors); returns which rows were stored [B].

        ``mirror`` (top-k store only): (numeric ring, bucket ring, numeric rows, bucket rows):
        rings of the memory's size that keep each stored row's inputs in its slot (the
        stage's, for re-keying). On CPU with the compiled kernels and ``store="all"``, one
        call into memory.c does every write (``keys`` unused: it normalises there).
        """
        if self._compiled is not None and self.store == "all":
            return self._store_compiled(hidden, y, base, mirror)
        cursor = self.backend.cursor if isinstance(self.backend, TopKStore) else 0
        keys = self.keys(hidden) if keys is None else keys
        values = self._rows(y, base)
        if self.store == "errors":
            keep = self._errors(values[:, : self.width], values[:, self.width :])
            keys, values = keys[keep], values[keep]
            stored = keep.cpu().numpy()
        else:
            stored = np.ones(keys.shape[0], dtype=bool)
        self.writes += 1
        if keys.shape[0]:
            self.backend.write(keys, values)
        if mirror is not None:
            ring_num, ring_cat, num, cat = mirror
            if self.store == "errors":  # the rows it skipped are not in the ring
                num, cat = num[stored], cat[stored]
            n = min(len(num), len(ring_num))  # the ring kept only the newest `size` rows
            ring_write(ring_num, cursor, torch.from_numpy(num[len(num) - n :]))
            ring_write(ring_cat, cursor, torch.from_numpy(cat[len(cat) - n :]))
        return stored

    def _store_compiled(
        self,
        hidden: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        base: np.ndarray | torch.Tensor,
        mirror: Mirror | None,
    ) -> np.ndarray:
        """:meth:`update` for store="all" on the CPU top-k ring: one call into C."""
        store = self.backend
        assert isinstance(store, TopKStore) and self._compiled is not None
        h = np.ascontiguousarray(_numpy(hidden), dtype=np.float32)
        rows = len(h)
        newest = slice(max(rows - store.size, 0), None)  # only these would survive
        h = h[newest]
        b = np.ascontiguousarray(_numpy(base)[newest], dtype=np.float32).reshape(len(h), -1)
        labels = _numpy(y)[newest]
        self._check_widths(h, b, store)
        if self.regression:
            targets, labels = np.ascontiguousarray(labels, dtype=np.float64), None
        else:
            targets, labels = None, np.ascontiguousarray(labels, dtype=np.int64)
        ring_num = ring_cat = num = cat = None
        if mirror is not None:
            ring_num, ring_cat, num_rows, cat_rows = mirror
            num = np.ascontiguousarray(num_rows[newest], dtype=np.float32)
            cat = np.ascontiguousarray(cat_rows[newest], dtype=np.int64)
            if num.shape[1:] != ring_num.shape[1:] or cat.shape[1:] != ring_cat.shape[1:]:
                raise ValueError(f"inputs {num.shape} / {cat.shape} do not fit the rings")
        code = self._compiled.memory_store(
            store.keys.data_ptr(),
            store.values.data_ptr(),
            store.size,
            store.cursor,
            h,
            labels,
            targets,
            b,
            None if ring_num is None else ring_num.data_ptr(),
            None if ring_cat is None else ring_cat.data_ptr(),
            num,
            cat,
        )
        if code != 0:
            raise IndexError(f"class label outside the memory's {self.width} slots")
        self.writes += 1
        store.cursor = (store.cursor + len(h)) % store.size
        store.filled = min(store.filled + len(h), store.size)
        return np.ones(rows, dtype=bool)

    def _rows(self, y: np.ndarray | torch.Tensor, base: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Stored values ``[y ‖ ŷ_base]`` [B, 2W], built on the host (y one-hot by indexing)
        and moved to the device in one copy: a few numpy ops instead of several torch ones."""
        labels = _numpy(y)
        if self.regression:
            target = labels.reshape(-1, 1)
        else:
            target = self._one_hot[labels.astype(np.int64, copy=False)]
        rows = np.concatenate([target, _numpy(base).reshape(len(target), -1)], axis=1)
        return _as_tensor(rows, self.device)

    def _errors(self, target: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Rows worth storing under store="errors"."""
        if not self.regression:
            return (target * base).sum(1) < 1.0 - self.error_threshold
        error = (target - base).abs()[:, 0]
        batch = float(error.mean())
        self.abs_error = batch if self.writes == 0 else 0.9 * self.abs_error + 0.1 * batch
        return error > self.error_threshold * self.abs_error

    def reset(self) -> None:
        """Forget every stored sample (the model's keys no longer match)."""
        self.backend.clear()

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain numpy arrays and scalars (for Redis, checkpoints)."""
        return {
            "kind": self.kind,
            "abs_error": self.abs_error,
            "writes": self.writes,
            **self.backend.arrays(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output (arrays may be numpy, lists or tensors)."""
        if state["kind"] != self.kind:
            raise ValueError(f"memory state is for kind={state['kind']!r}, not {self.kind!r}")
        self.backend.load_arrays(state)
        self.abs_error = float(state["abs_error"])
        self.writes = int(state["writes"])
