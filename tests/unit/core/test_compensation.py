"""FrozenMemory: compensates exactly like the worker's ErrorMemory on its state, by numpy reads
or (a top-k memory, where the compiled kernels are installed) by the worker's compiled kernel."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from streamlearn.core.memory.compensation import FrozenMemory, compensated, unit_keys
from streamlearn.core.memory.error_memory import ErrorMemory
from streamlearn.kernels.compiled import CompiledMemory
from streamlearn.kernels.cpu.binding import KernelsUnavailable, load

HIDDEN = 6


def filled(kind, width, regression, rows=200, **config):
    """A torch ErrorMemory (no compiled kernels) holding ``rows`` random samples."""
    config = {"kind": kind, "lam": 0.8, "gamma": 0.4, "tau": 0.1, "k": 8, **config}
    memory = ErrorMemory(HIDDEN, width, regression=regression, size=64, tables=4, bits=3, **config)
    rng = np.random.default_rng(3)
    if rows:
        hidden = rng.normal(size=(rows, HIDDEN)).astype(np.float32)
        if regression:
            y, base = rng.normal(size=rows), rng.normal(size=rows).astype(np.float32)
        else:
            y = rng.integers(width, size=rows)
            base = rng.dirichlet(np.ones(width), size=rows).astype(np.float32)
        for start in range(0, rows, 32):
            part = slice(start, start + 32)
            memory.update(hidden[part], y[part], base[part])
    full = {"tables": 4, "bits": 3, "decay": 1.0, "size": 64, "store": "all", **config}
    return memory, full


def queries(width, regression, n=50):
    rng = np.random.default_rng(11)
    hidden = rng.normal(size=(n, HIDDEN)).astype(np.float32)
    if regression:
        return hidden, rng.normal(size=n).astype(np.float32)
    return hidden, rng.dirichlet(np.ones(width), size=n).astype(np.float32)


def frozen_of(memory, config, width, regression, compiled):
    """FrozenMemory of ``memory``'s state, reading by the compiled kernel or by numpy."""
    frozen = FrozenMemory.from_state(memory.state_dict(), config, HIDDEN, width, regression)
    if not compiled:
        return dataclasses.replace(frozen, compiled=False)
    if not frozen.compiled:
        pytest.skip("no compiled kernels in this installation")
    return frozen


CASES = [
    ("topk", {}),
    ("topk", {"k": 0}),  # dense: every stored row
    ("topk", {"k": 100}),  # k beyond the ring: every stored row
    ("lsh", {}),
    ("lsh", {"decay": 0.97}),
]
# each case read by numpy, and a top-k one by the compiled kernel too (LSH has no compiled read)
READS = [
    pytest.param(kind, extra, compiled, id=f"{kind}-{extra}-{'compiled' if compiled else 'numpy'}")
    for kind, extra in CASES
    for compiled in ([False, True] if kind == "topk" else [False])
]


def test_only_a_top_k_memory_reads_compiled():
    try:
        load()
        available = True
    except KernelsUnavailable:
        available = False
    for kind in ("topk", "lsh"):
        memory, config = filled(kind, 2, False, rows=5)
        frozen = FrozenMemory.from_state(memory.state_dict(), config, HIDDEN, 2, False)
        assert frozen.compiled == (kind == "topk" and available)


@pytest.mark.parametrize(("kind", "extra", "compiled"), READS)
@pytest.mark.parametrize(("width", "regression"), [(2, False), (4, False), (1, True)])
def test_frozen_memory_equals_the_worker_memory(kind, extra, width, regression, compiled):
    memory, config = filled(kind, width, regression, **extra)
    frozen = frozen_of(memory, config, width, regression, compiled)
    assert len(frozen) == len(memory) > 0
    hidden, base = queries(width, regression)
    want = memory.compensate(hidden, base)
    got = frozen.compensate(hidden, base)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(want - base).max() > 1e-2  # the memory does change predictions
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("kind", "extra", "compiled"), READS)
def test_a_zero_key_reads_like_the_memory_rebuilt_from_the_state(kind, extra, compiled):
    """A dead-ReLU row ties with every stored row: which k it reads depends on the ring's
    order and on how the kernel breaks ties, so it matches a memory of the same kernel loaded
    from the same state (the ring oldest first): numpy reads as the torch kernel, the compiled
    read as the worker's compiled memory."""
    memory, config = filled(kind, 3, False, **extra)
    state = memory.state_dict()
    frozen = frozen_of(memory, config, 3, False, compiled)
    kernel = CompiledMemory(load()) if frozen.compiled else None
    rebuilt = ErrorMemory(HIDDEN, 3, kernel=kernel, **{k: config[k] for k in config})
    rebuilt.load_state_dict(state)
    hidden, base = queries(3, False, n=4)
    hidden[0] = 0.0
    want, _ = rebuilt.compensate_keyed(hidden, base)  # by the memory's own kernel
    np.testing.assert_allclose(frozen.compensate(hidden, base), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["topk", "lsh"])
