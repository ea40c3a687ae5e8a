"""FusedTrainer: the state of TabularNet's hand-fused training step.

One flat float32 buffer holds the dense layers' parameters (the module's parameters are views of
it, so export, checkpoints and scoring see every update), with its gradient and AdamW moments;
beside it the embedding table's lazy-Adam moments, the step count, the active input widths and
the cached parameter views. The step's compute lives in the step kernels: torch ops in
kernels/torch_step.py (forward, hand-derived backward, clipping, AdamW, lazy sparse Adam), and
the compiled form in kernels/compiled.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from streamlearn.core.model import TabularNet

if TYPE_CHECKING:
    from streamlearn.kernels.torch_step import Views

__all__ = ["FusedTrainer"]

_BETAS = (0.9, 0.999)  # torch.optim.AdamW / SparseAdam defaults
_EPS = 1e-8


class FusedTrainer:
    """The buffers of one TabularNet's training step, which a step kernel updates without
    autograd (kernels/torch_step.py, or the compiled form).

    It switches the model's parameters to ``requires_grad=False``: nothing records a graph,
    so no step needs ``torch.no_grad()`` (whose context manager, entered a few times per
    micro-batch, costs more than some of the small ops it would wrap).
    """

    betas = _BETAS  # the optimizer's constants, which the compiled step is given too
    eps = _EPS

    def __init__(self, model: TabularNet, weight_decay: float, clip_norm: float) -> None:
        model.requires_grad_(False)
        self.model = model
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.regression = model.regression
        self.table = model.embedding.weight
        self.numeric_slots = model.numeric_slots
        # the periodic features the step computes from each active slot, where the model has
        # them: their frequencies [numeric_slots, k] and scale; layer 0's numeric columns are
        # numeric_inputs = numeric_slots · input_width
        self.frequencies = model.frequencies
        self.periodic_scale = model.periodic_scale
        self.input_width = model.numeric_inputs // model.numeric_slots
        self.numeric_inputs = model.numeric_inputs
        self.categorical_slots = model.categorical_slots
        self.flat = torch.cat([p.detach().flatten() for p in self._dense()]).float()
        self.grad = torch.zeros_like(self.flat)
        self._bind()
        self.step = torch.zeros((), dtype=torch.float32, device=self.flat.device)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        # lazy Adam moments of the embedding rows: [buckets, 2 (mean, square), dim]
        self.table_moments = self.table.new_zeros((self.table.shape[0], 2, self.table.shape[1]))
        self.active_num = 0
        self.active_cat = 0

    def _dense(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p is not self.table]

    def _bind(self) -> None:
        """Make the module's dense parameters (and their gradients) views of the flat buffers."""
        views: dict[int, torch.Tensor] = {}
        offset = 0
        for p in self._dense():
            n = p.numel()
            p.data = self.flat[offset : offset + n].view_as(p)
            views[id(p)] = self.grad[offset : offset + n].view_as(p)
            offset += n
        layers = [m for m in self.model.body if isinstance(m, nn.Linear)] + [self.model.head]
        # plain lists: nn.Module attribute lookups cost more than the small ops they feed
        self.weights = [layer.weight for layer in layers]
        self.biases = [layer.bias for layer in layers]
        self.weight_grads = [views[id(w)] for w in self.weights]
        self.bias_grads = [views[id(b)] for b in self.biases]
        wide = self.model.wide  # the wide term's [outputs, inputs] weights and gradient, or None
        self.wide = None if wide is None else wide.weight
        self.wide_grad = None if wide is None else views[id(wide.weight)]
        # the parameter and gradient slices of each set of active widths (a numeric, c
        # categorical, k outputs), made by the torch step kernel as it meets them
        self.views: dict[tuple[int, int, int], Views] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Without the cached views, made again as they are met."""
        return {name: value for name, value in self.__dict__.items() if name != "views"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickling copies views as separate tensors: bind the module to the buffer again.
        Pickles from before the learner held its step kernel carry a flag, whether this trainer
        ran the compiled step ("compiled_step", before the rename "native"): kept as
        ``pickled_compiled`` for the learner, which binds its kernel again (it pops it).
        Pickles from before the step's ops left core/ carry the cached views as ``_views``;
        those from before the periodic features have none."""
        used = state.pop("compiled_step", state.pop("native", None))
        state.pop("_views", None)
        if "frequencies" not in state:  # pickled before the periodic features: none
            state.update(frequencies=None, periodic_scale=0.0, input_width=1)
            state["numeric_inputs"] = state["numeric_slots"]
        self.__dict__.update(state)
        self._bind()
        if used is not None:
            self.pickled_compiled = bool(used)

    # -- widths -----------------------------------------------------------------------------
    def observe_inputs(self, num: np.ndarray, cat: np.ndarray) -> None:
        """Widen the active input to every slot this batch sets (it never narrows)."""
        self.active_num = _widened(num, self.active_num)
        self.active_cat = _widened(cat, self.active_cat)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
            "table_moments": self.table_moments,
            "active": [self.active_num, self.active_cat],
        }

    def from_torch_optim(self, dense: dict[str, Any], sparse: dict[str, Any]) -> dict[str, Any]:
        """:meth:`state_dict` from the AdamW + SparseAdam state of the learner before the fused
        step (checkpoints written by it). Which slots were active is not known there, so every
        slot counts as active: slower, never wrong."""
        params = self._dense()
        slots = [dense["state"].get(i, {}) for i in range(len(params))]

        def moment(name: str) -> torch.Tensor:
            return torch.cat(
                [
                    torch.as_tensor(s[name]).flatten() if name in s else torch.zeros(p.numel())
                    for s, p in zip(slots, params, strict=True)
                ]
            )

        table = sparse["state"].get(0, {})
        zeros = torch.zeros_like(self.table)
        return {
            "step": torch.tensor(max((float(s.get("step", 0)) for s in slots), default=0.0)),
            "exp_avg": moment("exp_avg"),
            "exp_avg_sq": moment("exp_avg_sq"),
            "table_moments": torch.stack(
                [table.get("exp_avg", zeros), table.get("exp_avg_sq", zeros)], dim=1
            ),
            "active": [self.numeric_slots, self.categorical_slots],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The optimizer state; one saved before the wide term (its moments one block short,
        the wide weights' block, last in the buffer) gets zero moments for it, as a new one."""
        for name in ("step", "table_moments"):
            getattr(self, name).copy_(state[name])
        for name in ("exp_avg", "exp_avg_sq"):
            own, saved = getattr(self, name), torch.as_tensor(state[name])
            missing = own.numel() - saved.numel()
            if missing and self.wide is not None and missing == self.wide.numel():
                own.zero_()
                own[: saved.numel()].copy_(saved)
            else:
                own.copy_(saved)
        self.active_num, self.active_cat = (int(v) for v in state["active"])


def _widened(values: np.ndarray, active: int) -> int:
    """``active`` widened to 1 + the last column with any non-zero value; only the columns
    beyond it are read, usually all zero (one reduction)."""
    rest = values[:, active:]
    if not rest.any():
        return active
    return active + int(np.flatnonzero(rest.any(axis=0))[-1]) + 1


def __getattr__(name: str) -> Any:
    """``_Views``, the cached views' class, which pickles from before the step's ops moved to
    kernels/torch_step.py name here (their trainer drops them when it binds again)."""
    if name == "_Views":
        from streamlearn.kernels.torch_step import Views

        return Views
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
