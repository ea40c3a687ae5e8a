"""The training step's compute in torch: the reference form, on a CPU or a CUDA device.

Autograd and ``torch.optim`` cost far more per step than the arithmetic of a model this small
(a 64-wide MLP on a 32-row batch): graph recording, hooks, per-parameter optimizer loops. The
functions here write the forward pass, the hand-derived backward pass, global-norm clipping,
AdamW (for the dense layers, on the flat buffer the module's parameters are views of) and lazy
sparse Adam (for the embedding rows in the batch) directly, on a
:class:`~streamlearn.core.training_step.FusedTrainer`'s buffers (its state: core/ holds no
ops). tests/unit/kernels/test_torch_step.py checks gradients and updates against autograd +
``torch.optim.AdamW``/``SparseAdam``.

Only the active part of the input is computed: numeric slots up to the widest one ever non-zero,
categorical slots up to the widest one ever set, class outputs switched on by ``class_mask``.
Inputs beyond those are zero (and padding rows of the embedding are zero), so they contribute
nothing to outputs or gradients: skipping them changes no result.

:class:`TorchStep` runs a batch's updates one after another, each over [batch ‖ its share of
the replay rows], with these functions; the first update's forward pass also scores the batch.
The compiled form (``CompiledTraining`` in kernels/compiled.py, step.c) runs each update in one
call, and is tested against this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F
from torch.optim.adamw import adamw

from streamlearn.kernels.backend import Inputs, Into, Scored, Shown
from streamlearn.kernels.cpu.binding import APPLIED, SKIPPED, Replay, Target
from streamlearn.kernels.device import to_device
from streamlearn.kernels.periodic import periodic_inputs
from streamlearn.kernels.torch_memory import unit_rows

if TYPE_CHECKING:
    from streamlearn.core.training_step import FusedTrainer

__all__ = [
    "Pass",
    "TorchStep",
    "Views",
    "Wide",
    "backward",
    "forward",
    "learn",
    "losses",
    "prediction",
]

# a batch's rows on the trainer's device: numeric, bucket ids, targets (float32 or int64)
Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(slots=True)
class Pass:
    """One forward pass: what the loss, the backward pass and the caller need."""

    out: torch.Tensor  # [N, k] logits of the active classes, or [N] standardised values
    hidden: list[torch.Tensor]  # post-ReLU output of each hidden layer; the last is the key
    x_num: torch.Tensor  # [N, a · input_width] active numeric inputs (periodic features too)
    ids: torch.Tensor  # [N, c] active bucket ids
    emb: torch.Tensor | None  # [N, c·e] their embeddings; None while no categorical slot is set
    views: Views  # the parameter slices it used


@dataclass(frozen=True, slots=True)
class Views:
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
    wide: Wide | None  # the wide term's slices, where the model has one


@dataclass(frozen=True, slots=True)
class Wide:
    """The wide term's slices for one set of active widths: its rows of the active outputs over
    the active numeric and embedding columns, and their gradients."""

    num_t: torch.Tensor  # [a, k]
    emb_t: torch.Tensor  # [c·e, k]
    emb: torch.Tensor  # [k, c·e] (input gradient of the embeddings)
    grad_num: torch.Tensor  # [k, a]
    grad_emb: torch.Tensor  # [k, c·e]


def views_for(trainer: FusedTrainer, a: int, c: int, k: int) -> Views:
    """Slices of the parameters and gradients for a numeric, c categorical, k outputs, kept
    in the trainer's cache (``FusedTrainer.views``, emptied when it binds its buffers)."""
    views = trainer.views.get((a, c, k))
    if views is None:
        first, grad = trainer.weights[0], trainer.weight_grads[0]
        emb = slice(trainer.numeric_inputs, trainer.numeric_inputs + c * trainer.table.shape[1])
        a *= trainer.input_width  # the active slots' columns, periodic features included
        head = trainer.weights[-1][:k]
        wide = None
        if trainer.wide is not None and trainer.wide_grad is not None:
            w, g = trainer.wide[:k], trainer.wide_grad[:k]
            wide = Wide(w[:, :a].t(), w[:, emb].t(), w[:, emb], g[:, :a], g[:, emb])
        views = trainer.views[(a, c, k)] = Views(
            first[:, :a].t(),
            first[:, emb].t(),
            first[:, emb],
            [w.t() for w in trainer.weights[1:-1]],
            head.t(),
            head,
            trainer.biases[-1][:k],
            grad[:, :a],
            grad[:, emb],
            trainer.weight_grads[-1][:k],
            trainer.bias_grads[-1][:k],
            wide,
        )
    return views


