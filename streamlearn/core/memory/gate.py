"""CompensationGate: how much of the error memory's compensation to apply, learned online.

The memory's compensation helps right after a drift and can cost accuracy on a stationary
stream (its neighbours' labels are noise there). The learner sees, for every labelled event
before it learns it, both the base prediction ŷ_base and the compensated one ŷ_comp, so it
can judge the compensation prequentially: the gate is a :class:`~streamlearn.core.hedge.Hedge`
with ŷ_base first and ŷ_comp second, its weight the compensation's share. Its loss is the 0/1
loss of the arg max for classes (1 − p(true class) was measured to keep losses, decision 0030).
The limits are asymmetric (decision 0030): the base model is the
default, so the compensation goes off soon after it starts losing (small L⁺) and must win
for longer to come back (larger L⁻). On a detected drift Δ restarts at ``prior`` > 0: the
memory restarts empty then, its compensation helps most in the events after a drift, and
how it did on the old concept says little about the new one.

The weight travels with the memory's snapshot to serving.
"""

from __future__ import annotations

from streamlearn.core.hedge import Hedge

__all__ = ["CompensationGate"]


class CompensationGate(Hedge):
    """The error memory's gate: ``update(target, base, compensated)``; ``weight`` is the
    compensation's share; restarted at a detected drift (the memory restarts empty)."""