@pytest.mark.parametrize("lam", [0.8, 0.0])
def test_empty_memory_or_lam_zero_returns_the_base_unchanged(kind, lam):
    memory, config = filled(kind, 3, False, rows=0 if lam else 100, lam=lam)
    frozen = FrozenMemory.from_state(memory.state_dict(), config, HIDDEN, 3, False)
    hidden, base = queries(3, False)
    base[1] = [0.7, 0.7, 0.7]  # not a distribution: no clamping or renormalising either
    out = frozen.compensate(hidden, base)
    np.testing.assert_array_equal(out, base)
    assert out is not base


def test_formula_on_a_hand_made_read():
    base = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
    mean = np.array([[0.0, 1.0, 0.8, 0.2], [1.0, 0.0, 0.1, 0.9], [1.0, 0.0, 0.0, 1.0]])
    lam, gamma = 0.5, 0.25
    want = base + lam * (gamma * (mean[:, :2] - base) + (1 - gamma) * (mean[:, :2] - mean[:, 2:]))
    want = np.clip(want, 0, 1) / np.clip(want, 0, 1).sum(1, keepdims=True)
    found = np.array([True, True, False])  # the last row found nothing: kept as it was
    out = compensated(base, (mean.astype(np.float32), found), lam, gamma, False)
    np.testing.assert_allclose(out[:2], want[:2], rtol=1e-6)
    np.testing.assert_array_equal(out[2], base[2])
    raw = compensated(base[:, :1], (mean[:, [0, 2]].astype(np.float32), None), 2.0, 1.0, True)
    np.testing.assert_allclose(raw[:, 0], base[:, 0] + 2.0 * (mean[:, 0] - base[:, 0]), rtol=1e-6)


def test_unit_keys_leaves_a_zero_row_zero():
    keys = unit_keys(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(keys, [[0.6, 0.8], [0.0, 0.0]])
    assert keys.dtype == np.float32


@pytest.mark.parametrize(
    ("kind", "compiled"), [("topk", False), ("topk", True), ("lsh", False)], ids=str
)
def test_rows_that_do_not_fit_the_memory_are_refused(kind, compiled):
    """A request's hidden rows or predictions of other widths than the memory's (a model and a
    memory of different shapes): a ValueError, never a read past the memory's arrays."""
    memory, config = filled(kind, 3, False)
    frozen = frozen_of(memory, config, 3, False, compiled)
    hidden, base = queries(3, False, n=4)
    with pytest.raises(ValueError):
        frozen.compensate(np.zeros((4, HIDDEN + 2), np.float32), base)
    with pytest.raises(ValueError):
        frozen.compensate(hidden, np.full((4, 5), 0.2, np.float32))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keys": np.zeros((5, HIDDEN + 1), np.float32)}, "keys has shape"),
        ({"y": np.zeros((3, 2), np.float32)}, "differ in length"),
        ({"base": np.array(["a"] * 5)}, "not numeric"),
        ({"kind": "lsh"}, "kind='lsh'"),
    ],
)
def test_state_that_does_not_fit_is_refused(change, message):
    memory, config = filled("topk", 2, False, rows=5)
    with pytest.raises(ValueError, match=message):
        FrozenMemory.from_state({**memory.state_dict(), **change}, config, HIDDEN, 2, False)


def test_lsh_state_must_fit_the_sketch():
    memory, config = filled("lsh", 2, False, rows=5)
    with pytest.raises(ValueError, match="planes has shape"):
        FrozenMemory.from_state(memory.state_dict(), {**config, "bits": 4}, HIDDEN, 2, False)


def test_compensation_imports_no_torch():
    code = "import sys, streamlearn.core.memory.compensation; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
