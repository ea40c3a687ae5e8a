import io
import random

import numpy as np
import pytest
import torch

from streamlearn.worker.checkpoint import CheckpointStore, restore_rng, rng_state, to_plain


def state(i: int) -> dict:
    return {"step": i, "weights": torch.full((3,), float(i)), "names": ["a", "b"], "x": None}


def test_save_and_load_latest_round_trip(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    for i in range(5):
        store.save(state(i))
    files = store.checkpoints()
    assert [seq for seq, _, _ in files] == [3, 4, 5]  # only the newest `keep`
    loaded = store.load_latest()
    assert loaded is not None and loaded.seq == 5
    assert loaded.state["step"] == 4
    assert torch.equal(loaded.state["weights"], torch.full((3,), 4.0))
    # a plain torch.load with weights_only=True reads it too
    assert torch.load(files[-1][1], weights_only=True)["names"] == ["a", "b"]


def test_damaged_newest_checkpoint_is_skipped_counted_and_set_aside(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(state(1))
    newest = store.save(state(2))
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit: torch itself would not notice
    newest.write_bytes(bytes(data))
    reopened = CheckpointStore(tmp_path, keep=3)
    loaded = reopened.load_latest()
    assert loaded is not None and loaded.state["step"] == 1
    assert reopened.corrupt_skipped == 1
    assert newest.with_name(newest.name + ".corrupt").exists()
    assert reopened.save(state(3)).name.startswith("ckpt-0000000003-")  # numbering continues


def test_truncated_file_is_skipped_and_none_when_nothing_is_readable(tmp_path):
    store = CheckpointStore(tmp_path)
    path = store.save(state(1))
    path.write_bytes(path.read_bytes()[:100])
    assert CheckpointStore(tmp_path).load_latest() is None


def test_crash_leftovers_are_removed_and_nothing_else_is_read(tmp_path):
    (tmp_path / ".ckpt-0000000007.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    store = CheckpointStore(tmp_path)
    assert not (tmp_path / ".ckpt-0000000007.tmp").exists()
    assert store.load_latest() is None
    assert store.save(state(0)).name.startswith("ckpt-0000000001-")


def test_to_plain_keeps_only_loadable_types():
    plain = to_plain(
        {"a": np.arange(3), "b": np.float64(1.5), "c": (1, 2), "d": np.array(["x"]), "e": True}
    )
    assert isinstance(plain["a"], torch.Tensor) and plain["b"] == 1.5
    assert type(plain["b"]) is float  # not numpy: weights_only could not load it
    assert plain["c"] == [1, 2] and plain["d"] == ["x"] and plain["e"] is True
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["c"] == [1, 2]
    with pytest.raises(TypeError, match="cannot checkpoint"):
        to_plain({"f": object()})


@pytest.mark.parametrize("words", ["tensors", "lists"])
def test_rng_state_round_trip(words: str):
    """Through a checkpoint's bytes; "lists": the generators' words as older checkpoints hold
    them."""
    saved = to_plain(rng_state())
    if words == "lists":
        saved["numpy"][0] = saved["numpy"][0].tolist()
        saved["python"][1] = saved["python"][1].tolist()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    restore_rng(saved)
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]
