import copy
import io

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from streamlearn.core.learner import OnlineLearner
from streamlearn.kernels import torch_step
from streamlearn.settings import FeatureSettings, LearnerSettings

FEATURES = FeatureSettings(numeric_slots=4, categorical_slots=2, hash_buckets=32, embedding_dim=3)


def make(**overrides):
    values = {
        "task": "multiclass",
        "max_classes": 3,
        "hidden": (16,),
        "lr": 0.01,
        "warmup_steps": 0,
        "replay_size": 64,
        "updates": 1,
        "replay_ratio": 0.5,
        "device": "cpu",
        "amp": "off",
        "seed": 0,
        **overrides,
    }
    learner = OnlineLearner.from_settings(LearnerSettings(**values), FEATURES)
    learner.set_classes(np.arange(learner.model.class_mask.shape[0]) < 2)
    return learner


def toy_batch(rng, n=32, regression=False):
    """Learnable: the class is the sign of num[0] + num[1]; cat carries a weaker hint."""
    num = rng.normal(size=(n, 4)).astype(np.float32)
    score = num[:, 0] + num[:, 1]
    y = 3.0 * score + 1.0 if regression else (score > 0).astype(np.int64)
    cat = np.where(score[:, None] > 0, 5, 9) * np.ones((1, 2), dtype=np.int64)
    cat[rng.random(n) < 0.3] = 0
    return num, cat, y


def params(learner):
    return {k: v.detach().clone() for k, v in learner.model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_step_returns_pre_update_predictions_and_losses():
    rng = np.random.default_rng(0)
    learner = make()
    for _ in range(5):
        learner.step(*toy_batch(rng))
    num, cat, y = toy_batch(rng)
    before = learner.predict(num, cat)
    result = learner.step(num, cat, y)
    after = learner.predict(num, cat)
    assert result.learned
    assert result.prediction.shape == (32, 3)
    np.testing.assert_allclose(result.prediction, before, rtol=0, atol=1e-6)
    assert not np.allclose(after, before, atol=1e-6)  # the step did change the model
    expected_loss = -np.log(before[np.arange(32), y])
    np.testing.assert_allclose(result.loss, expected_loss, rtol=1e-5)
    assert result.hidden.shape == (32, 16)
    assert (result.prediction[:, 2] == 0).all()  # class slot not switched on


def test_loss_decreases_on_a_learnable_problem():
    rng = np.random.default_rng(1)
    learner = make()
    losses = [learner.step(*toy_batch(rng)).loss.mean() for _ in range(150)]
    assert np.mean(losses[:5]) > 0.5
    assert np.mean(losses[-10:]) < 0.4 * np.mean(losses[:5])
    assert learner.steps == 150
    num, cat, y = toy_batch(rng, 500)
    accuracy = (learner.predict(num, cat).argmax(1) == y).mean()
    assert accuracy > 0.9


def test_regression_learns_and_tracks_target_statistics():
    rng = np.random.default_rng(2)
    learner = make(task="regression")
    seen = []
    errors = []
    for _ in range(150):
        num, cat, y = toy_batch(rng, regression=True)
        result = learner.step(num, cat, y)
        assert result.prediction.shape == (32,)
        errors.append(np.abs(result.prediction - y).mean())
        seen.append(y)
    seen = np.concatenate(seen)
    assert float(learner.model.target_loc) == pytest.approx(seen.mean(), rel=1e-5)
    assert float(learner.model.target_scale) == pytest.approx(seen.std(ddof=1), rel=1e-5)
    assert np.mean(errors[-10:]) < 0.3 * np.mean(errors[:5])


@pytest.mark.parametrize("where", ["num", "label"])
def test_non_finite_step_skipped_counted_and_weights_unchanged(where):
    rng = np.random.default_rng(3)
    regression = where == "label"
    learner = make(task="regression" if regression else "multiclass", replay_size=1024)
    for _ in range(3):
        learner.step(*toy_batch(rng, regression=regression))
    state = params(learner)
    kept = len(learner.replay)
    optimizer_state = copy.deepcopy(learner.trainer.state_dict())
    steps = learner.steps
    num, cat, y = toy_batch(rng, regression=regression)
    if where == "num":
        num[4, 1] = np.nan
    else:
        y[7] = np.inf
    result = learner.step(num, cat, y)
    assert not result.learned
    assert learner.skipped_nonfinite == 1
    assert learner.steps == steps
    assert_same(params(learner), state)
    assert str(learner.trainer.state_dict()) == str(optimizer_state)
    # the bad row must not poison later steps: not replayed, not in the target statistics
    assert len(learner.replay) == kept + 31
    assert torch.isfinite(learner.replay.num[: len(learner.replay)]).all()
    assert torch.isfinite(learner.replay.y[: len(learner.replay)].float()).all()
    for _ in range(5):
        assert learner.step(*toy_batch(rng, regression=regression)).learned
    assert learner.skipped_nonfinite == 1
    assert torch.isfinite(learner.model.target_loc) and torch.isfinite(learner.model.target_scale)
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())


