"""LabelMap: class labels <-> output slots, so classes first seen mid-stream need no new layer.

The model has ``capacity`` output slots; a slot is switched on when its class is first seen.
Labels keep their Python type (bool, int, str) and are JSON-serialisable.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

__all__ = ["LabelMap"]


class LabelMap:
    """Assigns output slots to class labels in order of first appearance."""

    def __init__(
        self, capacity: int, classes: Sequence[Hashable] = (), fixed: bool = False
    ) -> None:
        if len(classes) > capacity:
            raise ValueError(f"{len(classes)} classes exceed capacity {capacity}")
        self.capacity = capacity
        self.fixed = fixed
        self.classes: list[Hashable] = list(classes)
        self._index = {_key(c): i for i, c in enumerate(self.classes)}
        # (label's class, label) -> slot, for every label ever resolved to a slot (bounded
        # by the slots and the few Python types a label arrives as): a batch's labels are
        # resolved by one dict lookup each. Rejected labels are not kept (they may be many).
        self._resolved: dict[tuple[type, Hashable], int] = {}

    def __len__(self) -> int:
        return len(self.classes)

    def lookup(self, label: Hashable) -> int | None:
        """Slot of a known label; an int label also names a slot of fixed string classes."""
        label = _plain(label)
        slot = self._index.get(_key(label))
        by_index = (
            slot is None
            and self.fixed
            and isinstance(label, int)
            and not isinstance(label, bool)
            and all(isinstance(c, str) for c in self.classes)
        )
        return label if by_index and 0 <= label < len(self.classes) else slot

    def add(self, label: Hashable) -> int | None:
        """Slot for a label, creating one if allowed; None when full or fixed."""
        label = _plain(label)
        slot = self.lookup(label)
        if slot is None and not self.fixed and len(self.classes) < self.capacity:
            slot = len(self.classes)
            self.classes.append(label)
            self._index[_key(label)] = slot
        return slot

    def add_many(self, labels: Sequence[Hashable | None]) -> np.ndarray:
        """Slots for a batch of labels (-1 where a label is missing or cannot be taken).

        A stream repeats a few labels many times: each one is resolved once, then looked up.
        """
        resolved = self._resolved
        try:  # the usual batch: every label seen before (the class keeps True apart from 1)
            return np.array([resolved[(y.__class__, y)] for y in labels], dtype=np.int64)
        except KeyError:
            pass
        slots = []
        for y in labels:
            key = (y.__class__, y)
            slot = resolved.get(key)
            if slot is None:
                found = None if y is None else self.add(y)
                slot = -1 if found is None else resolved.setdefault(key, found)
            slots.append(slot)
        return np.array(slots, dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_resolved"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickles (river estimators) hold no lookup table, older ones none at all."""
        self.__dict__.update(state)
        self._resolved = {}

    def mask(self) -> np.ndarray:
        """Boolean [capacity]: which slots hold a class."""
        m = np.zeros(self.capacity, dtype=bool)
        m[: len(self.classes)] = True
        return m

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "fixed": self.fixed, "classes": list(self.classes)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LabelMap:
        return cls(state["capacity"], state["classes"], state["fixed"])


def _plain(label: Hashable) -> Hashable:
    """numpy scalars (from pandas) become the Python value they hold."""
    return label.item() if isinstance(label, np.generic) else label


def _key(label: Hashable) -> tuple[str, Hashable]:
    # True == 1 in Python; keep bool and int classes apart.
    return (type(label).__name__ if isinstance(label, bool) else "v", label)
