"""Serving runtime: one immutable (model, memory) reference, and the watcher that swaps it.

Requests read :attr:`ServingRuntime.state` once and use that pair to the end, so a swap never
changes a request half-way: in-flight requests finish on the old bundle, the next ones get the
new one, and nothing is locked on the request path. The watcher thread (or an admin reload)
fetches a new version, verifies its sha256, loads and warms it *before* the reference moves; a
corrupt, truncated or mismatching artifact is refused, counted and remembered (not refetched
until the pointer moves or an admin reload), and the old model keeps serving. The error memory
is pulled every ``memory_poll_s`` and swapped the same way.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from streamlearn.errors import ArtifactError, RegistryError
from streamlearn.export.artifact import ModelBundle, load_bundle
from streamlearn.export.memory import MemorySnapshot, decode_memory
from streamlearn.metrics.serve import ServeMetrics
from streamlearn.registry.base import Registry

__all__ = ["Served", "ServingRuntime"]

log = logging.getLogger(__name__)
_SLICE_S = 0.25  # longest the watcher blocks without looking at its stop flag


@dataclass(frozen=True, slots=True)
class Served:
    """What a request uses: the model bundle and the error memory (either may be None)."""

    bundle: ModelBundle | None = None
    snapshot: MemorySnapshot | None = None  # the error memory and where it came from

    def memory_fits(self) -> bool:
        """The memory's keys and values have the served model's widths."""
        b, m = self.bundle, self.snapshot
        if b is None or m is None:
            return False
        width = 1 if b.regression else b.n_outputs
        return m.hidden_dim == b.hidden_dim and m.width == width and m.regression == b.regression


class ServingRuntime:
    """Holds the served state; refreshes it from a registry (thread or on demand)."""

    def __init__(
        self,
        registry: Registry,
        metrics: ServeMetrics,
        *,
        poll_s: float = 1.0,
        memory_poll_s: float = 2.0,
        warm_rows: int = 8,
        compensate: bool = True,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.poll_s, self.memory_poll_s = poll_s, memory_poll_s
        self.warm_rows = warm_rows
        self.compensate = compensate
        self.state = Served()
        self.refused: dict[int, str] = {}  # version → reason, skipped until reload
        self._memory_digest: bytes | None = None
        self._lock = threading.Lock()  # one refresh at a time (watcher vs admin)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- request path ---------------------------------------------------------------------
    def predict(
        self, served: Served, num: np.ndarray, cat: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(prediction, hidden, compensated) from one consistent ``served`` pair."""
        bundle = served.bundle
        assert bundle is not None
        prediction, hidden = bundle.run(num, cat)
        if self.compensate and served.snapshot is not None and served.memory_fits():
            self.metrics.observe_prediction(len(prediction), True)
            return served.snapshot.error_memory.compensate(hidden, prediction), hidden, True
        self.metrics.observe_prediction(len(prediction), False)
        return prediction, hidden, False

    # -- refresh --------------------------------------------------------------------------
    def refresh_model(self, force: bool = False) -> bool:
        """Swap in the registry's current version if it is new and good; True on a swap."""
        with self._lock:
            try:
                version = self.registry.current()
            except RegistryError as exc:
                self.metrics.observe_registry_error()
                log.warning("registry pointer unreadable, keeping the current model: %s", exc)
                return False
            served = self.state.bundle
            if version is None or (served is not None and served.version == version):
                return False
            if version in self.refused and not force:
                return False
            start = time.perf_counter()
            try:
                stored = self.registry.fetch(version)
                bundle = load_bundle(version, stored.onnx, stored.meta, self.warm_rows)
            except ArtifactError as exc:
                self.refused[version] = exc.reason
                self.metrics.observe_refused(exc.reason)
                log.error("refused model version %s, keeping %s: %s", version, _v(served), exc)
                return False
            except RegistryError as exc:
                self.metrics.observe_registry_error(fetching=True)
                log.warning("cannot fetch version %s, keeping %s: %s", version, _v(served), exc)
                return False
            self.state = Served(bundle, self.state.snapshot)  # the swap: one reference
            self.refused.pop(version, None)
            self.metrics.observe_swap(version, time.perf_counter() - start)
            log.info("serving model version %s (was %s)", version, _v(served))
            return True

    def refresh_memory(self) -> bool:
        """Take a new error-memory snapshot into use; True when one was."""
        with self._lock:
            try:
                blob = self.registry.pull_memory()
            except RegistryError as exc:
                self.metrics.observe_registry_error()
                log.warning("error memory unreadable, keeping the current one: %s", exc)
                return False
            if blob is None:
                return False
            digest = hashlib.blake2b(blob, digest_size=16).digest()
            if digest == self._memory_digest:
                return False
            self._memory_digest = digest
            try:
                snapshot = decode_memory(blob)
            except ArtifactError as exc:
                self.metrics.observe_memory_refused(exc.reason)
                log.error("refused error-memory snapshot: %s", exc)
                return False
            self.state = Served(self.state.bundle, snapshot)
            self.metrics.observe_memory(snapshot.pushed_unix)
            return True

    def reload(self) -> int | None:
        """Admin: retry refused versions and re-read the memory now; the version served."""
        self.refused.clear()
        self._memory_digest = None
        self.refresh_model(force=True)
        self.refresh_memory()
        return _v(self.state.bundle)

    def rollback(self, version: int | None = None) -> int:
        """Admin: move the registry pointer back and serve that version now."""
        target = self.registry.rollback(version)
        self.refused.pop(target, None)
        self.refresh_model(force=True)
        return target

    # -- watcher thread -------------------------------------------------------------------
    def _run(self) -> None:
        next_memory = 0.0
        while not self._stop.is_set():
            self.refresh_model()
            now = time.monotonic()
            if now >= next_memory:
                self.refresh_memory()
                next_memory = now + self.memory_poll_s
            self._wait(min(self.poll_s, max(0.01, next_memory - time.monotonic())))

    def _wait(self, seconds: float) -> None:
        """Wait for a registry change in short slices, so stop() is honoured quickly."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.registry.wait(min(_SLICE_S, remaining)):
                return

    def start(self) -> None:
        """Load what is there now, then watch in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="streamlearn-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)


def _v(bundle: ModelBundle | None) -> int | None:
    return None if bundle is None else bundle.version
