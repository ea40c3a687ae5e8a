"""``streamlearn produce``: a named synthetic stream or a JSONL file sent to a topic at a rate.

So a user can try the worker locally: one terminal produces, the other runs the worker. Each
message is an event in the wire format, keyed by its id (so a key always lands on the same
partition); ``rate`` is events per second, 0 sends as fast as the client allows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from streamlearn.errors import SourceError
from streamlearn.sources.synthetic import stream_rows
from streamlearn.worker.kafka.client import KafkaWriter

__all__ = ["file_messages", "produce", "synthetic_messages"]

log = logging.getLogger(__name__)

Message = tuple[bytes | None, bytes]  # (key, value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def synthetic_messages(name: str, n_events: int, seed: int) -> Iterator[Message]:
    """Events ``<name>-<i>`` of a named stream (same seed, same events).

    >>> next(synthetic_messages("sea-drift", 1, 42))[0]
    b'sea-drift-0'
    """
    for i, (x, y) in enumerate(stream_rows(name, n_events, seed)):
        event_id = f"{name}-{i}"
        event = {"id": event_id, "x": x, "y": y}
        yield event_id.encode(), json.dumps(event, default=_plain).encode()


def file_messages(path: Path) -> Iterator[Message]:
    """Non-blank lines of a JSONL file, sent as they are (keyed by id where one is readable)."""
    if not path.is_file():
        raise SourceError(f"produce: no such file {path}")
    with path.open("rb") as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield _key(line), line


def _key(line: bytes) -> bytes | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    event_id = doc.get("id") if isinstance(doc, dict) else None
    return str(event_id).encode() if isinstance(event_id, str | int) else None


def produce(
    writer: KafkaWriter,
    topic: str,
    messages: Iterable[Message],
    rate: float = 0.0,
    total: int | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send every message (paced to ``rate``/s when > 0); returns how many were acknowledged."""
    bar = tqdm(total=total, unit="ev", disable=not progress, file=stream, mininterval=0.5)
    start, sent = clock(), 0
    try:
        for key, value in messages:
            if rate > 0 and (delay := start + sent / rate - clock()) > 0:
                sleep(delay)
            writer.send(topic, value, key)
            sent += 1
            bar.update(1)
            if sent % 5_000 == 0:
                writer.settle(0.0)  # forget what is acknowledged, re-send what failed
        waited = False
        while not writer.settle(5.0):
            if not waited:
                log.warning("waiting for %d unacknowledged messages", writer.pending)
                waited = True
    finally:
        bar.close()
    return sent
