"""FusedTrainer: TabularNet's training step as a short, fixed sequence of tensor ops.

Autograd and ``torch.optim`` cost far more per step than the arithmetic of a model this small
(a 64-wide MLP on a 32-row batch): graph recording, hooks, per-parameter optimizer loops. This
step writes the forward pass, the hand-derived backward pass, global-norm clipping, AdamW (for
the dense layers, on one flat buffer the module's parameters are views of) and lazy sparse Adam
(for the embedding rows in the batch) directly. tests/unit/core/test_training_step.py checks
gradients and updates against autograd + ``torch.optim.AdamW``/``SparseAdam``.

Only the active part of the input is computed: numeric slots up to the widest one ever non-zero,
categorical slots up to the widest one ever set, class outputs switched on by ``class_mask``.
Inputs beyond those are zero (and padding rows of the embedding are zero), so they contribute
nothing to outputs or gradients: skipping them changes no result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.adamw import adamw

from streamlearn.core.model import TabularNet

__all__ = ["FusedTrainer", "Pass"]

_BETAS = (0.9, 0.999)  # torch.optim.AdamW / SparseAdam defaults
_EPS = 1e-8


@dataclass(slots=True)
class Pass:
    """One forward pass: what the loss, the backward pass and the caller need."""

    out: torch.Tensor  # [N, k] logits of the active classes, or [N] standardised values
    hidden: list[torch.Tensor]  # post-ReLU output of each hidden layer; the last is the key
    x_num: torch.Tensor  # [N, a] active numeric inputs
    ids: torch.Tensor  # [N, c] active bucket ids
    emb: torch.Tensor | None  # [N, c·e] their embeddings; None while no categorical slot is set
    views: _Views  # the parameter slices it used


@dataclass(frozen=True, slots=True)
class _Views:
    """The parameter and gradient slices one set of active widths reads, made once per set:
    slicing and transposing afresh on every pass cost more than the products they feed."""

    num_t: torch.Tensor  # first layer's numeric columns, transposed [a, H]
    emb_t: torch.Tensor  # its embedding columns, transposed [c·e, H]
    emb: torch.Tensor  # the same, untransposed [H, c·e] (input gradient of the embeddings)
    hidden_t: list[torch.Tensor]  # later hidden layers' weights, transposed
    head_t: torch.Tensor  # head rows of the active classes, transposed [H, k]
    head: torch.Tensor  # [k, H]
    head_bias: torch.Tensor  # [k]
    grad_num: torch.Tensor  # gradient slices matching the above
    grad_emb: torch.Tensor
    grad_head: torch.Tensor
    grad_head_bias: torch.Tensor


class FusedTrainer:
    """Forward, backward and optimizer update of one TabularNet, without autograd.

    It switches the model's parameters to ``requires_grad=False``: nothing here records a
    graph, so no call needs ``torch.no_grad()`` (whose context manager, entered a few times
    per micro-batch, costs more than some of the small ops it would wrap). Its buffers are
    what a step kernel (kernels/torch_step.py, or the compiled form) updates.
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
        self._views: dict[tuple[int, int, int], _Views] = {}

    def _views_for(self, a: int, c: int, k: int) -> _Views:
        """Slices of the parameters and gradients for a numeric, c categorical, k outputs."""
        views = self._views.get((a, c, k))
        if views is None:
            first, grad = self.weights[0], self.weight_grads[0]
            emb = slice(self.numeric_slots, self.numeric_slots + c * self.table.shape[1])
            head = self.weights[-1][:k]
            views = self._views[(a, c, k)] = _Views(
                first[:, :a].t(),
                first[:, emb].t(),
                first[:, emb],
                [w.t() for w in self.weights[1:-1]],
                head.t(),
                head,
                self.biases[-1][:k],
                grad[:, :a],
                grad[:, emb],
                self.weight_grads[-1][:k],
                self.bias_grads[-1][:k],
            )
        return views

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickling copies views as separate tensors: bind the module to the buffer again.
        Pickles from before the learner held its step kernel carry a flag, whether this trainer
        ran the compiled step ("compiled_step", before the rename "native"): kept as
        ``pickled_compiled`` for the learner, which binds its kernel again (it pops it)."""
        used = state.pop("compiled_step", state.pop("native", None))
        self.__dict__.update(state)
        self._bind()
        if used is not None:
            self.pickled_compiled = bool(used)

    # -- widths -----------------------------------------------------------------------------
    def observe_inputs(self, num: np.ndarray, cat: np.ndarray) -> None:
        """Widen the active input to every slot this batch sets (it never narrows)."""
        self.active_num = _widened(num, self.active_num)
        self.active_cat = _widened(cat, self.active_cat)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, num: torch.Tensor, cat: torch.Tensor, k: int) -> Pass:
        """Outputs over the first k output slots and the activations backward reads."""
        a, c = self.active_num, self.active_cat
        v = self._views_for(a, c, k)
        x_num, ids = num[:, :a], cat[:, :c]
        h = torch.addmm(self.biases[0], x_num, v.num_t)
        emb = None
        if c:
            emb = self.table.index_select(0, ids.reshape(-1)).view(len(ids), -1)
            h.addmm_(emb, v.emb_t)
        hidden = [h.clamp_min_(0.0)]
        for w_t, b in zip(v.hidden_t, self.biases[1:-1], strict=True):
            hidden.append(torch.addmm(b, hidden[-1], w_t).clamp_min_(0.0))
        out = torch.addmm(v.head_bias, hidden[-1], v.head_t)
        return Pass(out.squeeze(1) if self.regression else out, hidden, x_num, ids, emb, v)

    def losses(self, p: Pass, y: torch.Tensor) -> torch.Tensor:
        """[N] squared error of the standardised target, or cross-entropy."""
        if self.regression:
            return (p.out - self._standardised(y)) ** 2
        return F.cross_entropy(p.out, y, reduction="none")

    def _standardised(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.model.target_loc) / self.model.target_scale

    def prediction(
        self, p: Pass, rows: int, shown: tuple[float, float] | None = None
    ) -> torch.Tensor:
        """Probabilities [rows, C] (zero for classes not switched on) or values [rows],
        de-standardised by ``shown`` (loc, scale), by default the model's target statistics."""
        out = p.out[:rows]
        if self.regression:
            if shown is not None:
                return out * shown[1] + shown[0]
            return out * self.model.target_scale + self.model.target_loc
        full = out.new_zeros((rows, self.model.class_mask.shape[0]))
        full[:, : out.shape[1]] = torch.softmax(out, dim=1)
        return full

    # -- backward + update ------------------------------------------------------------------
    def _backward(self, p: Pass, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Gradients of the mean loss into ``self.grad``; (touched bucket ids, their
        gradient rows), or None when no embedding was used."""
        n = len(y)
        if self.regression:
            d_out = ((p.out - self._standardised(y)) * (2.0 / n)).unsqueeze(1)
        else:
            d_out = torch.softmax(p.out, dim=1)
            d_out.scatter_add_(1, y.unsqueeze(1), torch.full_like(d_out[:, :1], -1.0))
            d_out.mul_(1.0 / n)
        self.grad.zero_()
        v = p.views
        torch.mm(d_out.t(), p.hidden[-1], out=v.grad_head)
        torch.sum(d_out, 0, out=v.grad_head_bias)
        d_h = torch.mm(d_out, v.head)
        for i in range(len(p.hidden) - 1, 0, -1):
            d_h = _relu_backward(d_h, p.hidden[i])
            torch.mm(d_h.t(), p.hidden[i - 1], out=self.weight_grads[i])
            torch.sum(d_h, 0, out=self.bias_grads[i])
            d_h = torch.mm(d_h, self.weights[i])
        d_h = _relu_backward(d_h, p.hidden[0])
        d_h_t = d_h.t()
        torch.mm(d_h_t, p.x_num, out=v.grad_num)
        torch.sum(d_h, 0, out=self.bias_grads[0])
        if p.emb is None:
            return None
        torch.mm(d_h_t, p.emb, out=v.grad_emb)
        d_emb = torch.mm(d_h, v.emb).view(-1, self.table.shape[1])
        ids, inverse = torch.unique(p.ids.reshape(-1), return_inverse=True)
        rows = d_emb.new_zeros((len(ids), self.table.shape[1])).index_add_(0, inverse, d_emb)
        rows.mul_(ids.unsqueeze(1) != 0)  # padding bucket 0 stays zero, as nn.Embedding's
        return ids, rows

    def learn(self, p: Pass, y: torch.Tensor, lr: float) -> bool:
        """Backward, clip, AdamW + sparse Adam; False, and nothing changed, when the gradient
        is not finite."""
        sparse = self._backward(p, y)
        square = float(self.grad.dot(self.grad))
        if sparse is not None:
            square += float(sparse[1].pow(2).sum())
        norm = math.sqrt(square)
        if not math.isfinite(norm):
            return False
        scale = self.clip_norm / (norm + 1e-6)
        if scale < 1.0:
            self.grad.mul_(scale)
            if sparse is not None:
                sparse[1].mul_(scale)
        beta1, beta2 = _BETAS
        # dense layers: torch's fused AdamW on the flat buffer, through its functional API
        # (which counts the step)
        adamw(
            [self.flat],
            [self.grad],
            [self.exp_avg],
            [self.exp_avg_sq],
            [],
            [self.step],
            fused=True,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=self.weight_decay,
            eps=_EPS,
            amsgrad=False,
            maximize=False,
        )
        if sparse is not None:
            self._sparse_adam(*sparse, lr)
        return True

    def _sparse_adam(self, ids: torch.Tensor, rows: torch.Tensor, lr: float) -> None:
        """Lazy Adam on the touched embedding rows, as torch.optim.SparseAdam computes it."""
        beta1, beta2 = _BETAS
        step = float(self.step)
        moments = self.table_moments.index_select(0, ids)
        avg, avg_sq = moments[:, 0], moments[:, 1]
        avg.lerp_(rows, 1 - beta1)
        avg_sq.mul_(beta2).addcmul_(rows, rows, value=1 - beta2)
        self.table_moments.index_copy_(0, ids, moments)
        step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        self.table.index_add_(0, ids, avg / avg_sq.sqrt_().add_(_EPS), alpha=-step_size)

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
        for name in ("step", "exp_avg", "exp_avg_sq", "table_moments"):
            getattr(self, name).copy_(state[name])
        self.active_num, self.active_cat = (int(v) for v in state["active"])


def _relu_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The gradient through a ReLU, from its output, in one kernel (not compare + multiply)."""
    return torch.ops.aten.threshold_backward(grad, output, 0.0)


def _widened(values: np.ndarray, active: int) -> int:
    """``active`` widened to 1 + the last column with any non-zero value; only the columns
    beyond it are read, usually all zero (one reduction)."""
    rest = values[:, active:]
    if not rest.any():
        return active
    return active + int(np.flatnonzero(rest.any(axis=0))[-1]) + 1
