"""MemorySource: raw message values held in a list, decoded like any transport's (tests)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from streamlearn.events import Event, Rejection, decode
from streamlearn.sources.base import batched

__all__ = ["MemorySource"]


class MemorySource:
    """Decodes a fixed list of message values."""

    def __init__(self, values: Sequence[bytes]) -> None:
        self.values = list(values)

    def batches(self, batch_size: int) -> Iterator[list[Event | Rejection]]:
        return batched((decode(v) for v in self.values), batch_size)