def recorded_adamw(monkeypatch, record):
    """Calls of the dense-layer AdamW kernel, passed to ``record(grad, lr)`` first."""
    original = torch._fused_adamw_

    def recording(params, grads, *args, **kwargs):
        record(grads[0], kwargs["lr"])
        return original(params, grads, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adamw_", recording)


def test_gradient_clipping_bounds_the_update(monkeypatch):
    norms: list[float] = []
    recorded_adamw(monkeypatch, lambda grad, lr: norms.append(float(grad.norm())))

    def grad_norms(clip_norm):
        # the torch step, to watch its AdamW call; kernels/test_cpu_kernels.py holds the compiled
        # one to it
        learner = make(clip_norm=clip_norm, task="regression", replay_size=0, kernel="torch")
        norms.clear()
        before = [p.detach().clone() for p in learner.model.parameters()]
        num, cat, y = toy_batch(np.random.default_rng(5), regression=True)
        learner.step(num * 1e4, cat, y * 1e3)
        after = [p.detach() for p in learner.model.parameters()]
        change = max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True))
        return list(norms), change

    clipped, change = grad_norms(0.5)
    unclipped, _ = grad_norms(1e9)
    assert unclipped[0] > 10.0  # the batch would give a large gradient...
    assert clipped[0] <= 0.5 * (1 + 1e-4)  # ...clipped to clip_norm
    assert np.isfinite(change) and change <= 0.01 * 1.01  # Adam: at most ~lr per weight


def test_schedule_lr_is_applied_to_the_optimizer(monkeypatch):
    rng = np.random.default_rng(6)
    learner = make(
        lr=0.01, warmup_steps=4, rewarm_factor=3.0, rewarm_steps=2, redecay_steps=2, kernel="torch"
    )
    applied: list[float] = []
    recorded_adamw(monkeypatch, lambda grad, lr: applied.append(lr))
    for _ in range(6):
        learner.step(*toy_batch(rng))
    assert applied == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])
    learner.on_drift()
    assert learner.schedule.drift_step == 6
    for _ in range(5):
        learner.step(*toy_batch(rng))
    # re-warm 0.01 -> 0.03 over 2 steps, cosine re-decay over 2 steps, back to lr
    assert applied[6:] == pytest.approx([0.02, 0.03, 0.03, 0.02, 0.01])
    assert learner.lr == pytest.approx(0.01)


def _run(learner, batches):
    results = [learner.step(*b) for b in batches]
    return results, params(learner)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_state_round_trip_gives_identical_steps(task):
    regression = task == "regression"
    rng = np.random.default_rng(7)
    warm = [toy_batch(rng, n=int(rng.integers(5, 40)), regression=regression) for _ in range(6)]
    later = [toy_batch(rng, n=int(rng.integers(5, 40)), regression=regression) for _ in range(6)]
    a = make(task=task, replay_size=16, warmup_steps=3)
    _run(a, warm)
    a.on_drift()
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)  # the checkpoint path: no pickle of arbitrary objects
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    b = make(task=task, replay_size=16, warmup_steps=3, seed=99)  # different initial weights
    b.load_state_dict(state)
    assert b.steps == a.steps and b.lr == a.lr
    ra, pa = _run(a, later)
    rb, pb = _run(b, later)
    for x, y in zip(ra, rb, strict=True):
        np.testing.assert_array_equal(x.prediction, y.prediction)
        np.testing.assert_array_equal(x.loss, y.loss)
    assert_same(pa, pb)
    assert len(a.replay) == len(b.replay)


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    assert torch.equal(torch.rand(3), expected)  # building a learner does not consume torch RNG
    assert_same(params(a), params(b))
    assert not torch.equal(a.model.head.weight, c.model.head.weight)
    rng1, rng2 = np.random.default_rng(8), np.random.default_rng(8)
    batches1 = [toy_batch(rng1) for _ in range(5)]
    batches2 = [toy_batch(rng2) for _ in range(5)]
    _, pa = _run(a, batches1)
    _, pb = _run(b, batches2)
    assert_same(pa, pb)


