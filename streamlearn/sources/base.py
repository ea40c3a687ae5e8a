"""The Source protocol: anything that yields micro-batches of decoded events or rejections."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

from streamlearn.events import Event, Rejection

__all__ = ["Source", "batched"]

T = TypeVar("T")


@runtime_checkable
class Source(Protocol):
    """A transport: swappable, small, knows nothing about learning."""

    def batches(self, batch_size: int) -> Iterator[list[Event | Rejection]]:
        """Micro-batches in stream order; the iterator ends when the source is exhausted."""
        ...


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
