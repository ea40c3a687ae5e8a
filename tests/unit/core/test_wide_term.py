"""The wide term (learner.wide): a linear map of the inputs added to the network's output. It
starts at zero, learns with the network, and a learner saved before it existed still loads."""

import numpy as np
import pytest
import torch

from streamlearn.core.learner import OnlineLearner
from streamlearn.core.model import TabularNet
from streamlearn.settings import FeatureSettings, LearnerSettings

FEATURES = FeatureSettings(numeric_slots=4, categorical_slots=2, hash_buckets=32, embedding_dim=3)


def make(wide: bool, kernel: str = "compiled") -> OnlineLearner:
    settings = LearnerSettings(
        task="multiclass", max_classes=3, hidden=(16,), lr=0.01, warmup_steps=0, device="cpu",
        seed=0, wide=wide, kernel=kernel,
    )  # fmt: skip
    learner = OnlineLearner.from_settings(settings, FEATURES)
    learner.set_classes(np.arange(3) < 2)
    return learner


def batch(rng: np.random.Generator, n: int = 32):
    num = rng.normal(size=(n, 4)).astype(np.float32)
    cat = rng.integers(1, 32, size=(n, 2))
    return num, cat, (num[:, 0] + num[:, 1] > 0).astype(np.int64)


def test_the_wide_term_starts_at_zero_so_a_new_model_predicts_as_the_network_alone():
    torch.manual_seed(0)
    plain = TabularNet(4, 2, 32, 3, (8,), 3)
    torch.manual_seed(0)
    wide = TabularNet(4, 2, 32, 3, (8,), 3, wide=True)
    num, cat = torch.randn(5, 4), torch.randint(0, 32, (5, 2))
    torch.testing.assert_close(wide.raw(num, cat)[0], plain.raw(num, cat)[0])
    assert wide.wide is not None and plain.wide is None
    assert wide.wide.weight.shape == (3, 4 + 2 * 3)


@pytest.mark.parametrize("kernel", ["torch", "compiled"])
def test_the_wide_term_learns_over_numeric_and_embedding_inputs(kernel):
    learner = make(True, kernel)
    rng = np.random.default_rng(1)
    for _ in range(5):
        learner.step(*batch(rng))
    weights = learner.model.wide.weight.detach()
    assert weights[:2, :4].abs().sum() > 0  # numeric columns of the two seen classes
    assert weights[:2, 4:].abs().sum() > 0  # embedding columns
    assert torch.count_nonzero(weights[2:]) == 0  # a class not switched on: untouched


def test_a_learner_saved_before_the_wide_term_loads_and_keeps_its_predictions():
    rng = np.random.default_rng(2)
    old = make(False)
    for _ in range(4):
        old.step(*batch(rng))
    state = old.state_dict()
    assert not any(key.startswith("wide.") for key in state["model"])
    new = make(True)
    new.load_state_dict(state)
    num, cat, y = batch(rng)
    with torch.no_grad():
        before, _ = old.model(old.model.inputs(torch.from_numpy(num)), torch.from_numpy(cat))
        after, _ = new.model(new.model.inputs(torch.from_numpy(num)), torch.from_numpy(cat))
    torch.testing.assert_close(after, before)
    moments = new.trainer.state_dict()
    n_wide = new.model.wide.weight.numel()
    assert torch.count_nonzero(moments["exp_avg"][-n_wide:]) == 0
    torch.testing.assert_close(moments["exp_avg"][:-n_wide], state["optimizer"]["exp_avg"])
    new.step(num, cat, y)  # and it goes on learning, the wide term with it
    assert new.model.wide.weight.abs().sum() > 0


def test_a_wide_learner_does_not_load_into_one_without_the_term():
    wide = make(True)
    wide.step(*batch(np.random.default_rng(3)))
    with pytest.raises(RuntimeError, match="wide"):
        make(False).load_state_dict(wide.state_dict())
