"""What both roles' metrics share: constructors bound to one registry and name prefix.

No ``*_created`` series: prometheus-client exports one per counter and histogram child by
default, doubling the series for a timestamp nobody queries (``disable_created_metrics`` is
process-wide; every streamlearn registry turns it off). Each registry carries the process
metrics (``process_resident_memory_bytes``, ``process_open_fds``, ``process_start_time_seconds``
and friends) and the garbage collector's (``python_gc_collections_total{generation}`` and the
objects collected) of the process that answers the scrape: full (generation 2) collections are
what the start-up heap's freeze makes cheap (streamlearn/heap.py).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

from streamlearn import __version__

__all__ = ["SLOW_BUCKETS", "Across", "MetricFactory"]

# how a gauge's values from several server processes combine (prometheus-client's names)
Across = Literal["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum"]

_WITH_PROCESS: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()  # have process metrics

SLOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class MetricFactory:
    """Metric constructors bound to one registry and name prefix."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.registry, self.prefix = registry, prefix
        disable_created_metrics()

    def process_metrics(self) -> None:
        """RSS, CPU time, open and max fds, start time of this process (Linux ``/proc``) and its
        garbage collections per generation, once per registry (the worker's and the server's
        families may share one)."""
        if self.registry not in _WITH_PROCESS:
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
            _WITH_PROCESS.add(self.registry)

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(self.prefix + name, doc, labels, registry=self.registry)

    def gauge(
        self, name: str, doc: str, labels: Sequence[str] = (), across: Across = "all"
    ) -> Gauge:
        """``across``: how several server processes' values combine (prometheus-client's
        multiprocess mode; ignored in one process)."""
        return Gauge(
            self.prefix + name, doc, labels, registry=self.registry, multiprocess_mode=across
        )

    def histogram(
        self, name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        return Histogram(self.prefix + name, doc, labels, buckets=buckets, registry=self.registry)

    def build_info(self) -> None:
        """``<prefix>build_info{version} 1`` (a gauge, as an Info would expose it: Info has no
        multiprocess mode)."""
        self.gauge("build_info", "streamlearn version", ["version"], "max").labels(__version__).set(
            1
        )
