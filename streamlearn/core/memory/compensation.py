"""ReLoop2 compensation from a read-only error memory's arrays, without torch.

This is what a serving replica applies with the memory the worker pushed (no torch: the
serving tier does not install it). Where the compiled kernels are installed, a top-k memory
reads and compensates in one call of the worker's own kernel (memory.c): a request's single
row costs numpy's per-call overhead several times over; the numpy reads serve elsewhere.
:class:`FrozenMemory` holds the arrays of
:meth:`~streamlearn.core.memory.error_memory.ErrorMemory.state_dict` and reads them as the
worker's stores do — top-k by cosine over the ring (``k`` = 0 or ≥ the rows held: every row),
or one SimHash bucket per table of the LSH sketch — then applies :func:`compensated`::

    y_err = γ·(ȳ − ŷ_base) + (1 − γ)·(ȳ − ȳ_base)
    ŷ     = ŷ_base + λ·y_err          (class probabilities clamped to [0, 1], renormalised)

and serves ``(1 − w)·ŷ_base + w·ŷ`` with the weight ``w`` the worker's
:class:`~streamlearn.core.memory.gate.CompensationGate` learned (:func:`gated`).
Results equal the worker's memory on the same state to float32 rounding (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamlearn.kernels.cpu.binding import compensate_top_k, float32_rows, load, loaded

__all__ = [
    "FrozenMemory",
    "LSHLookup",
    "Lookup",
    "TopKLookup",
    "compensated",
    "gated",
    "kernels_available",
    "unit_keys",
]

Read = tuple[np.ndarray, np.ndarray | None]  # ([ȳ ‖ ȳ_base] [B, 2W], found [B] or None: all)


def unit_keys(hidden: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (rows of norm < 1e-8 divided by 1e-8). A row whose
    norm overflows float32 (inputs far out of range) gets an infinite norm, without a warning:
    its key is then 0 or NaN, and a prediction that is not finite is refused where it is
    served."""
    rows = np.asarray(hidden, dtype=np.float32)
    with np.errstate(over="ignore"):
        norm = np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), np.float32(1e-8))
    return rows / norm


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; a row of only -inf gives NaN (as torch.softmax)."""
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


def compensated(
    base: np.ndarray,
    read: Read,
    lam: float,
    gamma: float,
    regression: bool,
) -> np.ndarray:
    """ŷ_base [B, W] corrected by a store's ``read`` ([ȳ ‖ ȳ_base], found); rows found
    nothing for keep ŷ_base; probabilities are clamped to [0, 1] and renormalised per row
    (an all-zero row stays zero)."""
    mean, found = read
    width = base.shape[1]
    y_bar, base_bar = mean[:, :width], mean[:, width:]
    out = (1.0 - lam * gamma) * base + lam * y_bar - lam * (1.0 - gamma) * base_bar
    out = out.astype(np.float32, copy=False)
    if found is not None:
        out = np.where(found[:, None], out, base)
    if not regression:
        out = np.clip(out, 0.0, 1.0)
        out /= np.maximum(out.sum(axis=1, keepdims=True), np.float32(1e-12))
    return out


def gated(base: np.ndarray, compensated: np.ndarray, weight: float) -> np.ndarray:
    """(1 − ``weight``)·``base`` + ``weight``·``compensated`` (float32): the compensation's
    share the gate gives it; either prediction itself at a weight of 0 or 1. Float32 rows of
    one shape go through mix.c where it loads (the same bits: one call, not numpy's four)."""
    if weight >= 1.0:
        return compensated
    if weight <= 0.0:
        return base
    kernels = loaded()
    if kernels is not None and float32_rows(base, compensated):
        out = np.empty_like(base)
        kernels.mix_gated(base, compensated, weight, out)
        return out
    w = np.float32(weight)
    return ((np.float32(1.0) - w) * base + w * compensated).astype(np.float32, copy=False)


class Lookup(Protocol):
    """A read-only store: how many rows it holds and their weighted mean for unit keys."""

    def __len__(self) -> int: ...

    @property
    def widths(self) -> tuple[int, int]:
        """(hidden, prediction) widths of the rows it reads: H and W."""
        ...

    def read(self, keys: np.ndarray) -> Read: ...


def _floats(state: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``state[name]`` as float32 of ``shape`` (-1: any length); ValueError otherwise."""
    array = np.asarray(state[name])
    if array.dtype.kind not in "fiu":
        raise ValueError(f"memory state: {name} is not numeric ({array.dtype})")
    array = array.astype(np.float32, copy=False)
    if array.ndim != len(shape) or any(
        d not in (-1, a) for d, a in zip(shape, array.shape, strict=True)
    ):
        raise ValueError(f"memory state: {name} has shape {array.shape}, want {shape}")
    return array


@dataclass(frozen=True, eq=False)
class TopKLookup:
    """The ring's rows (oldest first): unit ``keys`` [n, H] and values ``[y ‖ ŷ_base]``
    [n, 2W]; the k most similar rows by cosine, weighted by softmax(s / τ)."""

    keys: np.ndarray
    values: np.ndarray
    k: int
    tau: float

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], hidden: int, width: int, k: int, tau: float
    ) -> TopKLookup:
        keys = np.ascontiguousarray(_floats(state, "keys", (-1, hidden)))
        y, base = (_floats(state, name, (-1, width)) for name in ("y", "base"))
        if not len(keys) == len(y) == len(base):
            raise ValueError("memory state: keys, y and base differ in length")
        return cls(keys, np.concatenate([y, base], axis=1), k, tau)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def widths(self) -> tuple[int, int]:
        return self.keys.shape[1], self.values.shape[1] // 2

    def read(self, keys: np.ndarray) -> Read:
        n = len(self.keys)
        sim = (keys @ self.keys.T) * np.float32(1.0 / self.tau)  # s/τ [B, n]
        if self.k == 0 or self.k >= n:  # every stored row is a neighbour
            return _softmax(sim) @ self.values, None
        nearest = np.argpartition(sim, n - self.k, axis=1)[:, n - self.k :]
        weight = _softmax(np.take_along_axis(sim, nearest, axis=1))  # [B, k]
        return np.einsum("bk,bkw->bw", weight, self.values[nearest]), None


@dataclass(frozen=True, eq=False)
class LSHLookup:
    """ReLoop2's sketch: ``planes`` [H, T·bits] hash a key to one bucket per table; a bucket
    row holds its count, Σ key, Σ y and Σ ŷ_base. Buckets are weighted by softmax over the
    cosine between the key and their mean key / τ, each standing for its rows' mean."""

    planes: np.ndarray
    count: np.ndarray
    key_sum: np.ndarray
    value_sum: np.ndarray  # [Σ y ‖ Σ ŷ_base]
    tables: int
    bits: int
    tau: float
    stored: int

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        hidden: int,
        width: int,
        tables: int,
        bits: int,
        tau: float,
    ) -> LSHLookup:
        rows = tables << bits
        return cls(
            _floats(state, "planes", (hidden, tables * bits)),
            _floats(state, "count", (rows,)),
            _floats(state, "key_sum", (rows, hidden)),
            np.concatenate([_floats(state, n, (rows, width)) for n in ("y_sum", "base_sum")], 1),
            tables,
            bits,
            tau,
            int(state["stored"]),
        )

    def __len__(self) -> int:
        return self.stored

    @property
    def widths(self) -> tuple[int, int]:
        return self.key_sum.shape[1], self.value_sum.shape[1] // 2

    def buckets(self, keys: np.ndarray) -> np.ndarray:
        """Flat bucket index [B, tables] from the signs of the projections."""
        signs = (keys @ self.planes > 0).reshape(len(keys), self.tables, self.bits)
        powers = np.left_shift(1, np.arange(self.bits))
        return signs @ powers + np.arange(self.tables) * (1 << self.bits)

    def read(self, keys: np.ndarray) -> Read:
        idx = self.buckets(keys)
        count, key_sum = self.count[idx], self.key_sum[idx]  # [B, T], [B, T, H]
        hit = count > 0
        norm = np.maximum(np.linalg.norm(key_sum, axis=2), np.float32(1e-8))
        sim = np.einsum("bth,bh->bt", key_sum, keys) / norm  # cos(q, mean key)
        weight = np.nan_to_num(_softmax(np.where(hit, sim, -np.inf) / np.float32(self.tau)))
        weight /= np.maximum(count, np.float32(1e-30))  # mean per bucket
        return np.einsum("bt,btw->bw", weight, self.value_sum[idx]), hit.any(axis=1)


@dataclass(frozen=True, eq=False)
class FrozenMemory:
    """A read-only error memory: compensates base predictions, never learns; ``weight``: the
    compensation's share (the worker's gate weight when pushed)."""

    lookup: Lookup
    lam: float
    gamma: float
    regression: bool
    weight: float = 1.0
    # read by the compiled kernel (a top-k lookup where the kernels are installed), else numpy
    compiled: bool = False

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        config: Mapping[str, Any],
        hidden_dim: int,
        width: int,
        regression: bool,
    ) -> FrozenMemory:
        """From ErrorMemory.state_dict() arrays and its settings (``kind``, ``lam``,
        ``gamma``, ``tau``, ``k``, ``tables``, ``bits``); ValueError when they do not fit.
        ``state["weight"]``: the gate's weight (1 where the state has none: no gate)."""
        w, tau = 1 if regression else width, float(config["tau"])
        if state["kind"] != config["kind"]:
            raise ValueError(f"memory state is for kind={state['kind']!r}, not {config['kind']!r}")
        lookup: Lookup
        if config["kind"] == "topk":
            lookup = TopKLookup.from_state(state, hidden_dim, w, int(config["k"]), tau)
        elif config["kind"] == "lsh":
            tables, bits = int(config["tables"]), int(config["bits"])
            lookup = LSHLookup.from_state(state, hidden_dim, w, tables, bits, tau)
        else:
            raise ValueError(f"unknown memory kind {config['kind']!r} (lsh | topk)")
        weight = float(state.get("weight", 1.0))
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"memory state: weight {weight} is outside [0, 1]")
        compiled = isinstance(lookup, TopKLookup) and kernels_available()
        lam, gamma = float(config["lam"]), float(config["gamma"])
        return cls(lookup, lam, gamma, regression, weight, compiled)

    def __len__(self) -> int:
        return len(self.lookup)

    def compensate(self, hidden: np.ndarray, base: np.ndarray) -> np.ndarray:
        """ŷ for hidden rows [B, H] and base predictions [B, W] (regression: [B])."""
        rows = np.asarray(base, dtype=np.float32).reshape(len(hidden), -1)
        hidden_dim, width = self.lookup.widths
        if np.ndim(hidden) != 2 or np.shape(hidden)[1] != hidden_dim or rows.shape[1] != width:
            raise ValueError(
                f"rows of hidden {np.shape(hidden)} and predictions {np.shape(base)} do not fit "
                f"a memory of hidden width {hidden_dim} and prediction width {width}"
            )
        if len(self.lookup) == 0 or self.lam == 0.0 or self.weight == 0.0:
            out = rows.copy()
        else:
            if self.compiled:
                full = self._compiled_compensate(hidden, rows)
            else:
                read = self.lookup.read(unit_keys(hidden))
                full = compensated(rows, read, self.lam, self.gamma, self.regression)
            out = gated(rows, full, self.weight)
        return out[:, 0] if self.regression else out

    def _compiled_compensate(self, hidden: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """:func:`compensated` of the top-k read, in memory.c (results to float32 rounding).
        The kernel reads the lookup's arrays by address: :meth:`compensate` checked the
        widths."""
        lookup = self.lookup
        assert isinstance(lookup, TopKLookup)
        ring = (lookup.keys.ctypes.data, lookup.values.ctypes.data, len(lookup))
        h = np.ascontiguousarray(hidden, dtype=np.float32)
        b = np.ascontiguousarray(rows)
        out, _ = compensate_top_k(
            load(), ring, lookup.k, lookup.tau, self.lam, self.gamma, self.regression, h, b
        )
        return out


def kernels_available() -> bool:
    """Whether the compiled kernels load in this installation (one attempt per process)."""
    return loaded() is not None
