"""Event sources behind one protocol: synthetic streams, JSONL files, in-memory (tests)."""

from streamlearn.sources.base import Source, batched
from streamlearn.sources.file import FileSource
from streamlearn.sources.memory import MemorySource
from streamlearn.sources.synthetic import STREAMS, StreamSpec, SyntheticSource

__all__ = [
    "STREAMS",
    "FileSource",
    "MemorySource",
    "Source",
    "StreamSpec",
    "SyntheticSource",
    "batched",
]
