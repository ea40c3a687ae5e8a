"""Periodic features of standardised values: the arithmetic TabularNet's ``inputs`` (the served
graph) and the torch step share; the compiled step computes the same in C (kernels/cpu/step.c,
``numeric_inputs``), for the active slots of each row it gathers."""

from __future__ import annotations

import math

import torch

__all__ = ["periodic_inputs"]


def periodic_inputs(num: torch.Tensor, frequencies: torch.Tensor, scale: float) -> torch.Tensor:
    """[N, slots] standardised values → [N, slots · (1 + 2k)]: per slot, z, then
    scale·sin(2π·c·z) and scale·(cos(2π·c·z) − 1) for its k frequencies c ([slots, k]),
    slot-major, so a slot not in use gives a run of zeros at its own place."""
    angle = (num * (2 * math.pi)).unsqueeze(2) * frequencies
    parts = (num.unsqueeze(2), torch.sin(angle) * scale, (torch.cos(angle) - 1.0) * scale)
    return torch.cat(parts, dim=2).flatten(1)
