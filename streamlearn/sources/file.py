"""FileSource: one JSON event per line (JSONL), decoded and validated like a Kafka message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from streamlearn.errors import SourceError
from streamlearn.events import Event, Rejection, decode
from streamlearn.sources.base import batched

__all__ = ["FileSource"]


class FileSource:
    """Reads a JSONL file lazily; blank lines are skipped, bad lines become Rejections."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"source.path: no such file {self.path}")

    def _events(self) -> Iterator[Event | Rejection]:
        with self.path.open("rb") as handle:
            for line in handle:
                line = line.strip()
                if line:
                    yield decode(line)

    def batches(self, batch_size: int) -> Iterator[list[Event | Rejection]]:
        return batched(self._events(), batch_size)