def test_building_a_learner_seeds_no_other_generator(monkeypatch):
    """The weights come from the CPU generator alone: a build leaves CUDA's (and so every
    other device's) generators as they were, which torch.manual_seed would reseed."""
    seeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    make(seed=5)
    assert seeded == []


def forward_rows(monkeypatch) -> list[int]:
    """The rows of every forward pass of the torch step from now on (batch plus replay)."""
    sizes: list[int] = []
    original = torch_step.forward

    def recording_forward(trainer, num, cat, k):
        sizes.append(len(num))
        return original(trainer, num, cat, k)

    monkeypatch.setattr(torch_step, "forward", recording_forward)
    return sizes


def test_replay_fills_and_is_mixed_into_the_loss(monkeypatch):
    rng = np.random.default_rng(9)
    learner = make(replay_size=50, replay_ratio=1.0, kernel="torch")  # watches its forward
    sizes = forward_rows(monkeypatch)
    for _ in range(3):
        learner.step(*toy_batch(rng, n=20))
    assert sizes == [20, 40, 40]  # first step has nothing to replay
    assert len(learner.replay) == 50 and learner.replay.seen == 60


@pytest.mark.parametrize(
    ("task", "young", "factor", "rows"),
    [
        ("multiclass", True, 2.0, [2, 8]),  # a fast-start sub-batch of 2: the floor's 6 rows
        ("multiclass", True, 4.0, [2, 10]),  # fast_start_replay 4 × replay_ratio 1 × 2 rows
        ("multiclass", False, 4.0, [2, 4]),  # a batch of 2 otherwise: replay_ratio's 2
        # regression: no floor; its own factor, 0.5 here, × replay_ratio_regression's 2 rows
        ("regression", True, 4.0, [2, 3]),
        ("regression", False, 4.0, [2, 4]),
    ],
)
def test_a_young_learner_replays_by_its_tasks_factor(monkeypatch, task, young, factor, rows):
    learner = make(
        task=task, replay_size=50, replay_ratio=1.0, replay_ratio_regression=1.0, replay_floor=6,
        fast_start_replay=factor, fast_start_replay_regression=0.5, kernel="torch",
        max_classes=2 if task == "regression" else 3,
    )  # fmt: skip
    sizes = forward_rows(monkeypatch)
    rng = np.random.default_rng(11)
    for _ in range(2):
        num, cat, y = toy_batch(rng, n=2, regression=task == "regression")
        learner.begin_step(
            num, cat, y.astype(np.float32) if task == "regression" else y, young
        ).wait()
    assert sizes == rows  # the first step has nothing to replay


def test_replay_disabled():
    rng = np.random.default_rng(10)
    learner = make(replay_size=0)
    for _ in range(3):
        assert learner.step(*toy_batch(rng)).learned
    assert len(learner.replay) == 0


def test_loss_of_pre_update_prediction_is_cross_entropy():
    learner = make()
    num, cat, y = toy_batch(np.random.default_rng(11), n=8)
    logits, _ = learner.model.raw(
        learner.model.inputs(torch.from_numpy(num)), torch.from_numpy(cat)
    )
    expected = F.cross_entropy(logits.detach(), torch.from_numpy(y), reduction="none").numpy()
    np.testing.assert_allclose(learner.step(num, cat, y).loss, expected, rtol=1e-6)


