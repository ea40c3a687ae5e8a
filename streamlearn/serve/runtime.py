"""Serving runtime: one immutable (model, memory) reference, and the watcher that swaps it.

Requests read :attr:`ServingRuntime.state` once and use that pair to the end, so a swap never
changes a request half-way: in-flight requests finish on the old bundle, the next ones get the
new one, and nothing is locked on the request path. The watcher thread (or an admin reload)
fetches a new version, verifies its sha256, loads and warms it *before* the reference moves; a
corrupt, truncated or mismatching artifact is refused, counted and logged once, and the old
model keeps serving. Artifacts are told apart by digest, the sha256 of their ``meta.json``
(which records the model's sha256), read every poll: a number is no identity, since a registry
that restarts empty numbers from 1 again. So refusals are remembered by digest (not refetched
until an admin reload), and a version with the served number but another digest is loaded. A
rollback passes the same checks before the registry pointer moves. The error memory is pulled
every ``memory_poll_s`` and swapped the same way.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from streamlearn.core.neighbours import queries
from streamlearn.errors import ArtifactError, RegistryError
from streamlearn.export.artifact import ModelBundle, load_bundle, sha256_hex
from streamlearn.export.memory import MemorySnapshot, decode_memory
from streamlearn.metrics.serve import ServeMetrics
from streamlearn.registry.base import Registry, rollback_target

__all__ = ["Refusal", "Served", "ServingRuntime"]

log = logging.getLogger(__name__)
_SLICE_S = 0.25  # longest the watcher blocks without looking at its stop flag
_REFUSALS_KEPT = 1000  # digests remembered; beyond, the oldest is forgotten (refused again if met)


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
        slots = m.neighbour_slots <= b.numeric_slots
        same = m.hidden_dim == b.hidden_dim and m.width == width and m.regression == b.regression
        return same and slots


@dataclass(frozen=True, slots=True)
class Refusal:
    """An artifact serving will not load: the version number it had, and why."""

    version: int
    reason: str  # the metric label (ArtifactError.reason)
    message: str


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
        self.pointer: int | None = None  # the registry pointer at the last look
        self._digest: str | None = None  # of the served artifact
        self._refused: dict[str, Refusal] = {}  # digest → refusal, skipped until a reload
        self._stranded: str | None = None  # pointer digest with no good version to fall back to
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
        snapshot = served.snapshot
        if self.compensate and snapshot is not None and served.memory_fits():
            self.metrics.observe_prediction(len(prediction), True)
            if snapshot.neighbours is not None:  # mixed in first, as the worker does
                query = queries(num, snapshot.neighbour_slots)
                prediction = snapshot.neighbours.compensate(query, prediction)
            if snapshot.error_memory is not None:
                prediction = snapshot.error_memory.compensate(hidden, prediction)
            return prediction, hidden, True
        self.metrics.observe_prediction(len(prediction), False)
        return prediction, hidden, False

    # -- refresh --------------------------------------------------------------------------
    @property
    def refused(self) -> dict[int, str]:
        """Refused artifacts as version number → reason (for status; remembered by digest)."""
        return {r.version: r.reason for r in list(self._refused.values())}

    def refresh_model(self) -> bool:
        """Swap in the artifact the registry points at if it is new and good; True on a swap.

        With nothing served yet and the pointer on a refused artifact, the newest older stored
        version that passes is served instead, so the replica becomes ready (the pointer is
        left alone: it belongs to the worker and the operators).
        """
        with self._lock:
            start = time.perf_counter()
            try:
                pointer = self.registry.current()
            except RegistryError as exc:
                self.metrics.observe_registry_error()
                log.warning("registry pointer unreadable, keeping the current model: %s", exc)
                return False
            self.pointer = pointer
            if pointer is None:
                return False
            try:
                digest = self._identify(pointer)
                if digest == self._digest:
                    return False
                found = self._check(pointer, digest)
                if isinstance(found, Refusal) and self.state.bundle is None:
                    found, digest = self._fall_back(pointer, found, digest)
            except RegistryError as exc:
                self.metrics.observe_registry_error(fetching=True)
                log.warning(
                    "cannot fetch version %s, keeping %s: %s", pointer, _v(self.state.bundle), exc
                )
                return False
            if isinstance(found, Refusal):
                return False
            self._swap(found, digest, start)
            return True

    def _identify(self, version: int) -> str:
        """The artifact's digest: sha256 of its meta.json (small: read every poll). A version
        without one is keyed by its number, met again only while it still lacks it."""
        try:
            return sha256_hex(self.registry.fetch_meta(version))
        except ArtifactError:
            return f"no meta.json at version {version}"

    def _check(self, version: int, digest: str) -> ModelBundle | Refusal:
        """Everything a swap demands of ``version``: fetch, meta, sha256, load, signature and
        warm-up. A refusal is remembered by digest, counted and logged once; an artifact refused
        before is not fetched again. RegistryError passes."""
        known = self._refused.get(digest)
        if known is not None:
            return known
        try:
            stored = self.registry.fetch(version)
            return load_bundle(version, stored.onnx, stored.meta, self.warm_rows)
        except ArtifactError as exc:
            refusal = self._refused[digest] = Refusal(version, exc.reason, str(exc))
            if len(self._refused) > _REFUSALS_KEPT:
                del self._refused[next(iter(self._refused))]
            self.metrics.observe_refused(exc.reason)
            log.error(
                "refused model version %s (digest %.12s), keeping %s: %s",
                version, digest, _v(self.state.bundle), exc,
            )  # fmt: skip
            return refusal

    def _fall_back(
        self, pointer: int, refusal: Refusal, digest: str
    ) -> tuple[ModelBundle | Refusal, str]:
        """The newest stored version older than the refused ``pointer`` that passes, with its
        digest; else the pointer's refusal, logged once as the reason the replica is not ready."""
        if digest == self._stranded:
            return refusal, digest
        for version in reversed([v for v in self.registry.versions() if v < pointer]):
            older = self._identify(version)
            found = self._check(version, older)
            if isinstance(found, ModelBundle):
                log.warning(
                    "the registry points at refused version %s (%s); serving %s, the newest "
                    "older version that passes, until the pointer moves",
                    pointer, refusal.reason, version,
                )  # fmt: skip
                return found, older
        self._stranded = digest
        log.error(
            "not ready: the registry points at refused version %s (%s) and no older stored "
            "version passes; publish a good version or roll back to one",
            pointer, refusal.message,
        )  # fmt: skip
        return refusal, digest

    def _swap(self, bundle: ModelBundle, digest: str, start: float) -> None:
        """Serve ``bundle`` from the next request on (callers hold the lock)."""
        served = self.state.bundle
        if served is not None and served.version == bundle.version:
            self.metrics.observe_republished()
            log.warning(
                "version %s was re-published with other bytes (digest %.12s, was %.12s; a "
                "registry that restarted empty?): serving the new one",
                bundle.version, digest, self._digest,
            )  # fmt: skip
        self.state = Served(bundle, self.state.snapshot)  # the swap: one reference
        self._digest = digest
        self.metrics.observe_swap(bundle.version, time.perf_counter() - start)
        log.info("serving model version %s (was %s)", bundle.version, _v(served))

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
            weight = 0.0 if snapshot.error_memory is None else snapshot.error_memory.weight
            self.metrics.observe_memory(snapshot.pushed_unix, weight)
            return True

    def reload(self) -> int | None:
        """Admin: forget refusals (so they are checked again), re-read pointer and memory now;
        the version served."""
        with self._lock:
            self._refused.clear()
            self._stranded = None
            self._memory_digest = None
        self.refresh_model()
        self.refresh_memory()
        return _v(self.state.bundle)

    def rollback(self, version: int | None = None) -> int:
        """Admin: serve ``version`` (default: the newest stored one older than the pointer) and
        point the registry at it, only once it passed every check of a swap: the pointer never
        moves to an artifact replicas refuse. Returns it; ArtifactError if it is refused, with
        the pointer unchanged; RegistryError if it is not stored or the registry fails."""
        with self._lock:
            start = time.perf_counter()
            target = rollback_target(self.registry.versions(), self.registry.current(), version)
            digest = self._identify(target)
            found = None if digest == self._digest else self._check(target, digest)
            if isinstance(found, Refusal):
                raise ArtifactError(
                    found.reason, f"version {target} fails the checks of a swap ({found.message})"
                )
            self.registry.rollback(target)
            self.pointer = target
            if found is not None:
                self._swap(found, digest, start)
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
