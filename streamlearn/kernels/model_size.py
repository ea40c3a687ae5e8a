"""When a model is large: the size at which 'auto' changes where and how it computes."""

from __future__ import annotations

__all__ = ["LARGE_MODEL_MULTIPLY_ADDS", "is_large"]

# A model of at least this many multiply-adds in one event's forward pass (layer 0 at its full
# width: every slot, with its periodic features) is large. Below it a micro-batch's cost is
# per-op overhead and narrow products, which the compiled CPU step keeps lowest; a GPU pays a
# fixed cost of kernel launches and synchronisations per micro-batch that such a model never
# makes up for. Above it the arithmetic of wide hidden layers dominates: torch's products beat
# the compiled step's on a CPU, and a GPU beats both. Both crossovers lie near the 256 × 256
# model (about 260k with the default features); the default 64 × 64 one has about 61k
# (benchmarks/gpu_throughput.py; decisions 0037, 0043).
LARGE_MODEL_MULTIPLY_ADDS = 250_000


def is_large(multiply_adds: int) -> bool:
    """Whether a model of ``multiply_adds`` per event counts as large (see above)."""
    return multiply_adds >= LARGE_MODEL_MULTIPLY_ADDS
