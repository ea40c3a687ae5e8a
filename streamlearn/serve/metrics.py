"""Serving metrics, built against a CollectorRegistry passed in (nothing registered at import).

The seam for the observability work (issue 6): add metrics here; handlers and the watcher
only call the methods below.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


class ServeMetrics:
    """Requests, latency, model swaps and refusals, error-memory freshness."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "streamlearn_serve_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "streamlearn_serve_request_seconds",
            "Request handling time inside the server",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_version = Gauge(
            "streamlearn_serve_model_version", "Version being served (0 = none)", registry=registry
        )
        self.ready = Gauge("streamlearn_serve_ready", "1 when a model is loaded", registry=registry)
        self.swaps = Counter(
            "streamlearn_serve_swaps", "Model versions swapped in", registry=registry
        )
        self.swap_seconds = Histogram(
            "streamlearn_serve_load_seconds",
            "Fetch + verify + load + warm time of a new version",
            registry=registry,
        )
        self.refused = Counter(
            "streamlearn_serve_artifacts_refused",
            "Artifacts refused (the old model kept serving), by reason",
            ["reason"],
            registry=registry,
        )
        self.registry_errors = Counter(
            "streamlearn_serve_registry_errors",
            "Failed reads of the registry (the current model kept serving)",
            registry=registry,
        )
        self.memory_updates = Counter(
            "streamlearn_serve_memory_updates",
            "Error-memory snapshots taken into use",
            registry=registry,
        )
        self.memory_refused = Counter(
            "streamlearn_serve_memory_refused",
            "Error-memory snapshots refused, by reason",
            ["reason"],
            registry=registry,
        )
        self.memory_pushed_unix = Gauge(
            "streamlearn_serve_memory_pushed_timestamp_seconds",
            "When the worker pushed the error memory in use (0 = none)",
            registry=registry,
        )

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(code)).inc()
        self.latency.labels(endpoint).observe(seconds)
