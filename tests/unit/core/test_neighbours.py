"""The neighbour vote: the k Euclidean-nearest recent rows' labels, mixed in by its accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.core.memory import compensation
from streamlearn.core.neighbours import NeighbourVote
from streamlearn.core.prequential import Prequential
from streamlearn.settings import NeighbourSettings, load_settings

WIDTH = 4  # class slots


def vote_of(settings: dict | None = None) -> NeighbourVote:
    return NeighbourVote(NeighbourSettings(enabled=True, **(settings or {})), WIDTH)


def brute_force(z: np.ndarray, keys: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Each row's share of the k nearest keys (squared Euclidean distance) per class slot."""
    out = np.zeros((len(z), WIDTH))
    for i, row in enumerate(z):
        nearest = np.argsort(((keys - row) ** 2).sum(axis=1), kind="stable")[:k]
        np.add.at(out[i], labels[nearest], 1.0 / k)
    return out


@pytest.mark.parametrize("compiled", [True, False])
def test_the_vote_is_the_k_nearest_rows_labels(monkeypatch, compiled):
    if compiled and not compensation.kernels_available():
        pytest.skip("compiled kernels not built")
    monkeypatch.setattr("streamlearn.core.neighbours.kernels_available", lambda: compiled)
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(300, 3)).astype(np.float32)
    labels = rng.integers(0, WIDTH, 300)
    nv = vote_of({"k": 5})
    for start in range(0, 300, 32):
        nv.learn(keys[start : start + 32], labels[start : start + 32], np.zeros((0, WIDTH)), None)
    z = rng.normal(size=(40, 3)).astype(np.float32)
    vote = nv.vote(z, np.zeros((40, WIDTH), dtype=np.float32))
    np.testing.assert_allclose(vote, brute_force(z, keys, labels, 5), atol=1e-5)


def test_the_compiled_vote_reads_as_the_read_only_memory_does():
    """vote()'s call straight into memory.c gives the bits of lookup()'s compensation, and a
    prediction of another width gets the read-only memory's error, not a read past the ring."""
    if not compensation.kernels_available():
        pytest.skip("compiled kernels not built")
    rng = np.random.default_rng(3)
    nv = vote_of({"k": 3, "window": 64})
    for _ in range(3):  # 96 rows into 64 slots: the ring wraps
        nv.learn(rng.normal(size=(32, 5)).astype(np.float32), rng.integers(0, WIDTH, 32), [], None)
    for rows in (1, 2, 32):
        z = rng.normal(size=(rows, 5)).astype(np.float32)
        like = rng.dirichlet(np.ones(WIDTH), rows).astype(np.float32)
        lookup = nv.lookup()
        assert lookup is not None and lookup.compiled
        expected = lookup.compensate(np.c_[z, np.ones(rows, np.float32)], like)
        np.testing.assert_array_equal(nv.vote(z, like), expected)
    with pytest.raises(ValueError, match="do not fit"):
        nv.vote(z, np.zeros((rows, WIDTH + 1), dtype=np.float32))


def test_only_the_window_votes_and_new_slots_count_as_zero():
    nv = vote_of({"k": 1, "window": 4})
    old = np.array([[5.0, 5.0]] * 4, dtype=np.float32)
    nv.learn(old, np.zeros(4, dtype=np.int64), np.zeros((0, WIDTH)), None)
    # four newer rows with a third slot in use replace them all
    new = np.array([[0.0, 0.0, 1.0], [0, 0, 2], [0, 0, 3], [0, 0, 4]], dtype=np.float32)
    nv.learn(new, np.array([1, 2, 3, 3]), np.zeros((0, WIDTH)), None)
    assert nv.filled == 4 and nv.active == 3
    vote = nv.vote(np.array([[5.0, 5.0, 0.0], [0.0, 0.0, 2.1]], np.float32), np.zeros((2, WIDTH)))
    assert vote.argmax(axis=1).tolist() == [1, 2]  # the rows at (5, 5) are gone


