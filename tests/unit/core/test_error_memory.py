"""ErrorMemory (ReLoop2 compensation): formula, stores, bounds, state, wiring into Prequential."""

import json
import pickle

import numpy as np
import pytest
import torch

from streamlearn.core.memory.error_memory import ErrorMemory, LSHStore, TopKStore
from streamlearn.core.prequential import Prequential
from streamlearn.errors import ConfigError
from streamlearn.kernels.torch_memory import ring_write, unit_rows
from streamlearn.settings import load_settings


def unit(rows):
    a = np.asarray(rows, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def expected(y_bar, base_bar, base, lam, gamma):
    return base + lam * (gamma * (y_bar - base) + (1 - gamma) * (y_bar - base_bar))


def f32(x):
    return np.asarray(x, dtype=np.float32)


# -- the formula on hand-made cases ------------------------------------------------------------
def test_topk_matches_formula_regression():
    keys = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
    ys, bases = [1.0, 3.0, 10.0], [0.5, 2.0, 4.0]
    lam, gamma, tau = 0.7, 0.3, 0.5
    mem = ErrorMemory(2, 1, kind="topk", k=2, tau=tau, lam=lam, gamma=gamma, regression=True)
    mem.update(f32(keys), f32(ys), f32(bases))
    query, base = [[2.0, 1.0]], 1.5
    sims = unit(keys) @ unit(query)[0]
    top = np.argsort(-sims)[:2]
    a = softmax(sims[top] / tau)
    y_bar, base_bar = a @ np.array(ys)[top], a @ np.array(bases)[top]
    out = mem.compensate(f32(query), f32([base]))
    assert out.shape == (1,)
    assert out[0] == pytest.approx(expected(y_bar, base_bar, base, lam, gamma), rel=1e-5)


def test_dense_k0_uses_every_stored_sample():
    keys = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
    ys, bases = [1.0, 3.0, 10.0], [0.5, 2.0, 4.0]
    mem = ErrorMemory(2, 1, kind="topk", k=0, tau=0.2, lam=1.0, gamma=0.5, regression=True)
    mem.update(f32(keys), f32(ys), f32(bases))
    a = softmax(unit(keys) @ unit([[1.0, 1.0]])[0] / 0.2)
    want = expected(a @ ys, a @ bases, 2.0, 1.0, 0.5)
    assert mem.compensate(f32([[1.0, 1.0]]), f32([2.0]))[0] == pytest.approx(want, rel=1e-5)


def test_lsh_matches_formula_with_known_hyperplanes():
    # two tables of one bit: table 0 splits on x, table 1 on y
    mem = ErrorMemory(
        2, 1, kind="lsh", tables=2, bits=1, tau=0.3, lam=0.8, gamma=0.4, regression=True
    )
    store = mem.storage
    assert isinstance(store, LSHStore)
    store.planes.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    a, b = [1.0, -0.2], [0.3, 1.0]  # table 0: both in bucket 1; table 1: a → 0, b → 1
    mem.update(f32([a, b]), f32([2.0, 6.0]), f32([1.0, 5.0]))
    q = unit([[1.0, 0.5]])[0]  # table 0 bucket 1 (a, b), table 1 bucket 1 (b)
    ka, kb = unit([a])[0], unit([b])[0]
    centroid0, centroid1 = (ka + kb) / 2, kb
    sims = np.array([q @ c / np.linalg.norm(c) for c in (centroid0, centroid1)])
    w = softmax(sims / 0.3)
    y_bar = w[0] * (2.0 + 6.0) / 2 + w[1] * 6.0
    base_bar = w[0] * (1.0 + 5.0) / 2 + w[1] * 5.0
    want = expected(y_bar, base_bar, 3.0, 0.8, 0.4)
    assert mem.compensate(f32([[1.0, 0.5]]), f32([3.0]))[0] == pytest.approx(want, rel=1e-5)


def test_lsh_row_without_a_filled_bucket_is_unchanged():
    mem = ErrorMemory(2, 1, kind="lsh", tables=1, bits=1, lam=1.0, regression=True)
    mem.storage.planes.copy_(torch.tensor([[1.0], [0.0]]))
    mem.update(f32([[1.0, 0.0]]), f32([5.0]), f32([0.0]))
    out = mem.compensate(f32([[1.0, 0.0], [-1.0, 0.0]]), f32([1.0, 1.0]))
    assert out[0] != pytest.approx(1.0)
    assert out[1] == pytest.approx(1.0)


def test_lsh_decay_weights_older_samples_down():
    mem = ErrorMemory(
        2, 1, kind="lsh", tables=1, bits=1, decay=0.5, lam=1.0, gamma=1.0, regression=True
    )
    mem.update(f32([[1.0, 0.0]]), f32([0.0]), f32([0.0]))
    mem.update(f32([[1.0, 0.1]]), f32([3.0]), f32([0.0]))
    # same bucket; the older sample weighs 0.5: ȳ = (0.5·0 + 1·3) / 1.5 = 2; γ = λ = 1 → ŷ = ȳ
    assert mem.compensate(f32([[1.0, 0.0]]), f32([0.0]))[0] == pytest.approx(2.0, rel=1e-5)
    state = mem.state_dict()
    assert state["count"].sum() == pytest.approx(1.5)


@pytest.mark.parametrize("kind", ["topk", "lsh"])
def test_multiclass_compensates_per_class(kind):
    lam, gamma = 0.5, 0.5
    mem = ErrorMemory(3, 4, kind=kind, k=1, tables=1, bits=2, lam=lam, gamma=gamma)
    key = f32([[1.0, 2.0, 3.0]])
    stored_base = f32([[0.7, 0.1, 0.1, 0.1]])
    mem.update(key, np.array([2]), stored_base)  # true class 2, the model said class 0
    base = f32([[0.6, 0.2, 0.1, 0.1]])
    y_bar, base_bar = np.array([0.0, 0.0, 1.0, 0.0]), stored_base[0]
    want = expected(y_bar, base_bar, base[0], lam, gamma)  # stays in [0, 1], sums to 1
    out = mem.compensate(key, base)
    np.testing.assert_allclose(out[0], want, rtol=1e-5, atol=1e-6)
    assert out[0].argmax() == 2
    assert out.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["topk", "lsh"])