# -- forward ------------------------------------------------------------------------------------
def forward(trainer: FusedTrainer, num: torch.Tensor, cat: torch.Tensor, k: int) -> Pass:
    """Outputs over the first k output slots and the activations backward reads, over the
    trainer's active input slots."""
    a, c = trainer.active_num, trainer.active_cat
    v = views_for(trainer, a, c, k)
    x_num, ids = num[:, :a], cat[:, :c]
    if trainer.frequencies is not None:
        x_num = periodic_inputs(x_num, trainer.frequencies[:a], trainer.periodic_scale)
    h = torch.addmm(trainer.biases[0], x_num, v.num_t)
    emb = None
    if c:
        emb = trainer.table.index_select(0, ids.reshape(-1)).view(len(ids), -1)
        h.addmm_(emb, v.emb_t)
    hidden = [h.clamp_min_(0.0)]
    for w_t, b in zip(v.hidden_t, trainer.biases[1:-1], strict=True):
        hidden.append(torch.addmm(b, hidden[-1], w_t).clamp_min_(0.0))
    out = torch.addmm(v.head_bias, hidden[-1], v.head_t)
    if v.wide is not None:
        out.addmm_(x_num, v.wide.num_t)
        if emb is not None:
            out.addmm_(emb, v.wide.emb_t)
    return Pass(out.squeeze(1) if trainer.regression else out, hidden, x_num, ids, emb, v)


def losses(trainer: FusedTrainer, p: Pass, y: torch.Tensor) -> torch.Tensor:
    """[N] squared error of the standardised target, or cross-entropy."""
    if trainer.regression:
        return (p.out - _standardised(trainer, y)) ** 2
    return F.cross_entropy(p.out, y, reduction="none")


def _standardised(trainer: FusedTrainer, y: torch.Tensor) -> torch.Tensor:
    return (y - trainer.model.target_loc) / trainer.model.target_scale


def prediction(
    trainer: FusedTrainer, p: Pass, rows: int, shown: tuple[float, float] | None = None
) -> torch.Tensor:
    """Probabilities [rows, C] (zero for classes not switched on) or values [rows],
    de-standardised by ``shown`` (loc, scale), by default the model's target statistics."""
    out = p.out[:rows]
    if trainer.regression:
        if shown is not None:
            return out * shown[1] + shown[0]
        return out * trainer.model.target_scale + trainer.model.target_loc
    full = out.new_zeros((rows, trainer.model.class_mask.shape[0]))
    full[:, : out.shape[1]] = torch.softmax(out, dim=1)
    return full


