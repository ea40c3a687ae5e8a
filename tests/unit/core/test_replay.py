import copy

import numpy as np
import pytest
import torch
from scipy import stats

from streamlearn.core.replay import ReservoirBuffer
from streamlearn.kernels.torch_reservoir import slots_written


def items(start, n):
    """Rows whose every field is the item's index (+1, so an empty row, 0, is never an item)."""
    ids = torch.arange(start + 1, start + n + 1)
    return ids[:, None].float().repeat(1, 2), ids[:, None].repeat(1, 3), ids


def feed(buffer, sizes, start=0):
    for size in sizes:
        buffer.add(*items(start, size))
        start += size
    return start


def kept(buffer):
    return sorted(buffer.y[: len(buffer)].tolist())


def test_algorithm_r_keeps_every_item_with_equal_probability():
    capacity, n_items, trials = 20, 200, 3000
    rng = np.random.default_rng(2024)
    counts = np.zeros(n_items, dtype=np.int64)
    for trial in range(trials):
        sizes = []
        while sum(sizes) < n_items:  # batches of varying sizes, 1..37
            sizes.append(int(min(rng.integers(1, 38), n_items - sum(sizes))))
        buffer = ReservoirBuffer(capacity, 2, 3, torch.long, seed=trial)
        feed(buffer, sizes)
        ids = buffer.y.numpy() - 1
        assert len(set(ids.tolist())) == capacity  # no duplicates, no empty row
        counts[ids] += 1
    expected = trials * capacity / n_items
    assert counts.sum() == trials * capacity
    result = stats.chisquare(counts)
    assert result.pvalue > 0.001, (result, counts.min(), counts.max(), expected)
    # early, middle and late items alike (a biased reservoir favours one end)
    thirds = [counts[:66].mean(), counts[66:133].mean(), counts[133:].mean()]
    assert max(abs(t - expected) for t in thirds) < 0.05 * expected


def test_short_stream_keeps_each_item_with_probability_capacity_over_n():
    # A short stream shows small biases (e.g. drawing j from 0..t-1 instead of 0..t keeps the
    # first `capacity` items with probability 4/9 and the rest with 5/9 here, not 1/2 each).
    trials = 4000
    counts = np.zeros(10, dtype=np.int64)
    for trial in range(trials):
        buffer = ReservoirBuffer(5, 2, 3, torch.long, seed=10**6 + trial)
        feed(buffer, [3, 4, 3])
        counts[buffer.y.numpy() - 1] += 1
    assert stats.chisquare(counts).pvalue > 0.001, counts
    assert abs(counts[:5].mean() - counts[5:].mean()) < 0.05 * trials / 2


def test_batch_insertion_equals_one_by_one():
    one = ReservoirBuffer(20, 2, 3, torch.long, seed=7)
    feed(one, [1] * 300)
    for sizes in ([300], [5, 50, 1, 100, 144], [19, 2, 279]):
        batch = ReservoirBuffer(20, 2, 3, torch.long, seed=7)
        feed(batch, sizes)
        assert torch.equal(batch.y, one.y), sizes
        assert torch.equal(batch.num, one.num) and torch.equal(batch.cat, one.cat)
        assert batch.seen == one.seen == 300


def test_later_item_wins_a_slot_drawn_twice_in_one_batch():
    drawn = np.random.default_rng(0).integers(0, np.arange(2, 500) + 1)  # the reservoir's draws
    positions, slots = slots_written(2, 0, 500, drawn)
    assert len(set(slots.tolist())) == len(slots)  # each slot written once
    sequential = {}
    rng = np.random.default_rng(0)
    for t in range(500):
        j = t if t < 2 else int(rng.integers(0, t + 1))
        if j < 2:
            sequential[j] = t
    assert dict(zip(slots.tolist(), positions.tolist(), strict=True)) == sequential


def test_fills_below_capacity_in_order():
    buffer = ReservoirBuffer(20, 2, 3, torch.float32, seed=1)
    assert len(buffer) == 0
    feed(buffer, [3, 4])
    assert len(buffer) == 7 and buffer.seen == 7
    assert buffer.y[:7].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert (buffer.y[7:] == 0).all()
    assert buffer.y.dtype == torch.float32
    assert buffer.cat[:7, 0].tolist() == [1, 2, 3, 4, 5, 6, 7]
    feed(buffer, [30], start=7)
    assert len(buffer) == 20 and buffer.seen == 37


def test_sample_only_from_filled_rows():
    buffer = ReservoirBuffer(50, 2, 3, torch.long, seed=3)
    feed(buffer, [5])
    num, cat, y = buffer.sample(2000)
    assert num.shape == (2000, 2) and cat.shape == (2000, 3) and y.shape == (2000,)
    assert set(y.tolist()) == {1, 2, 3, 4, 5}
    assert torch.equal(cat[:, 0], y) and torch.equal(num[:, 0].long(), y)  # rows stay whole


def test_capacity_zero_counts_but_keeps_nothing():
    buffer = ReservoirBuffer(0, 2, 3, torch.long)
    state = buffer._rng.bit_generator.state
    feed(buffer, [4, 4])
    assert buffer.seen == 8 and len(buffer) == 0
    assert buffer._rng.bit_generator.state == state  # no draws


def test_host_arrays_and_tensors_insert_alike():
    rows = [items(start, 7) for start in range(0, 70, 7)]
    a, b = (ReservoirBuffer(16, 2, 3, torch.long, seed=2) for _ in "ab")
    for num, cat, y in rows:
        a.add(num, cat, y)
        b.add(num.double().numpy(), cat.numpy(), y.numpy())  # cast to the reservoir's dtypes
    assert torch.equal(a.num, b.num) and torch.equal(a.cat, b.cat) and torch.equal(a.y, b.y)


def test_clear_forgets_rows():
    buffer = ReservoirBuffer(5, 2, 3, torch.long, seed=0)
    feed(buffer, [9])
    buffer.clear()
    assert len(buffer) == 0
    feed(buffer, [2], start=100)
    assert kept(buffer) == [101, 102]
    assert set(buffer.sample(100)[2].tolist()) == {101, 102}


def test_state_round_trip_continues_identically():
    a = ReservoirBuffer(16, 2, 3, torch.long, seed=5)
    end = feed(a, [10, 30])
    a.sample(7)  # sampling advances the same generator
    state = copy.deepcopy(a.state_dict())
    b = ReservoirBuffer(16, 2, 3, torch.long, seed=999)
    b.load_state_dict(state)
    assert b.seen == a.seen and torch.equal(b.y, a.y)
    feed(a, [13, 40], start=end)
    feed(b, [13, 40], start=end)
    assert torch.equal(a.y, b.y) and torch.equal(a.num, b.num)
    for x, y in zip(a.sample(25), b.sample(25), strict=True):
        assert torch.equal(x, y)


def test_same_seed_same_reservoir_different_seed_differs():
    a, b, c = (ReservoirBuffer(10, 2, 3, torch.long, seed=s) for s in (4, 4, 5))
    for buffer in (a, b, c):
        feed(buffer, [100])
    assert torch.equal(a.y, b.y)
    assert not torch.equal(a.y, c.y)


@pytest.mark.gpu
def test_rows_live_on_cuda():
    buffer = ReservoirBuffer(8, 2, 3, torch.long, device="cuda", seed=0)
    num, cat, y = items(0, 20)
    buffer.add(num.cuda(), cat.cuda(), y.cuda())
    assert buffer.y.device.type == "cuda"
    assert buffer.sample(4)[0].device.type == "cuda"