def test_probabilities_are_clamped_and_renormalised(kind):
    mem = ErrorMemory(2, 3, kind=kind, k=1, tables=1, bits=1, lam=2.0, gamma=1.0)
    key = f32([[1.0, 1.0]])
    mem.update(key, np.array([1]), f32([[0.8, 0.2, 0.0]]))
    # ŷ = base + 2(ȳ − base) = 2ȳ − base = [-0.9, 1.9, 0.0] → clamp [0, 1, 0] → renormalised
    out = mem.compensate(key, f32([[0.9, 0.1, 0.0]]))
    np.testing.assert_allclose(out, [[0.0, 1.0, 0.0]], atol=1e-6)
    raw = mem.correction(key, f32([[0.9, 0.1, 0.0]])).numpy()
    np.testing.assert_allclose(raw, [[-1.8, 1.8, 0.0]], atol=1e-6)


def test_clamping_renormalises_over_the_remaining_mass():
    mem = ErrorMemory(2, 3, kind="topk", k=1, lam=1.0, gamma=0.0)
    key = f32([[1.0, 0.0]])
    mem.update(key, np.array([0]), f32([[0.0, 0.5, 0.5]]))
    # y_err = ȳ − ȳ_base = [1, −0.5, −0.5]; ŷ = [0.2, 0.7, 0.1] + y_err = [1.2, 0.2, −0.4]
    out = mem.compensate(key, f32([[0.2, 0.7, 0.1]]))
    np.testing.assert_allclose(out, [[1.0 / 1.2, 0.2 / 1.2, 0.0]], rtol=1e-5)


