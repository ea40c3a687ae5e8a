"""When a model is large: the size at which 'auto' changes where and how it computes."""

from __future__ import annotations

__all__ = ["LARGE_MODEL_MULTIPLY_ADDS", "is_large"]

# A model of at least this many multiply-adds in one event's forward pass is large. Below it a
# micro-batch's cost is per-op overhead, which the compiled CPU step keeps lowest; a GPU pays a
# fixed cost of kernel launches and synchronisations per micro-batch that such a model never
# makes up for. Above it the arithmetic dominates: torch's matrix products beat the compiled
# step's on a CPU, and a GPU beats both. The crossovers lie between the default 64-wide model
# (about 20k) and a 256-wide one (about 120k) (benchmarks/gpu_throughput.py, decision 0037).
LARGE_MODEL_MULTIPLY_ADDS = 64_000


def is_large(multiply_adds: int) -> bool:
    """Whether a model of ``multiply_adds`` per event counts as large (see above)."""
    return multiply_adds >= LARGE_MODEL_MULTIPLY_ADDS