@pytest.mark.gpu
def test_steps_on_cuda():
    rng = np.random.default_rng(12)
    learner = make(device="cuda", amp="auto")
    assert learner.device.type == "cuda"
    assert next(learner.model.parameters()).device.type == "cuda"
    assert learner.replay.num.device.type == "cuda"
    losses = []
    for _ in range(30):
        result = learner.step(*toy_batch(rng))
        assert result.learned
        assert isinstance(result.prediction, np.ndarray) and result.prediction.shape == (32, 3)
        losses.append(result.loss.mean())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    num, cat, _ = toy_batch(rng)
    assert learner.predict(num, cat).shape == (32, 3)


def test_forward_seen_equals_the_module_on_trained_rows():
    """The memory re-keys through the cheaper training forward: same numbers as the module."""
    rng = np.random.default_rng(12)
    learner = make()
    _run(learner, [toy_batch(rng) for _ in range(4)])
    num, cat, _ = toy_batch(rng)
    num_t, cat_t = torch.from_numpy(num), torch.from_numpy(cat)
    prediction, hidden = learner.forward_seen(num_t, cat_t)
    with torch.no_grad():
        expected, expected_hidden = learner.model(learner.model.inputs(num_t), cat_t)
    torch.testing.assert_close(prediction, expected)
    torch.testing.assert_close(hidden, expected_hidden)


def test_learning_records_no_autograd_graph():
    """The fused step runs without torch.no_grad(): only because nothing requires grad."""
    rng = np.random.default_rng(14)
    learner = make()
    assert not any(p.requires_grad for p in learner.model.parameters())
    _run(learner, [toy_batch(rng) for _ in range(3)])
    assert not any(p.requires_grad for p in learner.model.parameters())
    num, cat, _ = toy_batch(rng)
    prediction, hidden = learner.forward_seen(torch.from_numpy(num), torch.from_numpy(cat))
    assert prediction.grad_fn is None and hidden.grad_fn is None
    assert learner.predict(num, cat).shape == (32, 3)  # the module path too (numpy out)


def test_checkpoint_of_the_torch_optim_learner_still_loads():
    """Learner state written before the fused step (AdamW + SparseAdam) is migrated."""
    rng = np.random.default_rng(13)
    old = make()
    old.model.requires_grad_(True)  # the old learner trained its module by autograd
    table = old.model.embedding.weight
    dense = [p for p in old.model.parameters() if p is not table]
    adamw = torch.optim.AdamW(dense, lr=0.01)
    sparse = torch.optim.SparseAdam([table], lr=0.01)
    for _ in range(3):  # the old learner's step: autograd, then both optimizers
        num, cat, y = toy_batch(rng)
        out, _ = old.model.raw(old.model.inputs(torch.from_numpy(num)), torch.from_numpy(cat))
        F.cross_entropy(out, torch.from_numpy(y)).backward()
        adamw.step()
        sparse.step()
        adamw.zero_grad()
        sparse.zero_grad()
    state = old.state_dict()
    state["optimizer"], state["sparse_optimizer"] = adamw.state_dict(), sparse.state_dict()
    new = make(seed=3)
    new.load_state_dict(state)
    assert_same(params(new), params(old))
    trainer = new.trainer
    assert float(trainer.step) == 3.0
    expected = torch.cat([adamw.state[p]["exp_avg_sq"].flatten() for p in dense])
    assert torch.equal(trainer.exp_avg_sq, expected)
    assert torch.equal(trainer.table_moments[:, 0], sparse.state[table]["exp_avg"])
    assert (trainer.active_num, trainer.active_cat) == (4, 2)  # unknown: every slot
    assert new.step(*toy_batch(rng)).learned


@pytest.mark.gpu
def test_auto_puts_a_large_model_on_the_gpu_and_a_small_one_on_the_cpu():
    """learner.device auto: CUDA where it pays (kernels/device.py), the model learning there."""
    rng = np.random.default_rng(3)
    large = make(device="auto", hidden=(512, 512))
    assert large.device.type == "cuda" and large.replay.num.device.type == "cuda"
    losses = [large.step(*toy_batch(rng)).loss.mean() for _ in range(30)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert make(device="auto").device.type == "cpu"
