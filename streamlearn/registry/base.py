"""The Registry protocol: versioned artifacts, one pointer to the served version, rollback,
change notification, and the error-memory blob beside them.

Backends store bytes and never interpret them (serving verifies what it fetches, see
:mod:`streamlearn.export.artifact`). Versions are positive integers given out by the registry
in publish order; ``publish`` writes the artifact completely before the pointer moves, so a
reader that follows the pointer never sees half a version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from streamlearn.errors import RegistryError
from streamlearn.export.artifact import Artifact

__all__ = ["Registry", "StoredArtifact", "rollback_target"]


@dataclass(frozen=True)
class StoredArtifact:
    """One version as stored: raw ``model.onnx`` and ``meta.json`` bytes."""

    version: int
    onnx: bytes
    meta: bytes


@runtime_checkable
class Registry(Protocol):
    """Where the worker publishes and serving replicas watch."""

    def publish(self, artifact: Artifact) -> int:
        """Store a new version (its ``meta.version`` set), then point at it; returns it."""
        ...

    def current(self) -> int | None:
        """The version to serve, or None before the first publish."""
        ...

    def versions(self) -> list[int]:
        """Stored versions, oldest first."""
        ...

    def fetch(self, version: int) -> StoredArtifact:
        """The stored bytes of one version (RegistryError if it is not there)."""
        ...

    def fetch_meta(self, version: int) -> bytes:
        """The version's ``meta.json`` bytes alone: small, so serving reads them every poll to
        tell artifacts apart by digest (RegistryError if the version is not there,
        ArtifactError("missing_file") if it has no meta.json)."""
        ...

    def rollback(self, version: int | None = None) -> int:
        """Point at ``version``, or at the newest stored version older than the current one."""
        ...

    def push_memory(self, blob: bytes) -> None:
        """Replace the error-memory snapshot."""
        ...

    def pull_memory(self) -> bytes | None:
        """The latest error-memory snapshot, or None if none was pushed."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block until a change is signalled (True) or ``timeout`` seconds pass (False).

        Changes between two calls are not lost: the next call returns True at once. Never
        raises (an unreachable backend just waits out the timeout).
        """
        ...

    def close(self) -> None:
        """Release connections and wake a blocked :meth:`wait`."""
        ...


def rollback_target(versions: list[int], current: int | None, version: int | None) -> int:
    """Which version a rollback points at (shared by the backends); RegistryError if none."""
    if version is not None:
        if version not in versions:
            raise RegistryError(f"version {version} is not stored (stored: {versions[-10:]})")
        return version
    older = [v for v in versions if current is None or v < current]
    if not older:
        raise RegistryError(f"no stored version older than {current} to roll back to")
    return older[-1]
