"""Exception tree: every error streamlearn raises on purpose derives from StreamlearnError.

StreamlearnError
├── ConfigError          settings that cannot be used (names the key)
├── SchemaError          a feature or class the model cannot take (capacity, unknown class)
└── SourceError          a source that cannot be opened or read (file missing, unknown stream)
"""

from __future__ import annotations

__all__ = ["ConfigError", "SchemaError", "SourceError", "StreamlearnError"]


class StreamlearnError(Exception):
    """Root of every error streamlearn raises deliberately."""


class ConfigError(StreamlearnError):
    """Settings are missing, malformed or contradictory; raised at start-up."""


class SchemaError(StreamlearnError):
    """Input does not fit the model's locked schema (e.g. a class beyond capacity)."""


class SourceError(StreamlearnError):
    """A source cannot be opened or produced unreadable data."""
