"""The torch step's hand-fused ops must compute what autograd + torch.optim compute on
TabularNet, on a FusedTrainer's buffers."""

import copy
import pickle

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from streamlearn.core.model import TabularNet
from streamlearn.core.training_step import FusedTrainer
from streamlearn.kernels.torch_step import (
    Views,
    backward,
    forward,
    learn,
    losses,
    prediction,
)

NUM, CAT, BUCKETS, DIM, CLASSES = 5, 3, 40, 4, 6


def make_model(regression: bool, wide: bool = False) -> TabularNet:
    torch.manual_seed(0)
    model = TabularNet(NUM, CAT, BUCKETS, DIM, (12, 10), CLASSES, regression=regression, wide=wide)
    if wide:  # not the zeros it starts at: its products and gradients must show
        torch.nn.init.normal_(model.wide.weight, std=0.3)
    model.class_mask[:4] = True  # classes 4 and 5 not seen yet
    model.target_loc.fill_(0.5)
    model.target_scale.fill_(2.0)
    return model


def make_batch(rng: np.random.Generator, regression: bool, n: int = 24, categorical: bool = True):
    """Numeric slot 4 and categorical slot 2 stay unused; bucket 0 (padding) appears."""
    num = np.zeros((n, NUM), np.float32)
    num[:, :3] = rng.normal(size=(n, 3))
    cat = np.zeros((n, CAT), np.int64)
    if categorical:
        cat[:, :2] = rng.integers(0, 12, size=(n, 2))  # repeats, so rows must be summed
    y = rng.normal(size=n).astype(np.float32) if regression else rng.integers(0, 4, n)
    return num, cat, y


def reference_loss(model: TabularNet, num, cat, y) -> torch.Tensor:
    out, _ = model.raw(torch.from_numpy(num), torch.from_numpy(cat))
    if model.regression:
        z = (torch.from_numpy(y) - model.target_loc) / model.target_scale
        return ((out - z) ** 2).mean()
    return F.cross_entropy(out, torch.from_numpy(y))


def fused_pass(trainer: FusedTrainer, num, cat, y):
    trainer.observe_inputs(num, cat)
    k = 1 if trainer.regression else int(trainer.model.class_mask.sum())  # 4 seen classes
    p = forward(trainer, torch.from_numpy(num), torch.from_numpy(cat), k)
    return p, torch.from_numpy(y)


def trainer_and_reference(
    regression: bool, seed: int, categorical: bool = True, wide: bool = False
):
    """A trainer on one model and an untouched copy of it, plus one batch and its pass."""
    model = make_model(regression, wide)
    reference = copy.deepcopy(model)
    trainer = FusedTrainer(model, weight_decay=0.0, clip_norm=5.0)
    num, cat, y = make_batch(np.random.default_rng(seed), regression, categorical=categorical)
    p, y_t = fused_pass(trainer, num, cat, y)
    return trainer, reference, (num, cat, y), p, y_t


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("regression", [False, True])
def test_forward_matches_the_module(regression, wide):
    trainer, reference, (num, cat, y), p, y_t = trainer_and_reference(regression, 1, wide=wide)
    with torch.no_grad():
        out, hidden = reference.raw(torch.from_numpy(num), torch.from_numpy(cat))
        pred, _ = reference(torch.from_numpy(num), torch.from_numpy(cat))
        expected = reference_loss(reference, num, cat, y)
    torch.testing.assert_close(p.hidden[-1], hidden)
    torch.testing.assert_close(prediction(trainer, p, 10), pred[:10])
    if not regression:
        torch.testing.assert_close(p.out, out[:, :4])
    torch.testing.assert_close(losses(trainer, p, y_t).mean(), expected)


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("categorical", [True, False])
@pytest.mark.parametrize("regression", [False, True])
def test_gradients_match_autograd(regression, categorical, wide):
    trainer, reference, (num, cat, y), p, y_t = trainer_and_reference(
        regression, 2, categorical, wide
    )
    model = trainer.model
    with torch.no_grad():
        sparse = backward(trainer, p, y_t)
    assert (sparse is None) == (not categorical)  # no categorical input: no embedding work
    ids, rows = sparse if sparse is not None else (torch.zeros(0, dtype=torch.long), None)
    reference_loss(reference, num, cat, y).backward()
    fused_grads = dict(
        zip(
            map(id, trainer.weights + trainer.biases),
            trainer.weight_grads + trainer.bias_grads,
            strict=True,
        )
    )
    if wide:
        fused_grads[id(trainer.wide)] = trainer.wide_grad
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        if name == "embedding.weight":
            dense = torch.zeros_like(ours)
            if rows is not None:
                dense[ids] = rows
            torch.testing.assert_close(dense, theirs.grad.to_dense(), msg=name)
        else:
            torch.testing.assert_close(fused_grads[id(ours)], theirs.grad, msg=name)


@pytest.mark.parametrize(
    ("regression", "weight_decay", "clip", "wide"),
    [(False, 0.0, 5.0, False), (True, 0.01, 0.05, False), (False, 0.0, 0.05, True)],
)
def test_updates_match_torch_optimizers(regression, weight_decay, clip, wide):
    """Several steps (clipping active when clip is small) against AdamW + SparseAdam."""
    model = make_model(regression, wide)
    reference = copy.deepcopy(model)
    trainer = FusedTrainer(model, weight_decay=weight_decay, clip_norm=clip)
    table = reference.embedding.weight
    dense = [p for p in reference.parameters() if p is not table]
    adamw = torch.optim.AdamW(dense, lr=0.01, weight_decay=weight_decay)
    sparse = torch.optim.SparseAdam([table], lr=0.01)
    rng = np.random.default_rng(3)
    for _ in range(5):
        num, cat, y = make_batch(rng, regression)
        p, y_t = fused_pass(trainer, num, cat, y)
        assert learn(trainer, p, y_t, lr=0.01)
        adamw.zero_grad()
        sparse.zero_grad()
        reference_loss(reference, num, cat, y).backward()
        table.grad = table.grad.coalesce()
        grads = [q.grad for q in dense] + [table.grad.values()]
        _clip(grads, clip)
        adamw.step()
        sparse.step()
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


