"""Prequential.state_dict/load_state_dict: a restored chain continues the stream bit for bit."""

import io

import numpy as np
import pytest
import torch

from streamlearn.core.prequential import Prequential
from streamlearn.settings import load_settings
from streamlearn.worker.checkpoint import to_plain


def make(memory: bool, detector: str = "loss_deviation", periodic: int = 0) -> Prequential:
    features = {"numeric_slots": 6, "categorical_slots": 2, "hash_buckets": 64}
    return Prequential.from_settings(
        load_settings(
            features={**features, "periodic": periodic},
            learner={"task": "multiclass", "max_classes": 4, "hidden": [16], "device": "cpu"},
            drift={"detector": detector, "min_samples": 20, "window": 40},
            memory={"enabled": memory, "size": 32},
        )
    )


def batches(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        v = rng.normal(size=(16, 3))
        xs = [{"a": a, "b": b, "c": c, "k": "u" if a > 0 else "v"} for a, b, c in v]
        yield xs, [["x", "y", "z"][int(i)] for i in v.argmax(1)]


def through_disk(state: dict) -> dict:
    """What a checkpoint does to the state: plain types, torch.save, weights_only load."""
    buffer = io.BytesIO()
    torch.save(to_plain(state), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(("memory", "periodic"), [(False, 0), (True, 0), (True, 4)])
def test_restored_chain_continues_bit_for_bit(memory: bool, periodic: int):
    first, second = list(batches(0)), list(batches(1))
    original = make(memory, periodic=periodic)
    for xs, ys in first:
        original.process(xs, ys)
    restored = make(memory, periodic=periodic)
    restored.load_state_dict(through_disk(original.state_dict()))
    assert restored.seen == original.seen and restored.classes() == original.classes()
    if memory:  # the gate's evidence and weight come back exactly (they shape predictions)
        assert restored.memory.gate.state_dict() == original.memory.gate.state_dict()
    for xs, ys in second:
        a, b = original.process(xs, ys), restored.process(xs, ys)
        np.testing.assert_array_equal(a.prediction, b.prediction)
        np.testing.assert_array_equal(a.loss, b.loss)
    for (name, p), q in zip(
        original.learner.model.state_dict().items(),
        restored.learner.model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(p, q), name
    assert original.drifts == restored.drifts


def test_state_of_a_fresh_chain_loads_into_a_fresh_chain():
    fresh = make(False, detector="adwin")
    make(False, detector="adwin").load_state_dict(through_disk(fresh.state_dict()))
