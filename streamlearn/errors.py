"""Exception tree: every error streamlearn raises on purpose derives from StreamlearnError.

StreamlearnError
├── ConfigError          settings that cannot be used (names the key)
├── SchemaError          a feature or class the model cannot take (capacity, unknown class)
├── SourceError          a source that cannot be opened or read (file missing, unknown stream)
│   └── KafkaUnavailable a Kafka broker that cannot be reached now (retried with backoff)
├── CheckpointError      a checkpoint that does not fit the configured model
├── ExportError          an ONNX export refused (checker failure, torch↔onnx parity too far off)
├── ArtifactError        a published artifact that cannot serve (corrupt, truncated, sha256 off)
└── RegistryError        the model registry cannot be read or written (unknown version, I/O)
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "CheckpointError",
    "ConfigError",
    "ExportError",
    "KafkaUnavailable",
    "RegistryError",
    "SchemaError",
    "SourceError",
    "StreamlearnError",
]


class StreamlearnError(Exception):
    """Root of every error streamlearn raises deliberately."""


class ConfigError(StreamlearnError):
    """Settings are missing, malformed or contradictory; raised at start-up."""


class SchemaError(StreamlearnError):
    """Input does not fit the model's locked schema (e.g. a class beyond capacity)."""


class SourceError(StreamlearnError):
    """A source cannot be opened or produced unreadable data."""


class ExportError(StreamlearnError):
    """An export was refused: the ONNX graph fails the checker or disagrees with torch."""


class ArtifactError(StreamlearnError):
    """A model artifact cannot be served; ``reason`` is a short label used in metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class RegistryError(StreamlearnError):
    """The registry backend failed (unknown version, unreachable Redis, I/O error)."""


class KafkaUnavailable(SourceError):
    """The broker could not be reached or did not answer in time; the worker retries."""


class CheckpointError(StreamlearnError):
    """A readable checkpoint that cannot be restored into the configured model."""
