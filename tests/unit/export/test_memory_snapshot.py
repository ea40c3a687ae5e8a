"""Error-memory snapshots: what serving rebuilds compensates exactly like the learner."""

from __future__ import annotations

import numpy as np
import pytest
from serving_support import make_rows, trained

from streamlearn.errors import ArtifactError
from streamlearn.export.memory import decode_memory, encode_memory


@pytest.mark.parametrize("kind", ["topk", "lsh"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_serving_compensation_equals_the_learner(kind, task):
    preq = trained(task, n=800, memory={"enabled": True, "kind": kind, "size": 128})
    assert preq.memory is not None and len(preq.memory.memory) > 0
    snapshot = decode_memory(encode_memory(preq.memory, model_version=7))
    assert snapshot.model_version == 7
    assert snapshot.learner_step == preq.learner.steps
    assert snapshot.hidden_dim == 16
    rows, _ = make_rows(40, 5, task)
    feats = preq.encoder.encode(rows)
    base, hidden = preq.learner.predict_hidden(preq.encoder.standardize(feats.num), feats.cat)
    learner = preq.memory.compensate(hidden, base)
    serving = snapshot.memory.compensate(hidden, base)
    assert np.abs(learner - base).max() > 1e-3  # the memory does change predictions
    np.testing.assert_allclose(serving, learner, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "blob", [b"", b"garbage", b"PK\x03\x04 truncated zip", b"\x93NUMPY not a zip"]
)
def test_damaged_snapshots_are_refused(blob):
    with pytest.raises(ArtifactError) as info:
        decode_memory(blob)
    assert info.value.reason == "bad_memory"


def test_truncated_snapshot_is_refused():
    preq = trained("binary", n=300, memory={"enabled": True})
    blob = encode_memory(preq.memory, None)
    with pytest.raises(ArtifactError):
        decode_memory(blob[: len(blob) // 2])