def _clip(grads, clip):
    """The learner's rule: one global norm over dense and sparse gradients."""
    norm = torch.nn.utils.get_total_norm(grads)
    scale = (clip / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale)


def test_unused_inputs_and_classes_are_not_computed_and_stay_untouched():
    model = make_model(False)
    trainer = FusedTrainer(model, weight_decay=0.0, clip_norm=5.0)
    before = copy.deepcopy(model.state_dict())
    rng = np.random.default_rng(4)
    for _ in range(3):
        p, y_t = fused_pass(trainer, *make_batch(rng, False))
        assert learn(trainer, p, y_t, lr=0.01)
    assert (trainer.active_num, trainer.active_cat, p.out.shape[1]) == (3, 2, 4)
    first = model.body[0].weight
    assert torch.equal(first[:, 3:NUM], before["body.0.weight"][:, 3:NUM])
    assert torch.equal(first[:, NUM + 2 * DIM :], before["body.0.weight"][:, NUM + 2 * DIM :])
    assert torch.equal(model.head.weight[4:], before["head.weight"][4:])
    assert torch.equal(model.embedding.weight[0], torch.zeros(DIM))  # padding row
    assert not torch.equal(first[:, :3], before["body.0.weight"][:, :3])


def test_non_finite_gradient_changes_nothing():
    model = make_model(False)
    trainer = FusedTrainer(model, weight_decay=0.0, clip_norm=5.0)
    num, cat, y = make_batch(np.random.default_rng(5), False)
    num[0, 0] = np.inf
    before = copy.deepcopy(model.state_dict())
    p, y_t = fused_pass(trainer, num, cat, y)
    assert not learn(trainer, p, y_t, lr=0.01)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert float(trainer.step) == 0.0


def test_module_parameters_are_views_of_the_trained_buffer():
    """Export, checkpoints and scoring read the module: they must see every update."""
    model = make_model(False)
    trainer = FusedTrainer(model, weight_decay=0.0, clip_norm=5.0)
    before = copy.deepcopy(model.state_dict())
    trainer.flat.add_(1.0)
    for name in ("body.0.weight", "body.2.bias", "head.weight", "head.bias"):
        assert torch.equal(model.state_dict()[name], before[name] + 1.0), name


def test_a_pickled_copy_keeps_training_its_own_module():
    """pickle stores views as separate tensors; the copy must re-bind module and buffer."""
    trainer = FusedTrainer(make_model(False), weight_decay=0.0, clip_norm=5.0)
    twin = pickle.loads(pickle.dumps(trainer))
    rng = np.random.default_rng(6)
    p, y_t = fused_pass(twin, *make_batch(rng, False))
    assert learn(twin, p, y_t, lr=0.01)
    storage = twin.flat.untyped_storage().data_ptr()
    for param in (twin.model.body[0].weight, twin.model.head.weight, twin.model.head.bias):
        assert param.untyped_storage().data_ptr() == storage
    assert not torch.equal(twin.model.head.weight, trainer.model.head.weight)


def test_pickles_from_before_the_ops_left_core_still_load():
    """Releases before the step's ops moved to kernels/ pickled the trainer's cached views
    as ``_views``, of class ``streamlearn.core.training_step._Views``."""
    trainer = FusedTrainer(make_model(False), weight_decay=0.0, clip_norm=5.0)
    rng = np.random.default_rng(8)
    fused_pass(trainer, *make_batch(rng, False))
    assert trainer.views and b"Views" not in pickle.dumps(trainer)  # a cache: not pickled
    state = {**trainer.__getstate__(), "_views": dict(trainer.views)}
    new, old_name = (f"c{Views.__module__}\nViews\n", "cstreamlearn.core.training_step\n_Views\n")
    blob = pickle.dumps(state, protocol=2)  # names globals as text
    assert new.encode() in blob
    blob = blob.replace(new.encode(), old_name.encode())
    old = object.__new__(FusedTrainer)
    old.__setstate__(pickle.loads(blob))
    assert "_views" not in vars(old) and old.views == {}
    batch = make_batch(rng, False)
    for each in (trainer, old):
        p, y_t = fused_pass(each, *batch)
        assert learn(each, p, y_t, lr=0.01)
    assert torch.equal(old.flat, trainer.flat) and torch.equal(old.table, trainer.table)


@pytest.mark.gpu
def test_cuda_steps_match_cpu_steps():
    cpu = FusedTrainer(make_model(False), weight_decay=0.0, clip_norm=5.0)
    cuda = FusedTrainer(make_model(False).cuda(), weight_decay=0.0, clip_norm=5.0)
    rng = np.random.default_rng(7)
    for _ in range(3):
        num, cat, y = make_batch(rng, False)
        for trainer, device in ((cpu, "cpu"), (cuda, "cuda")):
            trainer.observe_inputs(num, cat)
            p = forward(
                trainer, torch.from_numpy(num).to(device), torch.from_numpy(cat).to(device), 4
            )
            assert learn(trainer, p, torch.from_numpy(y).to(device), lr=0.01)
    torch.testing.assert_close(cuda.flat.cpu(), cpu.flat, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cuda.table.cpu(), cpu.table, rtol=1e-4, atol=1e-5)
