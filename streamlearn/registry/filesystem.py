"""FilesystemRegistry: versioned directories and an atomically replaced pointer file.

Layout under ``root``::

    versions/00000007/model.onnx   versions/00000007/meta.json
    CURRENT                        the served version ("7\\n"), replaced via temp + rename
    memory.npz                     the error-memory snapshot, replaced the same way
    .staging/                      versions being written

A version is written in full into ``.staging`` and renamed into ``versions/`` (a directory
rename is atomic, and fails if another writer took the number first, which then takes the
next), and only then is ``CURRENT`` replaced. Readers never see a partial version. ``wait``
polls the pointer's inode/mtime every 50 ms, which is how a replica notices a publish quickly
without any daemon; several replicas on one host (or a shared volume) can watch one root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

from streamlearn.errors import ArtifactError, RegistryError
from streamlearn.export.artifact import Artifact
from streamlearn.registry.base import StoredArtifact, rollback_target

__all__ = ["FilesystemRegistry"]

_POINTER, _MEMORY, _VERSIONS, _STAGING = "CURRENT", "memory.npz", "versions", ".staging"
_FILES = ("model.onnx", "meta.json")
_STAT_STEP_S = 0.05


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` so readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class FilesystemRegistry:
    """The embedded default: no service needed, survives restarts, keeps ``keep`` versions."""

    def __init__(self, root: Path | str, keep: int = 20) -> None:
        self.root = Path(root)
        self.keep = keep
        self._closed = threading.Event()
        self._seen: tuple[int, int] | None = None  # pointer stamp at the last wait()
        self._watching = False
        try:
            (self.root / _VERSIONS).mkdir(parents=True, exist_ok=True)
            (self.root / _STAGING).mkdir(exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create registry at {self.root}: {exc}") from exc

    def check_writable(self) -> None:
        """RegistryError unless a file can be written under the root: the publisher checks at
        start-up, so a read-only volume is found then and not at the first export."""
        try:
            tempfile.TemporaryFile(dir=self.root / _STAGING).close()
        except OSError as exc:
            raise RegistryError(f"cannot write in registry at {self.root}: {exc}") from exc

    def _dir(self, version: int) -> Path:
        return self.root / _VERSIONS / f"{version:08d}"

    # -- versions -------------------------------------------------------------------------
    def versions(self) -> list[int]:
        try:
            names = os.listdir(self.root / _VERSIONS)
        except OSError as exc:
            raise RegistryError(f"cannot list {self.root / _VERSIONS}: {exc}") from exc
        return sorted(int(n) for n in names if n.isdigit())

    def publish(self, artifact: Artifact) -> int:
        try:
            version = (self.versions() or [0])[-1] + 1
            while True:
                stage = self.root / _STAGING / uuid.uuid4().hex
                stage.mkdir()
                stamped = artifact.with_version(version)
                for name, data in zip(_FILES, (stamped.onnx, stamped.meta_bytes()), strict=True):
                    with open(stage / name, "wb") as handle:
                        handle.write(data)
                        handle.flush()
                        os.fsync(handle.fileno())
                try:
                    os.rename(stage, self._dir(version))
                    break
                except OSError:  # another writer took this number: take the next
                    shutil.rmtree(stage, ignore_errors=True)
                    if not self._dir(version).exists():
                        raise
                    version += 1
            self._point(version)
        except OSError as exc:
            raise RegistryError(f"cannot publish to {self.root}: {exc}") from exc
        self._prune(version)
        return version

    def _point(self, version: int) -> None:
        _write_atomic(self.root / _POINTER, f"{version}\n".encode())

    def _prune(self, current: int) -> None:
        """Delete the oldest versions beyond ``keep`` (never the current one)."""
        stale = [v for v in self.versions()[: -self.keep] if v != current]
        for version in stale:
            shutil.rmtree(self._dir(version), ignore_errors=True)

    def current(self) -> int | None:
        try:
            text = (self.root / _POINTER).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"cannot read {self.root / _POINTER}: {exc}") from exc
        if not text.isdigit():
            raise RegistryError(f"{self.root / _POINTER} holds {text[:20]!r}, not a version")
        return int(text)

    def _read(self, version: int, name: str) -> bytes:
        folder = self._dir(version)
        try:
            return (folder / name).read_bytes()
        except FileNotFoundError:
            if not folder.is_dir():
                raise RegistryError(f"version {version} is not stored under {self.root}") from None
            raise ArtifactError("missing_file", f"version {version} has no {name}") from None
        except OSError as exc:
            raise RegistryError(f"cannot read {folder / name}: {exc}") from exc

    def fetch(self, version: int) -> StoredArtifact:
        onnx, meta = (self._read(version, name) for name in _FILES)
        return StoredArtifact(version, onnx, meta)

    def fetch_meta(self, version: int) -> bytes:
        return self._read(version, _FILES[1])

    def rollback(self, version: int | None = None) -> int:
        target = rollback_target(self.versions(), self.current(), version)
        try:
            self._point(target)
        except OSError as exc:
            raise RegistryError(f"cannot move {self.root / _POINTER}: {exc}") from exc
        return target

    # -- error memory ---------------------------------------------------------------------
    def push_memory(self, blob: bytes) -> None:
        try:
            _write_atomic(self.root / _MEMORY, blob)
        except OSError as exc:
            raise RegistryError(f"cannot write {self.root / _MEMORY}: {exc}") from exc

    def pull_memory(self) -> bytes | None:
        try:
            return (self.root / _MEMORY).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"cannot read {self.root / _MEMORY}: {exc}") from exc

    # -- watching -------------------------------------------------------------------------
    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.root / _POINTER)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._watching:
            self._seen, self._watching = self._stamp(), True
        while not self._closed.is_set():
            stamp = self._stamp()
            if stamp != self._seen:
                self._seen = stamp
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed.wait(min(_STAT_STEP_S, remaining)):
                return False
        return False

    def close(self) -> None:
        self._closed.set()