# -- empty, bounded --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["topk", "lsh"])
@pytest.mark.parametrize("regression", [False, True])
def test_empty_memory_changes_nothing(kind, regression):
    mem = ErrorMemory(4, 3, kind=kind, regression=regression)
    rng = np.random.default_rng(0)
    hidden = f32(rng.normal(size=(5, 4)))
    base = f32(rng.normal(size=5)) if regression else f32(rng.dirichlet(np.ones(3), size=5))
    out = mem.compensate(hidden, base)
    np.testing.assert_array_equal(out, base)
    assert not np.shares_memory(out, base)
    assert len(mem) == 0


def test_lam_zero_changes_nothing():
    mem = ErrorMemory(2, 2, lam=0.0)
    mem.update(f32([[1.0, 0.0]]), np.array([1]), f32([[1.0, 0.0]]))
    np.testing.assert_array_equal(mem.compensate(f32([[1.0, 0.0]]), f32([[1.0, 0.0]])), [[1, 0]])


def test_topk_ring_stays_within_its_bound_and_keeps_the_newest():
    mem = ErrorMemory(3, 1, kind="topk", size=10, k=3, regression=True)
    store = mem.storage
    assert isinstance(store, TopKStore)
    shapes = (store.keys.shape, store.values.shape)
    rng = np.random.default_rng(1)
    for start in range(0, 37, 7):
        n = min(7, 37 - start)
        mem.update(f32(rng.normal(size=(n, 3))), f32(np.arange(start, start + n)), f32(np.zeros(n)))
        assert len(mem) <= 10
    assert (store.keys.shape, store.values.shape) == shapes
    assert len(mem) == 10
    np.testing.assert_array_equal(mem.state_dict()["y"][:, 0], np.arange(27, 37))
    mem.update(f32(rng.normal(size=(25, 3))), f32(np.arange(100, 125)), f32(np.zeros(25)))
    np.testing.assert_array_equal(mem.state_dict()["y"][:, 0], np.arange(115, 125))


def test_unit_rows_is_normalize_bit_for_bit():
    rows = torch.from_numpy(f32(np.random.default_rng(4).normal(size=(6, 5))))
    rows[2] = 0.0  # a dead hidden layer: stays zero
    want = torch.nn.functional.normalize(rows, dim=1, eps=1e-8)
    assert torch.equal(unit_rows(rows), want)
    out = torch.full((8, 5), 7.0)
    unit_rows(rows, out=out[1:7])
    assert torch.equal(out[1:7], want) and (out[0] == 7).all() and (out[7] == 7).all()


def test_ring_write_wraps_to_slot_zero():
    ring = torch.zeros(5, dtype=torch.long)
    ring_write(ring, 3, torch.tensor([1, 2, 3, 4]))
    assert ring.tolist() == [3, 4, 0, 1, 2]
    ring_write(ring, 0, torch.tensor([9.0, 8.0]))  # converts the dtype
    assert ring.tolist() == [9, 8, 0, 1, 2]


def test_lsh_sketch_size_is_fixed():
    mem = ErrorMemory(8, 2, kind="lsh", tables=4, bits=3)
    table_shape = mem.storage.table.shape
    rng = np.random.default_rng(2)
    for _ in range(20):
        mem.update(
            f32(rng.normal(size=(64, 8))), rng.integers(0, 2, 64), f32(np.full((64, 2), 0.5))
        )
    assert mem.storage.table.shape == table_shape == (4 * 2**3, 1 + 8 + 2 * 2)
    assert len(mem) == 20 * 64


