"""The compiled training step (kernels/cpu/binding.py + step.c) against the torch step.

Two learners with the same seed, one per kernel, see the same batches: every prediction, loss,
hidden row, weight, Adam moment and counter must agree to float32 rounding, across tasks,
depths, embeddings, replay, several updates, clipping, weight decay and skipped steps.
"""

import copy
import functools
import importlib
import importlib.util
import logging
import os
import pickle
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamlearn.core.learner import OnlineLearner
from streamlearn.core.memory.error_memory import ErrorMemory, TopKStore
from streamlearn.core.prequential import Prequential
from streamlearn.core.replay import ReservoirBuffer
from streamlearn.errors import ConfigError
from streamlearn.kernels.backend import select_backend
from streamlearn.kernels.compiled import CompiledMemory, CompiledReservoir
from streamlearn.kernels.cpu import binding
from streamlearn.settings import FeatureSettings, LearnerSettings, load_settings

# the kernels' slot arithmetic on raw slots: a model's periodic features are made before its
# step kernel sees a batch (tests/unit/core/test_periodic_inputs.py)
FEATURES = FeatureSettings(
    numeric_slots=6, categorical_slots=3, hash_buckets=64, embedding_dim=4, periodic=0
)
CLASSES = 4


pytestmark = pytest.mark.usefixtures("compiled")


def pair(periodic: int = 0, **overrides):
    """The torch and the compiled learner of the same settings (``periodic``: the features'
    periodic inputs per slot, FEATURES otherwise)."""
    features = FEATURES.model_copy(update={"periodic": periodic})
    values = {
        "task": "multiclass",
        "max_classes": CLASSES,
        "hidden": (16, 8),
        "lr": 0.01,
        "warmup_steps": 3,
        "replay_size": 40,
        "replay_ratio": 1.0,
        "updates": 2,
        "device": "cpu",
        "seed": 3,
        **overrides,
    }
    learners = [
        OnlineLearner.from_settings(LearnerSettings(**values, kernel=kernel), features)
        for kernel in ("torch", "compiled")
    ]
    assert [learner.step_kernel.name for learner in learners] == ["torch", "compiled"]
    for learner in learners:
        if values["task"] != "regression":
            learner.set_classes(np.arange(CLASSES) < (2 if values["task"] == "binary" else 3))
    return learners


def batch(rng, task, n=24, numeric=4, categorical=2):
    """Numeric slots beyond ``numeric`` and categorical beyond ``categorical`` stay unset."""
    num = np.zeros((n, FEATURES.numeric_slots), dtype=np.float32)
    num[:, :numeric] = rng.normal(size=(n, numeric))
    cat = np.zeros((n, FEATURES.categorical_slots), dtype=np.int64)
    cat[:, :categorical] = rng.integers(0, FEATURES.hash_buckets, size=(n, categorical))
    score = num[:, 0] - num[:, 1]
    if task == "regression":
        return num, cat, (5.0 * score + 2.0).astype(np.float64)
    classes = 2 if task == "binary" else 3
    return num, cat, np.clip(np.floor(score + classes / 2), 0, classes - 1).astype(np.int64)


def assert_agree(torch_learner, compiled_learner, rtol=2e-4, atol=2e-5):
    for name, value in torch_learner.model.state_dict().items():
        other = compiled_learner.model.state_dict()[name]
        torch.testing.assert_close(other, value, rtol=rtol, atol=atol, msg=name)
    a, b = torch_learner.trainer.state_dict(), compiled_learner.trainer.state_dict()
    for name in ("step", "exp_avg", "exp_avg_sq", "table_moments"):
        torch.testing.assert_close(b[name], a[name], rtol=1e-3, atol=1e-7, msg=name)
    assert (torch_learner.steps, torch_learner.skipped_nonfinite) == (
        compiled_learner.steps,
        compiled_learner.skipped_nonfinite,
    )
    assert len(torch_learner.replay) == len(compiled_learner.replay)


