"""RankLabelled: every family of a registry, served with one more label (``rank``).

A scaled-out worker runs as several ranks; each serves its own ``/metrics`` and every family
carries ``rank`` so dashboards can show and sum per rank. Adding the label to each family's
definition would touch every ``labels()`` call; relabelling at collection does it in one place.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

__all__ = ["RankLabelled"]


class RankLabelled(Collector):
    """Collects ``inner``'s families with ``label=value`` added to every sample.

    >>> from prometheus_client import Counter, generate_latest
    >>> inner, outer = CollectorRegistry(), CollectorRegistry()
    >>> Counter("x", "doc", registry=inner).inc()
    >>> outer.register(RankLabelled(inner, "rank", "1"))
    >>> outer.get_sample_value("x_total", {"rank": "1"})
    1.0
    """

    def __init__(self, inner: CollectorRegistry, label: str, value: str) -> None:
        self.inner, self.label, self.value = inner, label, value

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [
                Sample(s.name, {**s.labels, self.label: self.value}, s.value, s.timestamp,
                       s.exemplar)
                for s in family.samples
            ]  # fmt: skip
            yield out