def test_a_losing_vote_retires_and_a_drift_brings_it_back():
    nv = vote_of({"k": 1, "horizon": 64, "prior": 0.0, "window": 128})
    rng = np.random.default_rng(1)
    model = np.zeros((32, WIDTH), dtype=np.float32)
    for _ in range(40):  # labels are noise to the vote; the model is always right
        z = rng.normal(size=(32, 2)).astype(np.float32)
        y = rng.integers(0, WIDTH, 32)
        model[:] = 0.0
        model[np.arange(32), y] = 1.0
        vote = nv.vote(z, model)
        nv.learn(z, y, model, vote)
        if nv.retired:
            break
    assert nv.retired and nv.share == 0.0 and nv.lookup() is None
    assert nv.vote(z, model) is None  # retired: nothing computed
    nv.on_drift()
    assert not nv.retired and nv.filled == 0
    nv.learn(z, y, model, None)
    assert nv.share == pytest.approx(0.5)  # the prior's share again, with rows to vote


def test_a_vote_in_use_keeps_its_rows_through_a_drift():
    nv = vote_of({"k": 1, "window": 8})
    z = np.arange(8, dtype=np.float32).reshape(8, 1)
    nv.learn(z, np.arange(8) % WIDTH, np.zeros((0, WIDTH)), None)
    share = nv.share
    nv.on_drift()
    assert nv.filled == 8 and nv.share == share and not nv.retired


def test_state_round_trip_votes_the_same():
    rng = np.random.default_rng(2)
    nv = vote_of({"window": 50})
    for _ in range(3):
        z = rng.normal(size=(32, 3)).astype(np.float32)
        y = rng.integers(0, WIDTH, 32)
        base = rng.dirichlet(np.ones(WIDTH), 32).astype(np.float32)
        nv.learn(z, y, base, nv.vote(z, base))
    restored = vote_of({"window": 50})
    restored.load_state_dict(nv.state_dict())
    z = rng.normal(size=(10, 3)).astype(np.float32)
    like = np.zeros((10, WIDTH), dtype=np.float32)
    np.testing.assert_array_equal(restored.vote(z, like), nv.vote(z, like))
    assert restored.share == nv.share and restored.stored == nv.stored
    state = nv.state_dict()
    state["labels"] = state["labels"][:-1]
    with pytest.raises(ValueError, match="does not fit"):
        restored.load_state_dict(state)


def clusters(n: int, seed: int) -> tuple[list[dict], list[int]]:
    """Four tight clusters on a ring: labels by cluster, alternating (no linear boundary)."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, 8, n)
    angle = centre * np.pi / 4
    xs = np.cos(angle) + rng.normal(0, 0.05, n)
    ys = np.sin(angle) + rng.normal(0, 0.05, n)
    rows = [{"a": float(a), "b": float(b)} for a, b in zip(xs, ys, strict=True)]
    return rows, [int(c % 2) for c in centre]


def test_the_chain_mixes_in_a_winning_vote_and_restores_it():
    settings = load_settings(
        learner={"task": "binary", "seed": 3, "fast_start": 0}, neighbours={"enabled": True}
    )
    preq = Prequential.from_settings(settings)
    rows, ys = clusters(1600, 4)
    for start in range(0, 1600, 32):
        preq.process(rows[start : start + 32], ys[start : start + 32])
    nv = preq.neighbours
    assert nv is not None and nv.share > 0.5  # the network is still learning the ring
    again = Prequential.from_settings(settings)
    again.load_state_dict(preq.state_dict())
    test, _ = clusters(64, 5)
    np.testing.assert_array_equal(again.predict(test), preq.predict(test))
    off = Prequential.from_settings(
        load_settings(learner={"task": "regression"}, neighbours={"enabled": True})
    )
    assert off.neighbours is None  # classification only
