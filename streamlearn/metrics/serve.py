"""The serving tier's metrics (``GET /metrics``): requests, swaps, refusals, the error memory,
and requests cut off by a server limit.

The request path makes two metric updates (children cached per endpoint and status code).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from streamlearn.metrics.base import SLOW_BUCKETS, MetricFactory

__all__ = ["ARTIFACT_REFUSALS", "REQUEST_LIMITS", "SWAP_RESULTS", "ServeMetrics"]

SWAP_RESULTS = ("swapped", "refused", "fetch_failed")
ARTIFACT_REFUSALS = (
    "bad_meta",
    "version_mismatch",
    "sha256_mismatch",
    "unloadable",
    "bad_signature",
    "warmup_failed",
    "missing_file",
)
REQUEST_LIMITS = ("in_flight", "header_timeout", "header_size", "body_timeout")
REQUEST_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class ServeMetrics:
    """The serving tier's metrics (``GET /metrics``); one set per server process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        m = MetricFactory(registry, "streamlearn_serve_")
        m.build_info()
        m.process_metrics()
        self.requests = m.counter(
            "requests", "HTTP requests by endpoint and status code", ["endpoint", "code"]
        )
        self.latency = m.histogram(
            "request_duration_seconds", "Request time inside the server", REQUEST_BUCKETS,
            ["endpoint"],
        )  # fmt: skip
        self._request: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        # several processes: the lowest live one (a process still on an old version, or not
        # ready, shows)
        self.model_version = m.gauge("model_version", "Version served (0 = none)", across="livemin")
        self.ready = m.gauge("ready", "1 when a model is loaded", across="livemin")
        self.swaps = m.counter("swaps", "New versions met by the watcher, by result", ["result"])
        self._swaps = {result: self.swaps.labels(result) for result in SWAP_RESULTS}
        self.swap_seconds = m.histogram(
            "swap_duration_seconds", "Fetch + verify + load + warm-up of a version", SLOW_BUCKETS
        )
        self.refused = m.counter(
            "artifacts_refused", "Artifacts refused (the old model kept serving)", ["reason"]
        )
        for reason in ARTIFACT_REFUSALS:
            self.refused.labels(reason)
        self.republished = m.counter(
            "versions_republished",
            "Versions loaded whose number is the served one's, with other bytes (a registry that "
            "restarted empty)",
        )
        self.registry_errors = m.counter("registry_errors", "Failed registry reads")
        self.rejected = m.counter(
            "requests_rejected", "Requests cut off by a server limit (serve.*), by limit", ["limit"]
        )
        self._rejected = {limit: self.rejected.labels(limit) for limit in REQUEST_LIMITS}
        self.rows = m.counter(
            "predicted_rows", "Rows predicted, by error-memory compensation", ["compensated"]
        )
        self._rows = {flag: self.rows.labels(str(flag).lower()) for flag in (True, False)}
        self.memory_updates = m.counter("memory_updates", "Error-memory snapshots taken into use")
        self.memory_refused = m.counter(
            "memory_refused", "Error-memory snapshots refused", ["reason"]
        )
        self.memory_refused.labels("bad_memory")
        self.memory_pushed_unix = m.gauge(
            "memory_pushed_timestamp_seconds",
            "When the memory in use was pushed (0 = none)",
            across="livemin",
        )
        self.memory_weight = m.gauge(
            "memory_weight",
            "Share of the error memory's compensation applied: the worker's gate weight in the "
            "memory in use (0 = none)",
            across="livemin",
        )

    def exposition(self) -> bytes:
        """The text format of ``/metrics``: this process's registry, or, with several server
        processes (``PROMETHEUS_MULTIPROC_DIR`` set), all of them aggregated."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None:
            return generate_latest(self.registry)
        aggregate = CollectorRegistry()
        MultiProcessCollector(aggregate)
        return generate_latest(aggregate)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        """One answered request (children cached: two metric updates per request)."""
        children = self._request.get((endpoint, code))
        if children is None:
            children = (self.requests.labels(endpoint, str(code)), self.latency.labels(endpoint))
            self._request[(endpoint, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_prediction(self, rows: int, compensated: bool) -> None:
        """Rows predicted, with or without the error memory's compensation."""
        self._rows[compensated].inc(rows)

    def observe_swap(self, version: int, seconds: float) -> None:
        """``version`` is served now; fetching, verifying and warming it took ``seconds``."""
        self._swaps["swapped"].inc()
        self.swap_seconds.observe(seconds)
        self.model_version.set(version)
        self.ready.set(1)

    def observe_refused(self, reason: str) -> None:
        """A version was refused (the old model keeps serving)."""
        self._swaps["refused"].inc()
        self.refused.labels(reason).inc()

    def observe_republished(self) -> None:
        """The version about to be served has the served one's number but other bytes."""
        self.republished.inc()

    def observe_rejected(self, limit: str) -> None:
        """A request was cut off by ``limit`` (one of REQUEST_LIMITS)."""
        self._rejected[limit].inc()

    def observe_registry_error(self, fetching: bool = False) -> None:
        """A registry read failed; ``fetching``: while fetching a new version."""
        self.registry_errors.inc()
        if fetching:
            self._swaps["fetch_failed"].inc()

    def observe_memory(self, pushed_unix: float, weight: float) -> None:
        """An error-memory snapshot (pushed at ``pushed_unix``, applied at ``weight``) is in
        use now."""
        self.memory_updates.inc()
        self.memory_pushed_unix.set(pushed_unix)
        self.memory_weight.set(weight)

    def observe_memory_refused(self, reason: str) -> None:
        """An error-memory snapshot was refused."""
        self.memory_refused.labels(reason).inc()