@pytest.mark.parametrize(
    ("task", "overrides", "widths"),
    [
        ("multiclass", {}, (4, 2)),
        ("binary", {"hidden": (16,), "updates": 1}, (6, 3)),
        ("regression", {"weight_decay": 0.01}, (4, 2)),
        ("multiclass", {"clip_norm": 0.05}, (3, 1)),  # every update clipped
        ("binary", {"replay_size": 0}, (4, 0)),  # no replay, no embeddings
        ("multiclass", {"replay_ratio": 0.5, "updates": 3}, (5, 3)),
        ("multiclass", {"wide": False}, (4, 2)),  # no wide term
        ("regression", {"wide": False}, (4, 0)),
    ],
)
@pytest.mark.parametrize("periodic", [0, 3])  # with periodic features: made in the step
def test_compiled_step_matches_the_torch_step(task, overrides, widths, periodic):
    rng = np.random.default_rng(11)
    torch_learner, compiled_learner = pair(periodic, task=task, **overrides)
    for i in range(25):
        numeric, categorical = widths if i > 3 else (2, min(1, widths[1]))  # widths grow
        num, cat, y = batch(rng, task, numeric=numeric, categorical=categorical)
        expected = torch_learner.step(num, cat, y)
        got = compiled_learner.step(num, cat, y)
        np.testing.assert_allclose(got.prediction, expected.prediction, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(got.loss, expected.loss, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(got.hidden, expected.hidden, rtol=2e-4, atol=2e-5)
        assert got.learned == expected.learned
        assert got.prediction.dtype == expected.prediction.dtype == np.float32
        assert got.prediction.shape == expected.prediction.shape
        if i == 12:
            torch_learner.on_drift()
            compiled_learner.on_drift()
    assert compiled_learner.steps >= 25
    assert_agree(torch_learner, compiled_learner)
    scored = compiled_learner.predict(num, cat)  # the step kernel's forward = the module's
    np.testing.assert_allclose(scored, torch_learner.predict(num, cat), rtol=2e-4, atol=2e-5)
    with torch.no_grad():
        module, _ = compiled_learner.model.from_values(torch.from_numpy(num), torch.from_numpy(cat))
    np.testing.assert_allclose(scored, module.numpy(), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_non_finite_batches_are_skipped_alike(task):
    rng = np.random.default_rng(12)
    torch_learner, compiled_learner = pair(task=task)
    for i in range(8):
        num, cat, y = batch(rng, task)
        if i == 4:
            num[3, 1] = np.nan
        if i == 6:
            num[:, 0] = 1e30  # finite inputs, overflowing activations
        for learner in (torch_learner, compiled_learner):
            learner.step(num, cat, y)
    assert compiled_learner.skipped_nonfinite >= 1
    assert_agree(torch_learner, compiled_learner)
    assert all(torch.isfinite(p).all() for p in compiled_learner.model.parameters())


def test_copies_and_pickles_keep_the_compiled_step_on_their_own_buffers():
    rng = np.random.default_rng(13)
    _, learner = pair()
    for _ in range(3):
        learner.step(*batch(rng, "multiclass"))
    clone, thawed = copy.deepcopy(learner), pickle.loads(pickle.dumps(learner))
    for other in (clone, thawed):
        assert other.step_kernel.name == "compiled"
        assert other.step_kernel.binding is not learner.step_kernel.binding
    before = [p.clone() for p in learner.model.parameters()]
    data = batch(rng, "multiclass")
    results = [x.step(*data) for x in (learner, clone, thawed)]
    for result in results[1:]:
        np.testing.assert_array_equal(result.prediction, results[0].prediction)
    for x in (clone, thawed):  # each stepped its own weights, not the original's
        for p, q in zip(x.model.parameters(), learner.model.parameters(), strict=True):
            torch.testing.assert_close(p, q)
    assert any(
        not torch.equal(p, b) for p, b in zip(learner.model.parameters(), before, strict=True)
    )


def test_kernel_setting_and_a_missing_build(monkeypatch, caplog):
    deep = LearnerSettings(task="binary", device="cpu", hidden=(4,) * binding.MAX_LAYERS)
    assert (
        OnlineLearner.from_settings(deep, FEATURES).step_kernel.name == "torch"
    )  # deeper than it takes
    with pytest.raises(ConfigError, match="at most 15 hidden layers"):
        OnlineLearner.from_settings(deep.model_copy(update={"kernel": "compiled"}), FEATURES)
    monkeypatch.setattr(binding, "_loaded", None)
    monkeypatch.setattr(binding, "VARIANTS", (("_not_built", 0),))  # an install without them
    settings = LearnerSettings(task="binary", device="cpu")
    with caplog.at_level(logging.WARNING):
        assert (
            OnlineLearner.from_settings(settings, FEATURES).step_kernel.name == "torch"
        )  # auto: torch
    assert any(
        record.levelno == logging.WARNING
        and "no compiled kernels were built" in record.getMessage()
        for record in caplog.records
    )  # the reason, logged
    with pytest.raises(ConfigError, match=r"learner.kernel.*no compiled kernels were built"):
        OnlineLearner.from_settings(settings.model_copy(update={"kernel": "compiled"}), FEATURES)
    with pytest.raises(SystemExit) as exit_:
        binding.main([])
    assert exit_.value.code == 1
    monkeypatch.setattr(binding, "_loaded", None)


def runnable_variants():
    """(module name, file) of every variant built here that this CPU runs, best first."""
    chosen = binding.find()
    levels = dict(binding.VARIANTS)
    return [
        (name, Path(importlib.util.find_spec(name).origin))
        for name in binding.built()
        if levels[name.rpartition(".")[2]] <= chosen.cpu_level
    ]


def test_the_best_variant_this_cpu_runs_is_loaded(monkeypatch):
    chosen = binding.find()
    assert chosen.module == runnable_variants()[0][0]
    assert Path(binding.load().__file__) == chosen.path
    assert binding.load().MAX_LAYERS == binding.MAX_LAYERS  # step.h's, as Python counts them
    assert chosen.path.parent == Path(binding.__file__).parent
    if platform.machine() in ("x86_64", "AMD64"):
        assert chosen.cpu_level >= 1
        assert len(binding.built()) == len(binding.VARIANTS)  # v4, v3 and the baseline
        baseline = importlib.import_module(binding.built()[-1])
        for level, variant in ((4, "x86-64-v4"), (3, "x86-64-v3"), (2, "x86-64"), (1, "x86-64")):
            monkeypatch.setattr(baseline, "cpu_level", level)  # as a CPU of that level says
            assert binding.find().variant == variant
    else:
        assert chosen.cpu_level == 0 and chosen.variant == "baseline"


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_every_variant_this_cpu_runs_matches_the_torch_step(monkeypatch, task):
    rng = np.random.default_rng(14)
    data = [batch(rng, task) for _ in range(8)]
    for name, _ in runnable_variants():
        monkeypatch.setattr(binding, "_loaded", importlib.import_module(name))
        torch_learner, compiled_learner = pair(task=task)
        for num, cat, y in data:
            expected, got = torch_learner.step(num, cat, y), compiled_learner.step(num, cat, y)
            np.testing.assert_allclose(got.prediction, expected.prediction, rtol=2e-4, atol=2e-5)
        assert_agree(torch_learner, compiled_learner)
    monkeypatch.setattr(binding, "_loaded", None)


def test_the_installed_kernels_load_with_no_compiler_on_path(tmp_path):
    """Nothing is compiled at run time: a process whose PATH holds no tool at all (a container
    without a compiler) runs the compiled step, and the command line names the variant."""
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {"PATH": str(bare), "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:  # where the dependencies come from there (not a tool)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    code = (
        "from streamlearn.core.learner import OnlineLearner\n"
        "from streamlearn.settings import FeatureSettings, LearnerSettings\n"
        "settings = LearnerSettings(task='binary', device='cpu', kernel='compiled')\n"
        "learner = OnlineLearner.from_settings(settings, FeatureSettings())\n"
        "print(learner.step_kernel.binding.library.__file__)\n"
    )
    run = functools.partial(
        subprocess.run, capture_output=True, text=True, check=False, cwd=tmp_path, env=env
    )
    loaded = run([sys.executable, "-c", code])
    assert loaded.returncode == 0, loaded.stderr
    assert Path(loaded.stdout.strip()) == binding.find().path
    shown = run([sys.executable, "-m", "streamlearn.kernels.cpu.binding"])
    assert shown.returncode == 0, shown.stderr
    assert f"the {binding.find().variant} build" in shown.stdout
    assert str(binding.find().path) in shown.stdout


def test_the_built_kernels_are_not_older_than_their_sources():
    """An editable install (pip install -e .) builds the kernels beside their sources, once:
    after a change to a C file, installing again rebuilds them (nothing compiles at run
    time). An installed package has no sources beside them."""
    here = Path(binding.__file__).parent
    sources = [*here.glob("*.c"), *here.glob("*.h")]
    if not sources:
        pytest.skip("an installed package: no sources beside the kernels")
    newest = max(source.stat().st_mtime for source in sources)
    stale = [path.name for _, path in runnable_variants() if path.stat().st_mtime < newest]
    assert not stale, f"{stale} older than their sources: pip install -e . builds them again"


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_weights_of_slots_and_classes_never_active_move_only_by_weight_decay(weight_decay):
    """Without weight decay the compiled step updates only the active blocks (the others'
    gradients and moments are zero, so AdamW leaves them as they are); with it, all of them,
    as the torch step does."""
    torch_learner, compiled_learner = pair(weight_decay=weight_decay)
    trainer = compiled_learner.trainer
    before = [w.clone() for w in trainer.weights]
    rng = np.random.default_rng(22)
    for _ in range(6):
        data = batch(rng, "multiclass", numeric=3, categorical=1)
        for learner in (torch_learner, compiled_learner):
            learner.step(*data)
    assert_agree(torch_learner, compiled_learner)
    ns, e = FEATURES.numeric_slots, FEATURES.embedding_dim
    inactive = [
        (trainer.weights[0], (slice(None), slice(3, ns)), before[0]),  # numeric slots 3..5
        (trainer.weights[0], (slice(None), slice(ns + e, None)), before[0]),  # bucket slots 1, 2
        (trainer.weights[-1], (slice(3, None), slice(None)), before[-1]),  # classes 3.. off
    ]
    for weight, block, start in inactive:
        if weight_decay:
            assert (weight[block].abs() < start[block].abs()).all()  # decayed toward zero
        else:
            assert torch.equal(weight[block], start[block])
    assert not torch.equal(trainer.weights[1], before[1])  # hidden layers always learn
    rows, cols = trainer.weights[0].shape  # the first block of the flat buffer
    moments = trainer.exp_avg[: rows * cols].view(rows, cols)
    assert not moments[:, 3:ns].any() and moments[:, :3].all()  # zero gradients, zero moments


@pytest.mark.parametrize(
    ("regression", "k", "size", "rows_stored"),
    [
        (False, 8, 128, 200),  # a full ring, top-8
        (False, 8, 128, 40),  # partly filled
        (False, 0, 64, 100),  # k = 0: every stored sample weighs in
        (False, 8, 128, 5),  # fewer stored than k
        (True, 4, 32, 50),
    ],
)
def test_compiled_memory_compensation_matches_the_torch_one(regression, k, size, rows_stored):
    rng = np.random.default_rng(14)
    width, hidden_dim = (1 if regression else 5), 12
    memories = [
        ErrorMemory(hidden_dim, width, k=k, size=size, tau=0.2, gamma=0.3, lam=0.8,
                    regression=regression, kernel=kernel)
        for kernel in (None, CompiledMemory(binding.load()))
    ]  # fmt: skip
    for start in range(0, rows_stored, 10):
        n = min(10, rows_stored - start)
        hidden = rng.normal(size=(n, hidden_dim)).astype(np.float32)
        if regression:
            y, base = rng.normal(size=n), rng.normal(size=n).astype(np.float32)
        else:
            y = rng.integers(0, width, n)
            base = rng.dirichlet(np.ones(width), n).astype(np.float32)
        for memory in memories:
            memory.update(hidden, y, base)
    hidden = rng.normal(size=(16, hidden_dim)).astype(np.float32)
    hidden[3] = 0.0  # a zero hidden row: its key is zero, not NaN; every similarity ties
    base = (
        rng.normal(size=16).astype(np.float32)
        if regression
        else rng.dirichlet(np.ones(width), 16).astype(np.float32)
    )
    (expected, expected_keys), (got, got_keys) = (
        m.compensate_keyed(hidden, base) for m in memories
    )
    assert got.shape == expected.shape and got.dtype == np.float32
    # among tied similarities either may pick other, equally valid neighbours: row 3 is
    # compared only where every stored sample weighs in
    rows = np.arange(16) != 3 if 0 < k < rows_stored else slice(None)
    np.testing.assert_allclose(got[rows], expected[rows], rtol=1e-5, atol=1e-6)
    assert np.isfinite(got).all() and not got_keys[3].any()
    assert len(memories[1]) == min(rows_stored, size)
    torch.testing.assert_close(got_keys, expected_keys)
    assert not np.allclose(got, base)  # the memory did correct something
    if not regression:
        np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)
    thawed = pickle.loads(pickle.dumps(memories[1]))  # e.g. river's clone, checkpoints
    assert thawed.kernel.name == "compiled"
    np.testing.assert_array_equal(thawed.compensate_keyed(hidden, base)[0], got)


def test_the_binding_refuses_arrays_of_other_types_shapes_or_layouts():
    """The extension checks every array a kernel would read or write (element type, shape,
    C-contiguity, writability) and names the argument; nothing is written."""
    library = binding.load()
    rows, slots = 4, 3
    num = np.ones((rows, slots))
    stats = [np.ones(slots), np.zeros(slots), np.ones(slots)]
    out = np.full((rows, slots), 7.0, dtype=np.float32)
    read_only = out.copy()
    read_only.flags.writeable = False
    cases = [
        ((num.astype(np.float32), 3, *stats, out), TypeError, "num: a float64 array"),
        ((num[:, ::2], 2, *stats, out[:, :2]), ValueError, "num: a C-contiguous"),
        ((num, 3, stats[0][:2], *stats[1:], out), ValueError, "count: dimension 0 is 2"),
        ((num, 4, *stats, out), ValueError, r"used: 4 outside \[0, 3\]"),
        ((num, 3, *stats, read_only), ValueError, "out: a C-contiguous writable"),
        ((num, 3, *stats, out[:2]), ValueError, "out: dimension 0 is 2"),
        ((num.tolist(), 3, *stats, out), TypeError, "num: a float64 array expected, not list"),
        ((num, 3, *stats), TypeError, r"takes 6 arguments \(5 given\)"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            library.features_standardize(*args)
    assert (out == 7.0).all()
    library.features_standardize(num, 3, *stats, out)
    assert (out == 1.0).all()  # (x - mean) / std = (1 - 0) / 1


def test_the_compiled_step_refuses_what_it_cannot_run_on():
    """Step checks the trainer's buffers once (the dense ones views of the flat buffers) and a
    call's arrays each time; a call while its job runs is refused."""
    _, learner = pair()
    trainer, step = learner.trainer, learner.step_kernel.binding
    weights = [w.numpy() for w in trainer.weights]
    buffers = (
        [b.numpy() for b in trainer.biases],
        [g.numpy() for g in trainer.weight_grads],
        [g.numpy() for g in trainer.bias_grads],
        *(t.numpy() for t in (trainer.flat, trainer.grad, trainer.exp_avg, trainer.exp_avg_sq)),
        *(t.numpy() for t in (trainer.table, trainer.table_moments, trainer.step)),
    )
    rest = (False, FEATURES.numeric_slots, FEATURES.categorical_slots, 0.0, 5.0, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match=r"weights\[0\]: not a view of the flat buffer"):
        step.library.Step([weights[0].copy(), *weights[1:]], *buffers, *rest)
    with pytest.raises(ValueError, match=r"weights\[0\]: dimension 1 is 8, 18 expected"):
        step.library.Step(weights[::-1], *buffers, *rest)
    rng = np.random.default_rng(5)
    num, cat, y = batch(rng, "multiclass")
    with pytest.raises(TypeError, match="cat: a int64 array"):
        step.update((num, cat.astype(np.int32), y), None, CLASSES, 0.01)
    with pytest.raises(ValueError, match="loss: dimension 0 is 1"):
        step.update((num, cat, y), None, CLASSES, 0.01, loss=np.empty(1, np.float32))
    prediction = np.zeros((len(y), CLASSES), np.float32)
    loss, hidden = np.empty(len(y), np.float32), np.empty((len(y), 8), np.float32)
    if not step.begin((num, cat, y), None, CLASSES, [0.01], (0.0, 1.0, 0.0, 1.0),
                      prediction, loss, hidden):  # fmt: skip
        pytest.skip("no worker thread here")
    assert step.in_flight
    with pytest.raises(RuntimeError, match="a job is running"):
        step.update((num, cat, y), None, CLASSES, 0.01)
    assert step.wait() == [binding.APPLIED] and not step.in_flight
    with pytest.raises(RuntimeError, match="nothing submitted"):
        step.wait()


def test_begin_scores_on_the_worker_and_a_failed_scoring_learns_nothing():
    """begin() has the worker thread score the batch before its updates (async.c): the scores
    are written when it returns, equal to update()'s own; a batch the scoring refuses (a bucket
    id outside the table, which check() would have caught) raises, with no job left running
    and no weight or moment changed."""
    _, learner = pair()
    trainer, step = learner.trainer, learner.step_kernel.binding
    num, cat, y = batch(np.random.default_rng(11), "multiclass")
    step.check(num, cat, y, CLASSES)  # the active widths: the bucket columns are read

    def outputs() -> list[np.ndarray]:
        n = len(y)
        return [
            np.zeros((n, CLASSES), np.float32),
            np.empty(n, np.float32),
            np.empty((n, 8), np.float32),
        ]

    state = (trainer.flat, trainer.exp_avg, trainer.exp_avg_sq, trainer.step, trainer.table)
    state = (*state, trainer.table_moments)
    before = [t.clone() for t in state]
    scores = outputs()
    if not step.begin((num, cat, y), None, CLASSES, [0.01], (0.0, 1.0, 0.0, 1.0), *scores):
        pytest.skip("no worker thread here")
    assert step.wait() == [binding.APPLIED]
    learned = [t.clone() for t in state]
    for t, saved in zip(state, before, strict=True):
        t.copy_(saved)  # back to the weights begin() scored with
    expected = outputs()
    step.update((num, cat, y), None, CLASSES, 0.01, prediction=expected[0], loss=expected[1],
                hidden=expected[2])  # fmt: skip
    for got, want in zip(scores, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    for t, saved in zip(state, learned, strict=True):
        assert torch.equal(t, saved)  # the same update, on either thread
    bad = cat.copy()
    bad[3, 1] = FEATURES.hash_buckets
    with pytest.raises(IndexError, match="bucket id outside"):
        step.begin((num, bad, y), None, CLASSES, [0.01], (0.0, 1.0, 0.0, 1.0), *scores)
    assert not step.in_flight
    for t, saved in zip(state, learned, strict=True):
        assert torch.equal(t, saved)


def _compensation_by_formula(memory, hidden, base):
    """ReLoop2's compensation from the ring as stored, its k neighbours sorted by similarity,
    descending, ties to the earlier slot, a NaN below every number (float64 throughout)."""
    store = memory.storage
    keys = store.keys[: store.filled].double().numpy()
    values = store.values[: store.filled].double().numpy()
    out = []
    for h, b in zip(hidden.astype(np.float64), base.astype(np.float64), strict=True):
        sim = keys @ (h / max(np.linalg.norm(h), 1e-8)) / store.tau
        order = np.lexsort((np.arange(len(sim)), -np.nan_to_num(sim), np.isnan(sim)))
        top = order[: store.k]
        weights = np.exp(sim[top] - sim[top].max())
        ybar, ybar_base = np.split(weights / weights.sum() @ values[top], 2)
        lam, gamma = memory.lam, memory.gamma
        value = np.clip((1 - lam * gamma) * b + lam * ybar - lam * (1 - gamma) * ybar_base, 0, 1)
        out.append(value / value.sum())
    return np.array(out)


@pytest.mark.parametrize("hidden_dim", [64, 9])
@pytest.mark.parametrize("rows", [1, 3, 7, 8, 33])
def test_compiled_memory_compensates_a_row_alone_as_within_a_batch(rows, hidden_dim):
    """One query row goes through gemm_acc's padded columns, a batch through its vector tiles
    too (and padded ones for what is left); narrow keys (9) a lane of a group of rows, alone
    or beside others: every row's compensation is the same bit for bit either way (river's
    one-row API against its pandas path)."""
    rng = np.random.default_rng(3)
    width = 4
    memory = ErrorMemory(
        hidden_dim, width, k=8, size=128, tau=0.1, regression=False,
        kernel=CompiledMemory(binding.load()),
    )  # fmt: skip
    stored = rng.normal(size=(150, hidden_dim)).astype(np.float32)
    stored[:, 5] = 0.0  # zero key entries: multiplied and added like any other
    memory.update(
        stored, rng.integers(0, width, 150), rng.dirichlet(np.ones(width), 150).astype(np.float32)
    )
    hidden = rng.normal(size=(rows, hidden_dim)).astype(np.float32)
    base = rng.dirichlet(np.ones(width), rows).astype(np.float32)
    together, _ = memory.compensate_keyed(hidden, base)
    alone = np.concatenate(
        [memory.compensate_keyed(hidden[i : i + 1], base[i : i + 1])[0] for i in range(rows)]
    )
    assert np.array_equal(together, alone)


# k up to 16: passes over the keys, in blocks of 128 slots; beyond: insertion into a sorted
# list. 150 slots: equal similarities in different blocks, a NaN in the last one
@pytest.mark.parametrize(("k", "size"), [(3, 40), (8, 40), (16, 40), (20, 40), (5, 150), (16, 150)])
def test_compiled_memory_neighbours_tie_to_the_earlier_slot_and_never_a_nan(k, size):
    rng = np.random.default_rng(23)
    width, hidden_dim, stored = 3, 5, size - 4
    memory = ErrorMemory(hidden_dim, width, k=k, size=size, tau=0.5, lam=0.9, gamma=0.4,
                         kernel=CompiledMemory(binding.load()))  # fmt: skip
    distinct = rng.normal(size=(6, hidden_dim)).astype(np.float32)
    hidden = distinct[rng.integers(0, 6, stored)]  # repeated keys: equal similarities
    hidden[[4, 17, stored - 3]] = np.nan  # a NaN key: its similarity is NaN for every query
    memory.update(hidden, rng.integers(0, width, stored), rng.dirichlet(np.ones(width), stored))
    queries = np.concatenate([distinct, rng.normal(size=(4, hidden_dim))]).astype(np.float32)
    base = rng.dirichlet(np.ones(width), len(queries)).astype(np.float32)
    got, _ = memory.compensate_keyed(queries, base)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _compensation_by_formula(memory, queries, base), atol=2e-6)


@pytest.mark.parametrize("rows", [1, 7, 8, 33])
@pytest.mark.parametrize("hidden_dim", [1, 9, 16])
def test_narrow_keys_pick_as_the_blockwise_product_does(hidden_dim, rows):
    """Keys of at most 16 entries (the neighbour vote's) are compared as their similarities are
    computed; wider ones through block products. A zero entry appended past 16 changes no
    similarity, so the narrow keys' read must equal the widened ones' to float32 rounding:
    the same neighbours (ties, a NaN key, a part-filled last group of rows included)."""
    rng = np.random.default_rng(hidden_dim + rows)
    width, size = 3, 300
    keys = rng.normal(size=(size, hidden_dim)).astype(np.float32)
    keys[200:260] = keys[:60]  # repeated keys: equal similarities
    keys[[7, 150]] = np.nan
    values = rng.random((size, 2 * width)).astype(np.float32)
    queries = rng.normal(size=(rows, hidden_dim)).astype(np.float32)
    base = rng.dirichlet(np.ones(width), rows).astype(np.float32)
    wide = 17
    padded = np.zeros((size, wide), np.float32)
    padded[:, :hidden_dim] = keys
    padded_queries = np.zeros((rows, wide), np.float32)
    padded_queries[:, :hidden_dim] = queries
    library = binding.load()
    narrow, _ = binding.compensate_top_k(
        library, (keys.ctypes.data, values.ctypes.data, size), 5, 0.3, 0.9, 0.4, False,
        queries, base,
    )  # fmt: skip
    widened, _ = binding.compensate_top_k(
        library, (padded.ctypes.data, values.ctypes.data, size), 5, 0.3, 0.9, 0.4, False,
        padded_queries, base,
    )  # fmt: skip
    assert np.isfinite(narrow).all() and not np.allclose(narrow, base)
    np.testing.assert_allclose(narrow, widened, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("regression", [False, True])
def test_compiled_memory_store_matches_the_torch_one(regression):
    """Ring slots, wrap-around, a batch larger than the ring, the mirrored input rings."""
    rng = np.random.default_rng(19)
    width, hidden_dim, size = (1 if regression else 4), 6, 24
    memories = [
        ErrorMemory(hidden_dim, width, k=3, size=size, regression=regression, kernel=kernel)
        for kernel in (None, CompiledMemory(binding.load()))
    ]
    mirrors = [(torch.zeros((size, 3)), torch.zeros((size, 2), dtype=torch.long)) for _ in memories]
    for n in (10, 10, 9, 30, 5):  # wraps at 24, then a batch of 30 keeps its newest 24
        hidden = rng.normal(size=(n, hidden_dim)).astype(np.float32)
        hidden[0] = 0.0  # a zero row: a zero key, not NaN
        y = rng.normal(size=n) if regression else rng.integers(0, width, n)
        base = rng.random((n, width)).astype(np.float32).squeeze(1 if regression else ())
        num = rng.normal(size=(n, 3)).astype(np.float32)
        cat = rng.integers(0, 50, (n, 2))
        for memory, (ring_num, ring_cat) in zip(memories, mirrors, strict=True):
            stored = memory.update(hidden, y, base, mirror=(ring_num, ring_cat, num, cat))
            assert stored.all() and len(stored) == n
    (expected, got), (want, have) = (m.storage for m in memories), mirrors
    assert (got.cursor, got.filled, memories[1].writes) == (expected.cursor, expected.filled, 5)
    torch.testing.assert_close(got.keys, expected.keys)
    assert torch.equal(got.values, expected.values)
    assert torch.equal(have[0], want[0]) and torch.equal(have[1], want[1])


def test_compiled_memory_store_refuses_a_label_outside_the_slots():
    memory = ErrorMemory(4, 3, k=2, size=8, kernel=CompiledMemory(binding.load()))
    rng = np.random.default_rng(20)
    hidden, base = rng.normal(size=(2, 4)).astype(np.float32), np.full((2, 3), 1 / 3, np.float32)
    with pytest.raises(IndexError, match="3 slots"):
        memory.update(hidden, np.array([0, 3]), base)
    assert len(memory) == 0 and not memory.storage.values.any()  # nothing written


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_prequential_with_error_memory_agrees_across_kernels(task):
    """The whole loop: compiled step, compiled compensation and compiled re-keying (into the
    ring) against the torch ones, with re-keys on every step."""
    rng = np.random.default_rng(15)
    runs = [
        Prequential.from_settings(
            load_settings(
                learner={
                    "task": task,
                    "kernel": kernel,
                    "hidden": [16, 8],
                    "seed": 2,
                    "fast_start": 0,
                },
                features={
                    "numeric_slots": 6,
                    "categorical_slots": 3,
                    "hash_buckets": 64,
                    "periodic": 0,
                },
                memory={"size": 48, "k": 4, "rekey_every": 1},
                drift={"detector": "none"},
            )
        )
        for kernel in ("torch", "compiled")
    ]
    assert (
        runs[0].learner.step_kernel.name == "torch"
        and runs[1].memory.memory.kernel.name == "compiled"
    )
    for _ in range(12):
        num, _, y = batch(rng, task, n=16, categorical=0)
        xs = [
            {"a": a, "b": b, "c": c, "d": d, "k": f"k{int(abs(a) * 3)}"}
            for a, b, c, d in num[:, :4]
        ]
        outcomes = [run.process(xs, list(y)) for run in runs]
        np.testing.assert_allclose(
            outcomes[1].prediction, outcomes[0].prediction, rtol=1e-3, atol=1e-4
        )
    for run in runs:
        run.memory.ring_ready()  # the last re-key may still run on the worker thread
    rings = [run.memory.memory.storage for run in runs]
    assert runs[1].memory.rekeys == 12 and rings[1].filled == 48
    torch.testing.assert_close(rings[1].keys, rings[0].keys, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(rings[1].values, rings[0].values, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "bad", ["bucket", "negative bucket", "numeric width", "label shape", "class slot"]
)
def test_bad_input_raises_like_the_torch_step_and_changes_nothing(bad):
    rng = np.random.default_rng(16)
    task = "multiclass" if bad == "class slot" else "regression"
    torch_learner, compiled_learner = pair(task=task)
    for learner in (torch_learner, compiled_learner):
        for _ in range(3):
            learner.step(*batch(rng, task))
    state = copy.deepcopy(compiled_learner.state_dict())
    widths = (compiled_learner.trainer.active_num, compiled_learner.trainer.active_cat)
    num, cat, y = batch(rng, task)
    if bad == "class slot":
        y[4] = 3  # slot 3 exists in the head, but only 3 classes are switched on
    elif bad == "bucket":
        cat[5, 1] = FEATURES.hash_buckets
    elif bad == "negative bucket":
        cat[2, 0] = -1
    elif bad == "numeric width":
        num = num[:, :4]
    else:
        y = y.reshape(-1, 1)
    errors = (IndexError, ValueError, RuntimeError)
    with pytest.raises(errors):
        torch_learner.step(num, cat, y)
    with pytest.raises(IndexError if "bucket" in bad or "class" in bad else ValueError):
        compiled_learner.step(num, cat, y)
    after = compiled_learner.state_dict()
    assert (
        str(after["counters"]) == str(state["counters"])
        and after["replay"]["seen"] == state["replay"]["seen"]
    )
    for name, value in state["model"].items():
        assert torch.equal(after["model"][name], value), name
    assert (compiled_learner.trainer.active_num, compiled_learner.trainer.active_cat) == widths
    compiled_learner.step(*batch(rng, task))  # and it goes on learning


def test_active_widths_widen_alike_on_both_kernels():
    """The compiled check widens them as FusedTrainer.observe_inputs does: to the last
    column any row sets, never narrower."""
    rng = np.random.default_rng(24)
    learners = pair()
    for numeric, categorical in ((2, 0), (4, 1), (3, 2), (1, 1)):
        data = batch(rng, "multiclass", numeric=numeric, categorical=categorical)
        data[0][5, numeric - 1] = np.nan  # a NaN counts as set, as for numpy's any()
        for learner in learners:
            learner.step(*data)
        widths = [(lrn.trainer.active_num, lrn.trainer.active_cat) for lrn in learners]
        assert widths[0] == widths[1]
    assert widths[1] == (4, 2)


def test_memory_refuses_inputs_of_other_widths():
    memory = ErrorMemory(8, 3, k=2, size=16, kernel=CompiledMemory(binding.load()))
    rng = np.random.default_rng(17)
    memory.update(rng.normal(size=(4, 8)).astype(np.float32), np.array([0, 1, 2, 0]),
                  rng.dirichlet(np.ones(3), 4).astype(np.float32))  # fmt: skip
    base = rng.dirichlet(np.ones(3), 2).astype(np.float32)
    with pytest.raises(ValueError, match="keys of width 8"):
        memory.compensate_keyed(rng.normal(size=(2, 12)).astype(np.float32), base)
    with pytest.raises(ValueError, match="values of width 3"):
        memory.compensate_keyed(rng.normal(size=(2, 8)).astype(np.float32), base[:, :2])


@pytest.mark.parametrize("flag", ["_compiled", "_native", None])
@pytest.mark.parametrize("used", [True, False])
def test_memory_pickles_from_before_the_split_still_load(flag, used):
    """Releases before the split pickled the store as ``backend`` (the ring's read views as
    ``_zero``, ``_full``), ``_mix``, ``_one_hot`` and a flag for the compiled library:
    ``_compiled``, ``_native`` before the rename, none before the compiled memory."""
    rng = np.random.default_rng(21)
    memory = ErrorMemory(4, 3, k=2, size=8)
    hidden = rng.normal(size=(6, 4)).astype(np.float32)
    base = rng.dirichlet(np.ones(3), 6).astype(np.float32)
    memory.update(hidden, rng.integers(0, 3, 6), base)
    ring = dict(vars(memory.storage))
    ring["_zero"], ring["_full"] = ring.pop("zero"), ring.pop("full")
    store = object.__new__(TopKStore)
    store.__setstate__(ring)
    state = {name: value for name, value in vars(memory).items() if name != "kernel"}
    state["backend"], state["_mix"], state["_one_hot"] = store, memory.mix, memory.one_hot
    del state["storage"], state["mix"], state["one_hot"]
    if flag is not None:
        state[flag] = used
    restored = object.__new__(ErrorMemory)
    restored.__setstate__(state)
    assert restored.kernel.name == ("compiled" if flag and used else "torch")
    assert not {"backend", "_mix", "_one_hot", "_compiled", "_native"} & set(vars(restored))
    assert restored.storage.full[1] is restored.storage.values
    np.testing.assert_allclose(
        restored.compensate_keyed(hidden, base)[0],
        memory.compensate_keyed(hidden, base)[0],
        rtol=1e-5,
        atol=1e-6,
    )


def _pickled_before_the_step_kernel(learner, flag):
    """``learner`` as releases before the learner held its step kernel pickled it: no
    ``step_kernel``; the trainer's state holds ``flag`` (None: no flag), whether it ran the
    compiled step."""
    state = pickle.loads(pickle.dumps(learner.__getstate__()))
    del state["step_kernel"]
    trainer_state = dict(vars(state["trainer"]))
    if flag is not None:
        trainer_state[flag] = learner.step_kernel.name == "compiled"
    trainer = object.__new__(type(learner.trainer))
    trainer.__setstate__(trainer_state)
    state["trainer"] = trainer
    old = object.__new__(type(learner))
    old.__setstate__(state)
    return old


def test_pickles_from_before_the_compiled_step_still_load():
    _, learner = pair()
    learner.step(*batch(np.random.default_rng(18), "multiclass"))
    old = _pickled_before_the_step_kernel(learner, None)  # the earliest: no flag at all
    assert old.step_kernel.name == "torch" and not old.overlapping  # as that release ran
    old.step(*batch(np.random.default_rng(20), "multiclass"))


@pytest.mark.parametrize("flag", ["compiled_step", "native"])
def test_pickles_from_before_the_step_kernel_still_load_with_the_compiled_kernels(flag):
    """Releases before the step kernel was the learner's pickled the flag as the trainer's
    ``compiled_step``, before the rename ``native`` (the memory's and the reservoir's
    ``_native``: their tests ``..._pickles_from_before_the_split...``)."""
    _, learner = pair()
    learner.step(*batch(np.random.default_rng(19), "multiclass"))
    old = _pickled_before_the_step_kernel(learner, flag)
    assert old.step_kernel.name == "compiled" and old.step_kernel.binding is not None
    assert not {flag, "pickled_compiled"} & set(vars(old.trainer))
    data = batch(np.random.default_rng(21), "multiclass")
    np.testing.assert_array_equal(old.step(*data).prediction, learner.step(*data).prediction)
    for p, q in zip(old.model.parameters(), learner.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("capacity", "sizes", "y_dtype"),
    [
        (20, [5, 50, 1, 100, 144], torch.long),  # fills, crosses capacity within a batch
        (2, [500, 3], torch.long),  # one slot drawn many times in a batch: the last row wins
        (16, [7, 9, 40], torch.float32),  # regression targets
        (0, [4, 4], torch.long),
    ],
)
def test_compiled_reservoir_inserts_equal_the_torch_ones(capacity, sizes, y_dtype):
    with_c, without = (
        ReservoirBuffer(capacity, 2, 3, y_dtype, seed=11, kernel=kernel)
        for kernel in (CompiledReservoir(binding.load()), None)
    )
    rng = np.random.default_rng(0)
    for size in sizes:
        num = rng.standard_normal((size, 2)).astype(np.float32)
        cat = rng.integers(0, 1000, (size, 3))
        y = rng.integers(0, 9, size).astype(torch.empty(0, dtype=y_dtype).numpy().dtype)
        with_c.add(num, cat, y)
        without.add(num, cat, y)
        assert with_c.seen == without.seen
        for a, b in ((with_c.num, without.num), (with_c.cat, without.cat), (with_c.y, without.y)):
            assert torch.equal(a, b)
    if capacity:  # the same draws from one generator stream
        assert torch.equal(with_c.sample(9)[2], without.sample(9)[2])


def test_reservoir_rows_prepared_first_and_inserted_later_equal_add(library):
    """The learner draws while the updates still read the buffer, and inserts after them."""
    kernel = None if library is None else CompiledReservoir(library)
    split, whole = (ReservoirBuffer(16, 2, 3, torch.long, seed=5, kernel=kernel) for _ in "ab")
    rng = np.random.default_rng(1)
    for size in (10, 10, 30):
        rows = (
            rng.standard_normal((size, 2)).astype(np.float32),
            rng.integers(0, 99, (size, 3)),
            rng.integers(0, 4, size),
        )
        prepared = split.prepare(*rows)
        assert split.seen == whole.seen  # nothing inserted yet
        split.insert(prepared)
        whole.add(*rows)
        assert torch.equal(split.num, whole.num) and torch.equal(split.y, whole.y)
    stale = split.prepare(*rows)
    split.add(*rows)
    with pytest.raises(RuntimeError, match="changed between"):
        split.insert(stale)


def test_compiled_reservoir_takes_other_layouts_through_torch_and_survives_pickling():
    buffer = ReservoirBuffer(8, 2, 3, torch.long, seed=1, kernel=CompiledReservoir(binding.load()))
    reference = ReservoirBuffer(8, 2, 3, torch.long, seed=1)
    num = np.arange(40, dtype=np.float64).reshape(20, 2)  # float64, and a strided view below
    cat = np.arange(120).reshape(20, 6)[:, ::2]
    tensors = (torch.ones(5, 2), torch.ones(5, 3, dtype=torch.long), torch.arange(5))
    for target in (buffer, reference):
        target.add(num, cat, np.arange(20))
        target.add(*tensors)
    assert torch.equal(buffer.num, reference.num) and torch.equal(buffer.cat, reference.cat)
    restored, clone = pickle.loads(pickle.dumps(buffer)), copy.deepcopy(buffer)
    assert restored.kernel.name == clone.kernel.name == "compiled"
    assert torch.equal(restored.y, buffer.y)
    rows = (np.ones((3, 2), np.float32), np.ones((3, 3), np.int64), np.arange(3))
    for target in (restored, clone, buffer):
        target.add(*rows)
    assert torch.equal(restored.y, buffer.y) and torch.equal(clone.y, buffer.y)
    assert restored.seen == buffer.seen == 28


@pytest.mark.parametrize("flag", ["_compiled", "_native"])
@pytest.mark.parametrize("used", [True, False])
def test_reservoir_pickles_from_before_the_split_still_load(flag, used):
    """Releases before the split pickled a flag for the compiled inserts (``_native`` before
    the rename) and the targets' numpy dtype, ``_y_dtype``, instead of the kernel."""
    rng = np.random.default_rng(22)
    rows = [
        (rng.standard_normal((n, 2)).astype(np.float32), rng.integers(0, 9, (n, 3)), np.arange(n))
        for n in (6, 9, 12)
    ]
    buffer = ReservoirBuffer(8, 2, 3, torch.long, seed=3)
    buffer.add(*rows[0])
    state = {name: value for name, value in vars(buffer).items() if name != "kernel"}
    state[flag], state["_y_dtype"] = used, np.dtype(np.int64)
    restored = object.__new__(ReservoirBuffer)
    restored.__setstate__(state)
    assert restored.kernel.name == ("compiled" if used else "torch")
    assert not {flag, "_y_dtype"} & set(vars(restored))
    for part in rows[1:]:
        restored.add(*part)
        buffer.add(*part)
    assert torch.equal(restored.num, buffer.num) and torch.equal(restored.y, buffer.y)


@pytest.mark.parametrize(
    ("kernel", "device", "large", "expected"),
    [
        ("auto", "cpu", False, "compiled"),
        ("auto", "cuda", False, "torch"),
        ("torch", "cpu", False, "torch"),
        ("auto", "cpu", True, "torch"),  # a large model: torch's products are faster
        ("compiled", "cpu", True, "compiled"),  # asked for: obeyed
    ],
)
def test_the_backend_gives_the_compiled_inserts_where_the_model_runs_on_the_cpu(
    kernel, device, large, expected
):
    backend = select_backend(kernel, device, 2, large)
    assert backend.reservoir.name == expected
    assert backend.step.name == backend.memory.name == expected
    # the host-side stages stay compiled unless the torch backend is asked for
    assert backend.drift.name == ("numpy" if kernel == "torch" else "compiled")
    assert pickle.loads(pickle.dumps(backend)).reservoir.name == expected
    learner = OnlineLearner.from_settings(LearnerSettings(device="cpu"), FEATURES, backend)
    assert learner.replay.kernel.name == expected


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_score_gives_the_module_forward_also_over_slots_no_batch_has_set(task):
    """Score-only rows through either kernel (the slots in use) equal the module's forward,
    also where they set slots the learned batches never did (the active slots widen)."""
    rng = np.random.default_rng(5)
    learners = pair(task=task)
    for learner in learners:
        learner.step(*batch(rng, task, numeric=2, categorical=1))
    num, cat, _ = batch(rng, task, n=7, numeric=4, categorical=2)  # two more of each
    for learner in learners:
        assert (learner.trainer.active_num, learner.trainer.active_cat) == (2, 1)
        with torch.no_grad():
            expected, hidden = learner.model(torch.from_numpy(num), torch.from_numpy(cat))
        got, got_hidden = learner.predict_hidden(num, cat)
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_hidden, hidden.numpy(), rtol=1e-5, atol=1e-6)
        assert (learner.trainer.active_num, learner.trainer.active_cat) == (4, 2)


@pytest.mark.parametrize("kernel", ["torch", "compiled"])
def test_score_refuses_a_bucket_outside_the_table_and_widens_nothing(kernel):
    learner = pair()[["torch", "compiled"].index(kernel)]
    num, cat, _ = batch(np.random.default_rng(6), "multiclass", n=3)
    cat[1, 1] = FEATURES.hash_buckets
    with pytest.raises(IndexError, match="bucket"):
        learner.predict_hidden(num, cat)
    assert (learner.trainer.active_num, learner.trainer.active_cat) == (0, 0)