# -- backward + update --------------------------------------------------------------------------
def backward(
    trainer: FusedTrainer, p: Pass, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Gradients of the mean loss into ``trainer.grad``; (touched bucket ids, their gradient
    rows), or None when no embedding was used."""
    n = len(y)
    if trainer.regression:
        d_out = ((p.out - _standardised(trainer, y)) * (2.0 / n)).unsqueeze(1)
    else:
        d_out = torch.softmax(p.out, dim=1)
        d_out.scatter_add_(1, y.unsqueeze(1), torch.full_like(d_out[:, :1], -1.0))
        d_out.mul_(1.0 / n)
    trainer.grad.zero_()
    v = p.views
    torch.mm(d_out.t(), p.hidden[-1], out=v.grad_head)
    torch.sum(d_out, 0, out=v.grad_head_bias)
    if v.wide is not None:
        torch.mm(d_out.t(), p.x_num, out=v.wide.grad_num)
    d_h = torch.mm(d_out, v.head)
    for i in range(len(p.hidden) - 1, 0, -1):
        d_h = _relu_backward(d_h, p.hidden[i])
        torch.mm(d_h.t(), p.hidden[i - 1], out=trainer.weight_grads[i])
        torch.sum(d_h, 0, out=trainer.bias_grads[i])
        d_h = torch.mm(d_h, trainer.weights[i])
    d_h = _relu_backward(d_h, p.hidden[0])
    d_h_t = d_h.t()
    torch.mm(d_h_t, p.x_num, out=v.grad_num)
    torch.sum(d_h, 0, out=trainer.bias_grads[0])
    if p.emb is None:
        return None
    torch.mm(d_h_t, p.emb, out=v.grad_emb)
    d_emb = torch.mm(d_h, v.emb)
    if v.wide is not None:
        torch.mm(d_out.t(), p.emb, out=v.wide.grad_emb)
        d_emb.addmm_(d_out, v.wide.emb)
    d_emb = d_emb.view(-1, trainer.table.shape[1])
    ids, inverse = torch.unique(p.ids.reshape(-1), return_inverse=True)
    rows = d_emb.new_zeros((len(ids), trainer.table.shape[1])).index_add_(0, inverse, d_emb)
    rows.mul_(ids.unsqueeze(1) != 0)  # padding bucket 0 stays zero, as nn.Embedding's
    return ids, rows


def learn(trainer: FusedTrainer, p: Pass, y: torch.Tensor, lr: float) -> bool:
    """Backward, clip, AdamW + sparse Adam on the trainer's buffers; False, and nothing
    changed, when the gradient is not finite."""
    sparse = backward(trainer, p, y)
    square = float(trainer.grad.dot(trainer.grad))
    if sparse is not None:
        square += float(sparse[1].pow(2).sum())
    norm = math.sqrt(square)
    if not math.isfinite(norm):
        return False
    scale = trainer.clip_norm / (norm + 1e-6)
    if scale < 1.0:
        trainer.grad.mul_(scale)
        if sparse is not None:
            sparse[1].mul_(scale)
    beta1, beta2 = trainer.betas
    # dense layers: torch's fused AdamW on the flat buffer, through its functional API
    # (which counts the step)
    adamw(
        [trainer.flat],
        [trainer.grad],
        [trainer.exp_avg],
        [trainer.exp_avg_sq],
        [],
        [trainer.step],
        fused=True,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=trainer.weight_decay,
        eps=trainer.eps,
        amsgrad=False,
        maximize=False,
    )
    if sparse is not None:
        _sparse_adam(trainer, *sparse, lr)
    return True


def _sparse_adam(trainer: FusedTrainer, ids: torch.Tensor, rows: torch.Tensor, lr: float) -> None:
    """Lazy Adam on the touched embedding rows, as torch.optim.SparseAdam computes it."""
    beta1, beta2 = trainer.betas
    step = float(trainer.step)
    moments = trainer.table_moments.index_select(0, ids)
    avg, avg_sq = moments[:, 0], moments[:, 1]
    avg.lerp_(rows, 1 - beta1)
    avg_sq.mul_(beta2).addcmul_(rows, rows, value=1 - beta2)
    trainer.table_moments.index_copy_(0, ids, moments)
    step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    trainer.table.index_add_(0, ids, avg / avg_sq.sqrt_().add_(trainer.eps), alpha=-step_size)


def _relu_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The gradient through a ReLU, from its output, in one kernel (not compare + multiply)."""
    return torch.ops.aten.threshold_backward(grad, output, 0.0)


class TorchStep:
    """:class:`~streamlearn.kernels.backend.StepKernel` in torch ops on the trainer's device;
    never overlaps."""

    name = "torch"
    overlaps = False

    def __init__(self, trainer: FusedTrainer | None = None) -> None:
        self._trainer = trainer

    def bind(self, trainer: FusedTrainer) -> TorchStep:
        return TorchStep(trainer)

    def check(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray, outputs: int) -> Rows:
        trainer = self._trainer
        assert trainer is not None, "an unbound step kernel: bind it to a trainer"
        trainer.observe_inputs(num, cat)
        device = trainer.flat.device
        targets = y.astype(np.float32 if trainer.regression else np.int64)
        return to_device(num, device), to_device(cat, device), to_device(targets, device)

    def begin(
        self, rows: Rows, replay: Replay | None, outputs: int, lrs: list[float], target: Target
    ) -> None:
        return None  # no worker thread: run() the step

    def run(
        self, rows: Rows, replay: Replay | None, outputs: int, lrs: list[float], target: Target
    ) -> Scored:
        trainer = self._trainer
        assert trainer is not None, "an unbound step kernel: bind it to a trainer"
        num, cat, y = rows
        batch = y.shape[0]
        per_update, replayed = 0, None
        if replay is not None:  # one gather serves every update's share
            r_num, r_cat, r_y, drawn = replay
            idx = torch.from_numpy(drawn).to(r_num.device)
            replayed = (
                r_num.index_select(0, idx),
                r_cat.index_select(0, idx),
                r_y.index_select(0, idx),
            )
            per_update = len(drawn) // len(lrs)

        def mixed(update: int) -> Rows:
            """The batch followed by this update's share of the replay rows."""
            if replayed is None:
                return num, cat, y
            share = slice(update * per_update, (update + 1) * per_update)
            r_num, r_cat, r_y = replayed
            return (
                torch.cat([num, r_num[share]]),
                torch.cat([cat, r_cat[share]]),
                torch.cat([y, r_y[share]]),
            )

        x_num, x_cat, y_all = mixed(0)
        first = forward(trainer, x_num, x_cat, outputs)
        scored = prediction(trainer, first, batch, target[2:])
        row_losses = losses(trainer, first, y_all)  # training loss and prequential loss
        pre_loss, total = row_losses[:batch], float(row_losses.sum())
        codes = [self._learn(first, y_all, total, lrs[0])]
        for update in range(1, len(lrs)):
            x_num, x_cat, y_all = mixed(update)
            again = forward(trainer, x_num, x_cat, outputs)
            loss = float(losses(trainer, again, y_all).sum())
            codes.append(self._learn(again, y_all, loss, lrs[codes.count(APPLIED)]))
        return Scored(  # the fused step is float32 throughout
            scored.cpu().numpy(),
            pre_loss.cpu().numpy(),
            first.hidden[-1][:batch].cpu().numpy(),
            pre_loss,
            total,
            codes,
            None,
        )

    def _learn(self, p: Pass, y: torch.Tensor, loss: float, lr: float) -> int:
        """One update, SKIPPED (nothing changed) where the summed loss or the gradient is not
        finite."""
        assert self._trainer is not None
        return APPLIED if math.isfinite(loss) and learn(self._trainer, p, y, lr) else SKIPPED

    def wait(self) -> list[int]:
        return []  # nothing is ever left running

    def score(
        self, num: np.ndarray, cat: np.ndarray, outputs: int, shown: Shown
    ) -> tuple[np.ndarray, np.ndarray]:
        trainer = self._trainer
        assert trainer is not None, "an unbound step kernel: bind it to a trainer"
        if cat.size and (cat.min() < 0 or cat.max() >= trainer.table.shape[0]):
            raise IndexError(f"bucket id outside [0, {trainer.table.shape[0]}) in the rows")
        trainer.observe_inputs(num, cat)
        device = trainer.flat.device
        p = forward(trainer, to_device(num, device), to_device(cat, device), outputs)
        pred = prediction(trainer, p, len(num), shown)
        return pred.float().cpu().numpy(), p.hidden[-1].float().cpu().numpy()

    def forward_into(
        self, inputs: Inputs, outputs: int, into: Into, shown: Shown, overlap: bool = False
    ) -> bool:
        trainer = self._trainer
        assert trainer is not None, "an unbound step kernel: bind it to a trainer"
        p = forward(trainer, *inputs, outputs)
        pred = prediction(trainer, p, len(inputs[0]), shown)
        predicted, keys = into
        unit_rows(p.hidden[-1].float(), out=keys)
        predicted.copy_(pred.float().view_as(predicted))
        return False
