"""CompensationGate: the error memory's compensation is applied only while it is winning."""

import numpy as np
import pytest

from streamlearn.core.memory.compensation import gated
from streamlearn.core.prequential import Prequential
from streamlearn.settings import load_settings


def chain(gate: bool, enabled: bool = True) -> Prequential:
    return Prequential.from_settings(
        load_settings(
            learner={"hidden": (16,), "device": "cpu", "warmup_steps": 0, "fast_start": 0},
            # the features are noise: the network's inputs as plain as they come
            features={
                "numeric_slots": 4,
                "categorical_slots": 1,
                "hash_buckets": 64,
                "periodic": 0,
            },
            drift={"detector": "none"},
            linear={"enabled": False},  # the memory's gate alone
            neighbours={"enabled": False},
            memory={"enabled": enabled, "gate": gate, "size": 32},
        )
    )


def run(preq: Prequential, label_of_batch, batches: int = 60, n: int = 32):
    """Accuracy of the served predictions and the gate weight after each batch, on rows whose
    label depends only on the batch's index (features are noise)."""
    rng = np.random.default_rng(0)
    hits, weights = 0, []
    for t in range(batches):
        x = rng.normal(size=(n, 3))
        ys = [label_of_batch(t)] * n
        out = preq.process_columns({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}, ys)
        if t:  # the first batch introduces the classes: it predicts nothing
            hits += int((out.prediction[:, :2].argmax(1) == out.target).sum())
        weights.append(1.0 if preq.memory is None else preq.memory.weight)
    return hits / (n * (batches - 1)), np.array(weights)


def alternating(t: int) -> int:
    """Each batch's label is the last one's opposite: the memory's neighbours (the last
    batch) always vote for the wrong class."""
    return t % 2


def blocks(t: int) -> int:
    """The label switches every 8 batches: the memory knows the new one a batch after a
    switch, the model only several batches later."""
    return (t // 8) % 2


def test_the_gate_turns_compensation_off_where_it_hurts():
    off, _ = run(chain(gate=True, enabled=False), alternating)
    ungated, _ = run(chain(gate=False), alternating)
    served, weights = run(chain(gate=True), alternating)
    assert ungated < off - 0.1  # the stream where compensation provably hurts
    assert weights[-20:].max() < 0.05
    assert served >= off - 0.02


def test_the_gate_keeps_compensation_where_it_helps():
    off, _ = run(chain(gate=True, enabled=False), blocks)
    ungated, _ = run(chain(gate=False), blocks)
    served, weights = run(chain(gate=True), blocks)
    assert ungated > off + 0.05  # compensation helps here
    assert weights[10:].mean() > 0.9
    # most of the gain kept: a switch's batch turns the gate off for one batch, which the
    # compensation (already knowing the new label) would have won
    assert served > off + 0.3


def test_gated_mixes_the_two_predictions():
    base = np.array([[0.8, 0.2]], np.float32)
    full = np.array([[0.2, 0.8]], np.float32)
    assert gated(base, full, 0.0) is base and gated(base, full, 1.0) is full
    np.testing.assert_allclose(gated(base, full, 0.25), [[0.65, 0.35]], rtol=1e-6)


def test_gate_state_round_trips_and_restarts_on_drift():
    preq = chain(gate=True)
    run(preq, alternating, batches=10)
    gate = preq.memory.gate
    restored = chain(gate=True)
    restored.memory.load_state_dict(preq.memory.state_dict())
    assert restored.memory.gate.state_dict() == gate.state_dict()
    assert restored.memory.weight == pytest.approx(gate.weight) and gate.weight < 0.5
    preq.memory.on_drift()
    assert gate.advantage == preq.memory.settings.gate_prior > 0.0
    assert gate.weight > 0.5  # a new concept starts with the compensation favoured
