"""Periodic inputs: each standardised value with its fixed-frequency sin/cos features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from serving_support import make_rows, small_settings, trained

from streamlearn.core.learner import OnlineLearner
from streamlearn.core.model import TabularNet, periodic_frequencies
from streamlearn.core.prequential import Prequential
from streamlearn.errors import ConfigError
from streamlearn.export.artifact import load_bundle
from streamlearn.export.onnx import export_prequential
from streamlearn.kernels.periodic import periodic_inputs
from streamlearn.river import Classifier, Regressor
from streamlearn.settings import FeatureSettings, LearnerSettings, load_settings

PERIODIC = {"periodic": 4}
FEATURES = FeatureSettings(
    numeric_slots=5, categorical_slots=2, hash_buckets=64, embedding_dim=4, periodic=3
)


def test_each_slot_is_followed_by_its_features_and_zero_stays_zero():
    frequencies = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    num = torch.tensor([[0.3, 0.0], [-1.2, 2.0]])
    out = periodic_inputs(num, frequencies, 0.1)
    assert out.shape == (2, 2 * (1 + 2 * 2))
    for row in range(2):
        for slot in range(2):
            z = float(num[row, slot])
            angles = [2 * math.pi * float(c) * z for c in frequencies[slot]]
            want = [z, *(0.1 * math.sin(a) for a in angles)]
            want += [0.1 * (math.cos(a) - 1.0) for a in angles]
            block = out[row, slot * 5 : (slot + 1) * 5]
            np.testing.assert_allclose(block.numpy(), want, rtol=1e-5, atol=1e-7)
    # a missing value (0 after standardising) and a slot not in use add nothing
    assert not out[0, 5:].any()


def test_every_model_of_a_stream_reads_the_same_frequencies():
    """Fixed, as a hash function's seed: a fresh model or a past expert (another weight seed)
    reads the inputs as the live one; the draw leaves the global random stream alone."""
    state = torch.random.get_rng_state()
    first = periodic_frequencies(5, 3, 0.3, 0.9)
    assert torch.equal(torch.random.get_rng_state(), state)
    models = [
        TabularNet(5, 2, 64, 4, [8], 2, periodic=3, periodic_sigma=0.3, periodic_sharp_sigma=0.9)
        for _ in range(2)
    ]
    for model in models:
        assert model.frequencies is not None
        assert torch.equal(model.frequencies, first)
    assert not torch.equal(models[0].body[0].weight, models[1].body[0].weight)
    assert torch.equal(periodic_frequencies(5, 3, 0.6, 1.8), 2 * first)


def test_the_last_half_of_the_frequencies_has_the_sharp_spread():
    """Both spreads from one draw: the first k - k // 2 columns at σ, the last k // 2 at the
    sharp σ (k = 1 keeps σ alone), each column the same N(0, 1) draw scaled."""
    unit = periodic_frequencies(2000, 4, 1.0, 1.0)
    mixed = periodic_frequencies(2000, 4, 0.3, 0.9)
    assert torch.allclose(mixed[:, :2], unit[:, :2] * 0.3)
    assert torch.allclose(mixed[:, 2:], unit[:, 2:] * 0.9)
    assert torch.allclose(mixed[:, 2:].std(), torch.tensor(0.9), rtol=0.1)  # N(0, 0.9²) draws
    assert torch.allclose(mixed[:, :2].std(), torch.tensor(0.3), rtol=0.1)
    assert torch.equal(periodic_frequencies(3, 1, 0.3, 0.9), periodic_frequencies(3, 1, 0.3, 0.3))


def test_the_first_layer_reads_every_feature_and_the_step_only_the_slots_in_use():
    """Rows stay standardised values (the reservoir keeps them so); the step computes the
    features of the active slots itself."""
    learner = OnlineLearner.from_settings(
        LearnerSettings(task="binary", hidden=(8,), device="cpu", warmup_steps=0), FEATURES
    )
    assert learner.model.numeric_inputs == 5 * 7
    assert learner.model.body[0].weight.shape == (8, 5 * 7 + 2 * 4)
    learner.set_classes(np.arange(16) < 2)
    rng = np.random.default_rng(0)
    num = np.zeros((16, 5), dtype=np.float32)
    num[:, :2] = rng.normal(size=(16, 2))  # two slots in use
    cat = np.ones((16, 2), dtype=np.int64)
    y = (num[:, 0] > 0).astype(np.int64)
    result = learner.step(num, cat, y)
    assert result.learned
    assert learner.trainer.active_num == 2  # the slots in use
    assert learner.replay.num.shape[1] == 5  # replay keeps the standardised values


def test_the_learner_scores_as_its_module_on_standardised_values():
    preq = trained("multiclass", n=400, features=PERIODIC)
    rows, _ = make_rows(30, 4, "multiclass")
    feats = preq.encoder.encode(rows)
    z = preq.encoder.standardize(feats.num)
    model = preq.learner.model
    with torch.no_grad():
        expected, _ = model(model.inputs(torch.from_numpy(z)), torch.from_numpy(feats.cat))
    np.testing.assert_allclose(preq.learner.predict(z, feats.cat), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_served_graph_takes_standardised_values_and_computes_the_features(task):
    preq = trained(task, n=400, features=PERIODIC)
    assert preq.learner.model.frequencies is not None
    artifact = export_prequential(preq)
    bundle = load_bundle(1, artifact.onnx, artifact.with_version(1).meta_bytes())
    assert artifact.meta["inputs"]["num"]["shape"] == [-1, preq.encoder.numeric_slots]
    rows, _ = make_rows(40, 6, task)
    num, cat = bundle.encode(rows)
    served, _ = bundle.run(num, cat)
    base, _ = preq.base_prediction(num, cat)  # the linear model mixed in, as served
    np.testing.assert_allclose(served, base, rtol=1e-4, atol=1e-5)


def test_a_checkpoint_restores_only_into_the_periodic_setting_it_was_written_with():
    with_features = Prequential.from_settings(small_settings(features=PERIODIC))
    without = Prequential.from_settings(small_settings(features={"periodic": 0}))
    for source, target in ((with_features, without), (without, with_features)):
        with pytest.raises(ValueError, match=r"features\.periodic"):
            target.load_state_dict(source.state_dict())


def test_a_checkpoint_restores_only_into_the_frequencies_it_was_drawn_with():
    """A checkpoint from before decision 0050 (one spread) is refused, not read with another
    draw; the settings it was written with restore it."""
    one_spread = {**PERIODIC, "periodic_sharp_sigma": 0.3}
    old = Prequential.from_settings(small_settings(features=one_spread))
    state = old.state_dict()
    with pytest.raises(ValueError, match=r"periodic_sharp_sigma"):
        Prequential.from_settings(small_settings(features=PERIODIC)).load_state_dict(state)
    restored = Prequential.from_settings(small_settings(features=one_spread))
    restored.load_state_dict(state)
    assert torch.equal(restored.learner.model.frequencies, old.learner.model.frequencies)


def test_on_by_default_with_four_frequencies_and_off_at_zero():
    """Decision 0042: on by default; the river estimators follow the settings' default."""
    assert load_settings().features.periodic == 4
    model = Prequential.from_settings(small_settings()).learner.model
    assert model.frequencies is not None and model.frequencies.shape[1] == 4
    off = Prequential.from_settings(small_settings(features={"periodic": 0}))
    assert off.learner.model.frequencies is None
    assert Classifier().periodic == Regressor().periodic == 4


def test_the_setting_is_checked():
    with pytest.raises(ConfigError, match=r"features\.periodic\b"):
        load_settings(features={"periodic": -1})
    with pytest.raises(ConfigError, match=r"features\.periodic_scale"):
        load_settings(features={"periodic_scale": 0})


def test_a_chain_with_the_error_memory_runs_alike_on_both_step_kernels():
    rows, ys = make_rows(600, 8, "binary")
    runs = []
    for kernel in ("torch", "compiled"):
        settings = small_settings(
            features=PERIODIC, learner={"kernel": kernel}, memory={"enabled": True}
        )
        preq = Prequential.from_settings(settings)
        runs.append(
            np.concatenate(
                [
                    preq.process(rows[i : i + 32], ys[i : i + 32]).prediction
                    for i in range(0, 600, 32)
                ]
            )
        )
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-3, atol=1e-4)
