"""Hot swap: bad artifacts are refused and counted while the old model keeps serving;
rollback; error-memory pulls; the Redis pub/sub path end to end."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from serving_support import export, redis_server, serving, small_settings, trained

from streamlearn.app import build_server
from streamlearn.export.artifact import Artifact, sha256_hex
from streamlearn.export.memory import encode_memory
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.registry.redis import RedisRegistry

V1 = "/v1/models/streamlearn:predict"


@pytest.fixture(scope="module")
def models():
    """Two differently trained binary models and one with other input widths."""
    a = trained("binary", n=600, memory={"enabled": True, "size": 64})
    b = trained("binary", n=900)
    other = trained("binary", n=300, features={"numeric_slots": 6})
    return a, b, other


def _bad(kind: str, good: Artifact, other: Artifact) -> Artifact:
    meta = dict(good.meta)
    if kind == "truncated":
        return Artifact(good.onnx[: len(good.onnx) // 2], meta)
    if kind == "corrupt":
        middle = len(good.onnx) // 2
        return Artifact(good.onnx[:middle] + b"\x00\x01" + good.onnx[middle + 2 :], meta)
    if kind == "garbage_with_its_sha":
        garbage = b"\x08\x07" + b"junk" * 100
        return Artifact(garbage, {**meta, "sha256": sha256_hex(garbage)})
    if kind == "other_signature":  # a valid graph that does not fit this meta.json
        return Artifact(other.onnx, {**meta, "sha256": sha256_hex(other.onnx)})
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("truncated", "sha256_mismatch"),
        ("corrupt", "sha256_mismatch"),
        ("garbage_with_its_sha", "unloadable"),
        ("other_signature", "bad_signature"),
        ("missing_file", "missing_file"),
        ("broken_meta", "bad_meta"),
    ],
)
def test_bad_artifact_is_refused_and_the_old_model_keeps_serving(tmp_path, models, kind, reason):
    a, b, other = models
    registry = FilesystemRegistry(tmp_path)
    settings = small_settings()
    registry.publish(export(a))
    with serving(settings, registry, watch=False) as (url, runtime, metrics):
        assert runtime.refresh_model() and runtime.state.bundle.version == 1
        if kind in ("missing_file", "broken_meta"):
            registry.publish(export(b))
            folder = tmp_path / "versions" / "00000002"
            if kind == "missing_file":
                (folder / "model.onnx").unlink()
            else:
                (folder / "meta.json").write_bytes(b'{"format": "streamlearn-mo')
        else:
            registry.publish(_bad(kind, export(b), export(other)))
        assert registry.current() == 2
        assert not runtime.refresh_model()
        assert not runtime.refresh_model()  # remembered: not refetched, not recounted
        assert runtime.state.bundle.version == 1
        assert runtime.refused == {2: reason}
        refused = metrics.get_sample_value(
            "streamlearn_serve_artifacts_refused_total", {"reason": reason}
        )
        assert refused == 1.0
        with httpx.Client(base_url=url) as client:
            r = client.post(V1, json={"instances": [{"a": 1.0, "color": "red"}]})
            assert r.status_code == 200 and r.json()["model_version"] == "1"
            assert client.get("/v2/health/ready").json()["model_version"] == "1"
        registry.publish(export(b))  # the next good version is taken
        assert runtime.refresh_model() and runtime.state.bundle.version == 3


def test_admin_rollback_serves_the_previous_version_now(tmp_path, models):
    a, b, _ = models
    registry = FilesystemRegistry(tmp_path)
    settings = small_settings(serve={"admin_token": "t"})
    registry.publish(export(a))
    registry.publish(export(b))
    with serving(settings, registry, watch=False) as (url, runtime, _):
        runtime.refresh_model()
        with httpx.Client(base_url=url, headers={"authorization": "Bearer t"}) as client:
            rows = {"instances": [{"a": 0.3, "b": 2.0, "color": "blue"}]}
            before = client.post(V1, json=rows).json()
            assert before["model_version"] == "2"
            r = client.post("/admin/rollback")
            assert r.status_code == 200 and r.json() == {
                "pointer": 1,
                "model_version": 1,
                "refused": {},
            }
            after = client.post(V1, json=rows).json()
            assert after["model_version"] == "1"
            assert after["predictions"] != before["predictions"]
            assert registry.current() == 1
            r = client.post("/admin/rollback", json={"version": 2})  # and forward again
            assert r.json()["model_version"] == 2


def test_error_memory_pull_refusal_and_fit(tmp_path, models):
    a = models[0]
    registry = FilesystemRegistry(tmp_path)
    registry.publish(export(a))
    with serving(small_settings(), registry, watch=False) as (_, runtime, metrics):
        runtime.refresh_model()
        assert not runtime.refresh_memory()  # nothing pushed yet
        registry.push_memory(encode_memory(a.memory, 1))
        assert runtime.refresh_memory() and runtime.state.memory_fits()
        assert not runtime.refresh_memory()  # unchanged bytes: not decoded again
        kept = runtime.state.snapshot
        registry.push_memory(b"PK\x03\x04 torn write")
        assert not runtime.refresh_memory()
        assert runtime.state.snapshot is kept  # the previous memory keeps compensating
        assert metrics.get_sample_value(
            "streamlearn_serve_memory_refused_total", {"reason": "bad_memory"}
        )
        num = np.zeros((2, 8), np.float32)
        cat = np.zeros((2, 4), np.int64)
        _, _, compensated = runtime.predict(runtime.state, num, cat)
        assert compensated


def test_memory_of_another_shape_is_not_applied(tmp_path):
    wide = trained("binary", n=300, memory={"enabled": True}, learner={"hidden": [16, 24]})
    narrow = trained("binary", n=300)
    registry = FilesystemRegistry(tmp_path)
    registry.publish(export(narrow))
    registry.push_memory(encode_memory(wide.memory, None))
    with serving(small_settings(), registry, watch=False) as (_, runtime, _):
        runtime.refresh_model()
        runtime.refresh_memory()
        assert runtime.state.snapshot is not None and not runtime.state.memory_fits()
        num, cat = np.zeros((1, 8), np.float32), np.zeros((1, 4), np.int64)
        assert runtime.predict(runtime.state, num, cat)[2] is False


def test_redis_publish_reaches_serving_through_pubsub(tmp_path, models):
    a, b, _ = models
    with redis_server(tmp_path) as url:
        settings = small_settings(
            registry={"kind": "redis", "url": url, "poll_s": 30.0},  # polling alone: too slow
            serve={"memory_poll_s": 30.0},
        )
        writer = RedisRegistry(url)
        watcher = RedisRegistry(url)
        writer.publish(export(a))
        with serving(settings, watcher) as (http, runtime, _), httpx.Client(base_url=http) as c:
            deadline = time.monotonic() + 10
            while runtime.state.bundle is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert runtime.state.bundle.version == 1
            start = time.monotonic()
            writer.publish(export(b))
            while c.get("/v2/health/ready").json()["model_version"] != "2":
                assert time.monotonic() - start < 2.0, "pub/sub did not wake the watcher"
                time.sleep(0.01)
        writer.close()
        watcher.close()


def test_watcher_stops_promptly(tmp_path):
    settings = small_settings(registry={"poll_s": 30.0}, serve={"memory_poll_s": 30.0})
    _, runtime = build_server(settings, FilesystemRegistry(tmp_path), watch=False)
    runtime.start()
    time.sleep(0.3)  # blocked in the registry wait by now
    start = time.monotonic()
    runtime.stop()
    assert time.monotonic() - start < 1.0