def test_store_errors_keeps_only_wrong_rows():
    mem = ErrorMemory(2, 2, kind="topk", store="errors", error_threshold=0.5)
    base = f32([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    stored = mem.update(f32([[1, 0], [0, 1], [1, 1]]), np.array([0, 0, 1]), base)
    np.testing.assert_array_equal(stored, [False, True, True])
    assert len(mem) == 2


def test_mirrored_inputs_land_in_the_stored_rows_slots():
    mem = ErrorMemory(2, 2, kind="topk", store="errors", error_threshold=0.5, size=4)
    ring_num, ring_cat = torch.zeros((4, 1)), torch.zeros((4, 1), dtype=torch.long)
    base = f32([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    num, cat = f32([[1.0], [2.0], [3.0]]), np.array([[7], [8], [9]])
    for _ in range(2):  # the second batch wraps around the ring of 4
        mem.update(f32([[1, 0], [0, 1], [1, 1]]), np.array([0, 0, 1]), base,
                   mirror=(ring_num, ring_cat, num, cat))  # fmt: skip
    assert ring_num[:, 0].tolist() == [2.0, 3.0, 2.0, 3.0]  # row 0 was right: not stored
    assert ring_cat[:, 0].tolist() == [8, 9, 8, 9] and mem.storage.cursor == 0


def test_reset_empties_the_memory():
    for kind in ("topk", "lsh"):
        mem = ErrorMemory(2, 2, kind=kind)
        mem.update(f32([[1, 0]]), np.array([1]), f32([[0.5, 0.5]]))
        mem.reset()
        assert len(mem) == 0
        np.testing.assert_array_equal(
            mem.compensate(f32([[1, 0]]), f32([[0.5, 0.5]])), [[0.5, 0.5]]
        )


# -- state as plain arrays ------------------------------------------------------------------------
def plain(value):
    return isinstance(value, np.ndarray | int | float | str)


@pytest.mark.parametrize("kind", ["topk", "lsh"])
def test_state_round_trips_as_plain_arrays(kind):
    rng = np.random.default_rng(3)
    kwargs = {"kind": kind, "size": 50, "k": 5, "tables": 3, "bits": 4, "decay": 0.99, "seed": 7}
    mem = ErrorMemory(6, 3, **kwargs)
    for _ in range(4):
        mem.update(
            f32(rng.normal(size=(20, 6))),
            rng.integers(0, 3, 20),
            f32(rng.dirichlet(np.ones(3), 20)),
        )
    state = mem.state_dict()
    assert all(plain(v) for v in state.values()), {k: type(v) for k, v in state.items()}
    # through JSON (lists), as a Redis hop without pickle would carry it
    wire = json.loads(
        json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state.items()})
    )
    restored = ErrorMemory(6, 3, **{**kwargs, "seed": 99})  # different planes until loaded
    restored.load_state_dict(wire)
    query = f32(rng.normal(size=(8, 6)))
    base = f32(rng.dirichlet(np.ones(3), 8))
    np.testing.assert_allclose(
        restored.compensate(query, base), mem.compensate(query, base), rtol=1e-5, atol=1e-6
    )
    assert len(restored) == len(mem)
    # and both keep learning the same way
    more = f32(rng.normal(size=(5, 6)))
    for m in (mem, restored):
        m.update(more, np.array([0, 1, 2, 0, 1]), f32(np.full((5, 3), 1 / 3)))
    np.testing.assert_allclose(
        restored.compensate(query, base), mem.compensate(query, base), rtol=1e-5, atol=1e-6
    )


def test_load_refuses_a_state_of_another_kind_or_shape():
    topk, lsh = ErrorMemory(4, 2, kind="topk"), ErrorMemory(4, 2, kind="lsh")
    with pytest.raises(ValueError, match="kind"):
        lsh.load_state_dict(topk.state_dict())
    with pytest.raises(ValueError, match="fit"):
        ErrorMemory(4, 2, kind="lsh", bits=3).load_state_dict(lsh.state_dict())


# -- settings and the prequential wiring -----------------------------------------------------------
def columns(rng, n):
    x = rng.normal(size=(n, 3))
    return {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}, list(
        (x[:, 0] + 0.3 * x[:, 1] > 0).astype(int)
    )


def settings(memory):
    return load_settings(
        learner={"hidden": (16,), "device": "cpu", "warmup_steps": 0, "fast_start": 0},
        features={"numeric_slots": 4, "categorical_slots": 1, "hash_buckets": 64},
        drift={"detector": "none"},
        memory=memory,
        neighbours={"enabled": False},  # the memory's own compensation, nothing mixed before it
    )


def test_bad_memory_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"memory\.kind"):
        load_settings(memory={"kind": "faiss"})
    with pytest.raises(ConfigError, match=r"memory\.gamma"):
        load_settings(memory={"gamma": 1.5})


def test_prequential_compensates_but_trains_and_watches_the_base_model():
    off, on = (
        Prequential.from_settings(settings({"enabled": False})),
        Prequential.from_settings(settings({"enabled": True})),
    )
    assert off.memory is None and on.memory is not None
    rng = np.random.default_rng(4)
    differed = False
    for step in range(15):
        cols, ys = columns(rng, 32)
        a, b = off.process_columns(cols, ys), on.process_columns(cols, ys)
        np.testing.assert_array_equal(a.loss, b.loss)  # drift watches the base model's loss
        if step:  # the first batch introduces both classes: its rows predict nothing
            np.testing.assert_allclose(b.prediction.sum(1), 1.0, rtol=1e-5)
        differed |= not np.allclose(a.prediction, b.prediction)
    assert differed
    for p_off, p_on in zip(
        off.learner.model.parameters(), on.learner.model.parameters(), strict=True
    ):
        torch.testing.assert_close(p_off, p_on)  # memory never feeds back into training
    assert len(on.memory.memory) == on.memory.settings.size


def test_score_only_rows_are_compensated():
    preq = Prequential.from_settings(settings({"enabled": True, "tau": 0.05}))
    rng = np.random.default_rng(5)
    for _ in range(5):
        preq.process_columns(*columns(rng, 32))
    cols, ys = columns(rng, 4)
    feats = preq.encoder.encode_columns(cols)
    z = preq.encoder.standardize(feats.num)
    base, hidden = preq.base_prediction(z, feats.cat)  # the linear model mixed in
    want = preq.memory.compensate(hidden, base)  # scored before anything is learned, gated
    assert not np.allclose(want, base)
    np.testing.assert_allclose(preq.predict_columns(cols), want, rtol=1e-5, atol=1e-6)
    mixed = preq.process_columns(cols, [ys[0], None, ys[2], None])
    assert not mixed.learned[1] and not mixed.learned[3]
    np.testing.assert_allclose(mixed.prediction[[1, 3]], want[[1, 3]], rtol=1e-5, atol=1e-6)


def test_reset_on_drift_and_rekey_use_the_current_model():
    preq = Prequential.from_settings(
        settings({"enabled": True, "size": 64, "rekey_every": 0, "rekey_after_drift": 3})
    )
    stage = preq.memory
    rng = np.random.default_rng(6)
    for _ in range(4):
        preq.process_columns(*columns(rng, 16))
    assert len(stage.memory) == 64 and stage.rekeys == 0
    cols, ys = columns(rng, 16)
    feats = preq.encoder.encode_columns(cols)
    z = preq.encoder.standardize(feats.num)
    result = preq.learner.step(z, feats.cat, np.asarray(ys))
    stage.store(z, feats.cat, result.hidden, np.asarray(ys), result.prediction, drifted=True)
    stage.refresh().wait()
    assert stage.resets == 1 and stage.rekeys == 1
    assert len(stage.memory) == 16  # cleared, then this batch stored
    _, hidden = preq.learner.predict_hidden(z, feats.cat)
    store = stage.memory.storage
    keys = torch.nn.functional.normalize(torch.from_numpy(hidden), dim=1)
    torch.testing.assert_close(store.keys[:16], keys, rtol=1e-4, atol=1e-5)


def test_rekey_every_n_steps():
    preq = Prequential.from_settings(
        settings({"enabled": True, "rekey_every": 3, "rekey_after_drift": 0})
    )
    rng = np.random.default_rng(8)
    for _ in range(7):
        preq.process_columns(*columns(rng, 16))
    assert preq.memory.rekeys == 2  # after steps 3 and 6


def test_a_copied_stage_rekeys_into_its_own_ring():
    """The stage keeps views of its full ring for re-keying; a pickle must not carry them
    (they would be copies of the ring, no longer the ring)."""
    preq = Prequential.from_settings(settings({"enabled": True, "size": 32, "rekey_every": 1}))
    rng = np.random.default_rng(12)
    for _ in range(4):  # 64 rows: the ring of 32 is full, its views made
        preq.process_columns(*columns(rng, 16))
    stage = preq.memory
    assert stage._full is not None
    copy = pickle.loads(pickle.dumps(preq)).memory
    copy.memory.storage.keys.zero_()
    copy.rekey()
    assert copy.memory.storage.keys.abs().sum(1).gt(0).all()
    torch.testing.assert_close(copy.memory.storage.keys, stage.memory.storage.keys)


def test_lsh_stage_does_not_rekey():
    preq = Prequential.from_settings(settings({"enabled": True, "kind": "lsh", "rekey_every": 1}))
    rng = np.random.default_rng(9)
    for _ in range(4):
        preq.process_columns(*columns(rng, 16))
    assert preq.memory.rekeys == 0 and len(preq.memory.memory) == 64


def test_stage_state_round_trips():
    a = Prequential.from_settings(settings({"enabled": True, "size": 40}))
    rng = np.random.default_rng(7)
    for _ in range(5):
        a.process_columns(*columns(rng, 16))
    state = a.memory.state_dict()
    assert all(plain(v) for k, v in state.items() if k not in ("memory", "gate"))
    assert all(plain(v) for v in state["gate"].values())
    b = Prequential.from_settings(settings({"enabled": True, "size": 40}))
    b.learner.load_state_dict(a.learner.state_dict())
    b.memory.load_state_dict(state)
    h = rng.normal(size=(3, 16)).astype(np.float32)
    base = np.full((3, b.learner.model.class_mask.shape[0]), 0.0, np.float32)
    base[:, :2] = 0.5
    np.testing.assert_allclose(
        a.memory.compensate(h, base), b.memory.compensate(h, base), rtol=1e-6
    )
    torch.testing.assert_close(a.memory._num[:40], b.memory._num[:40])


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["topk", "lsh"])
def test_cuda_memory_matches_cpu(kind):
    rng = np.random.default_rng(10)
    hidden, y = f32(rng.normal(size=(40, 6))), rng.integers(0, 3, 40)
    base = f32(rng.dirichlet(np.ones(3), 40))
    cpu, gpu = (ErrorMemory(6, 3, kind=kind, device=d) for d in ("cpu", "cuda"))
    for m in (cpu, gpu):
        m.update(hidden[:30], y[:30], base[:30])
    np.testing.assert_allclose(
        gpu.compensate(hidden[30:], base[30:]), cpu.compensate(hidden[30:], base[30:]), atol=1e-5
    )


@pytest.mark.gpu
def test_prequential_with_memory_runs_on_cuda():
    preq = Prequential.from_settings(
        load_settings(
            learner={"hidden": (16,), "device": "cuda"},
            features={"numeric_slots": 4, "categorical_slots": 1, "hash_buckets": 64},
            memory={"enabled": True, "rekey_every": 1},
        )
    )
    rng = np.random.default_rng(11)
    for _ in range(6):
        out = preq.process_columns(*columns(rng, 16))
    assert preq.memory.rekeys > 0 and preq.memory.memory.storage.keys.is_cuda
    np.testing.assert_allclose(out.prediction.sum(1), 1.0, rtol=1e-5)
