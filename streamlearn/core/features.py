"""FeatureEncoder: feature dicts (or columns) -> fixed-width numeric and hashed-categorical arrays.

Numeric features get one slot each and a running (Welford/Chan) standardisation; categorical
values are hashed with a stable hash (CRC-32 of ``name=value``, never Python's salted
``hash()``) into shared embedding buckets. Slots are fixed-width, so the model's input shape
(and its ONNX signature) never changes while features appear and disappear. In auto mode a
name gets a slot the first time it is seen (new names in sorted order, so feature order never
matters); names beyond capacity, or outside an explicit schema, are ignored and counted.
The statistics' compute is a collaborator passed in (a
:class:`~streamlearn.kernels.backend.FeatureStatistics`: numpy, or the compiled kernels).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from streamlearn.kernels.reference.statistics import NumpyStatistics

if TYPE_CHECKING:
    from streamlearn.kernels.backend import FeatureStatistics

__all__ = ["EncodedFeatures", "FeatureEncoder", "stable_bucket"]

_CACHE_LIMIT = 200_000


def stable_bucket(name: str, value: str, buckets: int) -> int:
    """Bucket in [1, buckets) for a categorical value; 0 is reserved for "missing".

    >>> stable_bucket("country", "DE", 4096)
    101
    """
    # surrogatepass: a JSON "\ud800" escape decodes to a lone surrogate; hash it, don't crash.
    return zlib.crc32(f"{name}={value}".encode("utf-8", "surrogatepass")) % (buckets - 1) + 1


@dataclass(frozen=True, slots=True)
class EncodedFeatures:
    """Raw numeric values (NaN = missing) and categorical bucket ids for a batch."""

    num: np.ndarray  # float64 [N, numeric_slots]
    cat: np.ndarray  # int64 [N, categorical_slots]

    def __len__(self) -> int:
        return len(self.num)


class FeatureEncoder:
    """Maps feature names to slots and values to model inputs; its state is plain arrays."""

    def __init__(
        self,
        numeric_slots: int = 64,
        categorical_slots: int = 16,
        hash_buckets: int = 4096,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        statistics: FeatureStatistics | None = None,
    ) -> None:
        """``statistics``: the compute of :meth:`standardize` and :meth:`observe` (default:
        numpy)."""
        if len(numeric) > numeric_slots or len(categorical) > categorical_slots:
            raise ValueError("explicit schema has more features than slots")
        self.numeric_slots = numeric_slots
        self.categorical_slots = categorical_slots
        self.hash_buckets = hash_buckets
        self.auto = not numeric and not categorical
        self._num_index = {str(n): i for i, n in enumerate(numeric)}
        self._cat_index = {str(n): i for i, n in enumerate(categorical)}
        self.count = np.zeros(numeric_slots)
        self.mean = np.zeros(numeric_slots)
        self.m2 = np.zeros(numeric_slots)
        self.ignored = 0  # values of features with no slot
        self.mismatched = 0  # strings sent to a numeric feature
        self.non_finite = 0  # ±inf sent to a numeric feature (treated as missing)
        self.overflowed = 0  # column updates skipped: the batch's values overflowed the variance
        self._bucket_cache: dict[tuple[str, str], int] = {}
        self.statistics = statistics or NumpyStatistics()

    # -- schema ---------------------------------------------------------------------------
    @property
    def numeric_names(self) -> list[str]:
        return sorted(self._num_index, key=self._num_index.__getitem__)

    @property
    def categorical_names(self) -> list[str]:
        return sorted(self._cat_index, key=self._cat_index.__getitem__)

    def _assign(self, items: Iterable[tuple[str, Any]]) -> None:
        """Give slots to names not seen before, sorted by name (order-independent)."""
        for name, value in sorted(items, key=lambda kv: kv[0]):
            if isinstance(value, str):
                if len(self._cat_index) < self.categorical_slots:
                    self._cat_index[name] = len(self._cat_index)
            elif len(self._num_index) < self.numeric_slots:
                self._num_index[name] = len(self._num_index)

    def _new_names(self, items: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return [(n, v) for n, v in items if n not in self._num_index and n not in self._cat_index]

    def _bucket(self, name: str, value: str) -> int:
        key = (name, value)
        bucket = self._bucket_cache.get(key)
        if bucket is None:
            if len(self._bucket_cache) >= _CACHE_LIMIT:
                self._bucket_cache.clear()
            bucket = self._bucket_cache[key] = stable_bucket(name, value, self.hash_buckets)
        return bucket

    # -- encoding -------------------------------------------------------------------------
    def encode(self, xs: Sequence[Mapping[Any, Any]]) -> EncodedFeatures:
        """Encode feature dicts (values: numbers, bools or strings; None = missing)."""
        cat = np.zeros((len(xs), self.categorical_slots), dtype=np.int64)
        num_index, cat_index = self._num_index, self._cat_index
        named = [[np.nan] * len(num_index) for _ in xs]  # named numeric slots, filled below
        settled: Any = None  # keys of a row whose every name has a slot: same keys, no news
        for row, x in enumerate(xs):
            if self.auto and x.keys() != settled:
                self._assign(self._new_names([(str(k), v) for k, v in x.items() if v is not None]))
                if len(named[row]) < len(num_index):  # a numeric slot was just named
                    named = [r + [np.nan] * (len(num_index) - len(r)) for r in named]
                if all(str(k) in num_index or str(k) in cat_index for k in x):
                    settled = x.keys()
            values = named[row]
            for key, value in x.items():
                if value is None:
                    continue
                name = key if type(key) is str else str(key)
                slot = num_index.get(name)
                if slot is not None:
                    if isinstance(value, str):
                        self.mismatched += 1
                    else:
                        values[slot] = value
                    continue
                slot = cat_index.get(name)
                if slot is not None:
                    cat[row, slot] = self._bucket(name, str(value))
                else:
                    self.ignored += 1
        num = np.full((len(xs), self.numeric_slots), np.nan)
        if named and num_index:
            try:
                num[:, : len(num_index)] = named
            except OverflowError:  # an int beyond float64 somewhere: convert value by value
                num[:, : len(num_index)] = [[_as_float(v, self) for v in r] for r in named]
        return EncodedFeatures(self._finite(num), cat)

    def encode_columns(self, columns: Mapping[Any, Sequence[Any] | np.ndarray]) -> EncodedFeatures:
        """Encode a column-oriented batch (e.g. a DataFrame's columns); NaN/None = missing."""
        arrays = {str(k): np.asarray(v) for k, v in columns.items()}
        n = len(next(iter(arrays.values()))) if arrays else 0
        if self.auto and not all(k in self._num_index or k in self._cat_index for k in arrays):
            # Same slots as encode() row by row: names by the row they first appear in.
            firsts = [(*_first_present(a), k) for k, a in arrays.items()]
            for row in sorted({r for r, _, _ in firsts if r >= 0}):
                new = self._new_names([(k, v) for r, v, k in firsts if r == row])
                if new:
                    self._assign(new)
        num = np.full((n, self.numeric_slots), np.nan)
        cat = np.zeros((n, self.categorical_slots), dtype=np.int64)
        for name, column in arrays.items():
            if (slot := self._num_index.get(name)) is not None:
                if column.dtype.kind in "biuf":
                    num[:, slot] = column  # cast on assignment, no copy first
                else:
                    num[:, slot] = [_as_float(v, self) for v in column]
            elif (slot := self._cat_index.get(name)) is not None:
                cat[:, slot] = [0 if _missing(v) else self._bucket(name, str(v)) for v in column]
            else:
                self.ignored += int(sum(not _missing(v) for v in column))
        return EncodedFeatures(self._finite(num), cat)

    def encode_named(
        self, numeric: np.ndarray, categorical: Mapping[str, Sequence[str | None]]
    ) -> EncodedFeatures:
        """Encode a batch whose every value has a slot already, as a decoder that knows the
        slots fills it straight from the bytes: ``numeric`` [N, k] holds the first k numeric
        slots in slot order (NaN = missing), ``categorical`` a column of strings (None =
        missing) per categorical name. The arrays :meth:`encode` makes of the same rows as
        dicts; nothing is named or counted (every value has its slot)."""
        num = np.full((len(numeric), self.numeric_slots), np.nan)
        num[:, : numeric.shape[1]] = numeric
        cat = np.zeros((len(numeric), self.categorical_slots), dtype=np.int64)
        for name, column in categorical.items():
            bucket, slot = self._bucket, self._cat_index[name]
            cat[:, slot] = [0 if value is None else bucket(name, value) for value in column]
        return EncodedFeatures(self._finite(num), cat)

    def _finite(self, num: np.ndarray) -> np.ndarray:
        """±inf becomes missing, counted: one would make a running mean inf for good (the
        Kafka path rejects such events at decode; the Python APIs take whatever they get)."""
        named = num[:, : self._used]  # the other slots are NaN
        infinite = np.isinf(named)
        if infinite.any():
            self.non_finite += int(infinite.sum())
            named[infinite] = np.nan
        return num

    # -- running standardisation ------------------------------------------------------------
    @property
    def _used(self) -> int:
        """Numeric slots with a name (slots 0..n-1); the others hold NaN in every batch."""
        return len(self._num_index)

    def standardize(self, num: np.ndarray) -> np.ndarray:
        """Standardise this encoder's output with the current statistics; missing values
        become 0 (the mean). Only named slots are computed: the others are 0 (in the encoder's
        output they are always missing)."""
        return self.statistics.standardize(num, self._used, self.count, self.mean, self.m2)

    def observe(self, num: np.ndarray) -> None:
        """Fold a batch of this encoder's raw values into the statistics (Chan et al.'s
        parallel update), for the named slots it has values in (usually far fewer than the
        slots; the others are always missing in the encoder's output, and ignored)."""
        self.overflowed += self.statistics.observe(num, self._used, self.count, self.mean, self.m2)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable state (travels in meta.json and checkpoints)."""
        return {
            "numeric_slots": self.numeric_slots,
            "categorical_slots": self.categorical_slots,
            "hash_buckets": self.hash_buckets,
            "auto": self.auto,
            "numeric": self.numeric_names,
            "categorical": self.categorical_names,
            "count": self.count.tolist(),
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "ignored": self.ignored,
            "mismatched": self.mismatched,
            "non_finite": self.non_finite,
            "overflowed": self.overflowed,
        }

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, Any], statistics: FeatureStatistics | None = None
    ) -> FeatureEncoder:
        enc = cls(
            state["numeric_slots"],
            state["categorical_slots"],
            state["hash_buckets"],
            statistics=statistics,
        )
        enc.auto = bool(state["auto"])
        enc._num_index = {n: i for i, n in enumerate(state["numeric"])}
        enc._cat_index = {n: i for i, n in enumerate(state["categorical"])}
        enc.count = np.asarray(state["count"], dtype=np.float64)
        enc.mean = np.asarray(state["mean"], dtype=np.float64)
        enc.m2 = np.asarray(state["m2"], dtype=np.float64)
        if not enc.count.shape == enc.mean.shape == enc.m2.shape == (enc.numeric_slots,):
            raise ValueError(f"encoder state: statistics of another width than {enc.numeric_slots}")
        enc.ignored = int(state["ignored"])
        enc.mismatched = int(state["mismatched"])
        enc.non_finite = int(state.get("non_finite", 0))  # absent from older states
        enc.overflowed = int(state.get("overflowed", 0))
        return enc


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _first_present(column: np.ndarray) -> tuple[int, Any]:
    """(row, value) of the first present value; (-1, None) for an all-missing column."""
    for row, value in enumerate(column):
        if not _missing(value):
            return row, value.item() if isinstance(value, np.generic) else value
    return -1, None


def _as_float(value: Any, encoder: FeatureEncoder) -> float:
    if _missing(value):
        return np.nan
    if isinstance(value, str):
        encoder.mismatched += 1
        return np.nan
    try:
        return float(value)
    except OverflowError:  # an int beyond float64: like ±inf, missing and counted
        encoder.non_finite += 1
        return np.nan
