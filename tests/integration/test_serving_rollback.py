"""Rollback only to a version that passes the checks of a swap (else 409, the pointer unmoved);
a replica started while the pointer names a refused version; refusals remembered by artifact
digest, not by number, across a Redis registry that restarts empty and numbers from 1 again."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
import redis
from serving_support import export, redis_server, serving, small_settings, trained

from streamlearn.errors import ArtifactError, RegistryError
from streamlearn.export.artifact import Artifact
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.registry.redis import RedisRegistry

V1 = "/v1/models/streamlearn:predict"
ROW = {"instances": [{"a": 0.3, "b": 2.0, "color": "blue"}]}
TOKEN = "t0ken"
REFUSED = "streamlearn_serve_artifacts_refused_total"


@pytest.fixture(scope="module")
def models():
    return trained("binary", n=300), trained("binary", n=500)


def _truncated(good: Artifact) -> Artifact:
    """An artifact whose model.onnx lost its second half (its meta.json is intact)."""
    return Artifact(good.onnx[: len(good.onnx) // 2], dict(good.meta))


def _admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)


def _wait_ready(client: httpx.Client, version: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        r = client.get("/v2/health/ready")
        if r.status_code == 200 and r.json()["model_version"] == version:
            return
        assert time.monotonic() < deadline, f"never ready with version {version}: {r.text}"
        time.sleep(0.02)


def test_rollback_only_to_a_version_that_passes(tmp_path, models):
    a, b = models
    registry = FilesystemRegistry(tmp_path)
    settings = small_settings(serve={"admin_token": TOKEN}, registry={"poll_s": 0.05})
    registry.publish(export(a))  # 1, good
    registry.publish(_truncated(export(b)))  # 2, refused by any replica
    registry.publish(export(b))  # 3, good
    with serving(settings, registry, watch=False) as (url, runtime, metrics), _admin(url) as c:
        assert runtime.refresh_model() and runtime.state.bundle.version == 3
        for _ in range(2):  # the previous version is the refused one: 409, the pointer stays
            r = c.post("/admin/rollback")
            assert r.status_code == 409, r.text
            body = r.json()
            assert body["reason"] == "sha256_mismatch" and "version 2" in body["error"]
            assert body["pointer"] == 3 and body["model_version"] == 3
            assert body["refused"] == {"2": "sha256_mismatch"}
            assert registry.current() == 3
        assert metrics.get_sample_value(REFUSED, {"reason": "sha256_mismatch"}) == 1  # once
        assert c.post(V1, json=ROW).json()["model_version"] == "3"

        r = c.post("/admin/rollback", json={"version": 1})  # a good older version: served now
        assert r.status_code == 200, r.text
        assert r.json() == {"pointer": 1, "model_version": 1, "refused": {"2": "sha256_mismatch"}}
        assert registry.current() == 1
        assert c.post(V1, json=ROW).json()["model_version"] == "1"
        assert c.post("/admin/rollback", json={"version": 7}).status_code == 409  # not stored

    with serving(settings, registry) as (url, _, _), httpx.Client(base_url=url) as fresh:
        _wait_ready(fresh, "1")  # a replica started afterwards is ready with the pointer's


def test_a_replica_started_on_a_refused_pointer_serves_the_newest_good_version(
    tmp_path, models, caplog
):
    a, b = models
    registry = FilesystemRegistry(tmp_path)
    settings = small_settings(serve={"admin_token": TOKEN})
    registry.publish(_truncated(export(a)))  # 1, refused
    with serving(settings, registry, watch=False) as (url, runtime, metrics), _admin(url) as c:
        with caplog.at_level(logging.ERROR, logger="streamlearn.serve.runtime"):
            for _ in range(3):
                assert not runtime.refresh_model()
        r = c.get("/v2/health/ready")
        assert r.status_code == 503
        why = [m for m in caplog.messages if m.startswith("not ready")]
        assert len(why) == 1 and "refused version 1" in why[0]  # said once, with the reason
        assert "sha256_mismatch" in why[0]
        assert metrics.get_sample_value(REFUSED, {"reason": "sha256_mismatch"}) == 1

    registry.publish(export(a))  # 2, good
    registry.publish(export(b))  # 3, good
    registry.publish(_truncated(export(b)))  # 4, refused: the pointer names it
    with serving(settings, registry, watch=False) as (url, runtime, metrics), _admin(url) as c:
        assert runtime.refresh_model()
        _wait_ready(c, "3")  # the newest version older than the pointer that passes
        assert registry.current() == 4  # a replica leaves the pointer alone
        assert not runtime.refresh_model()  # the refusal is remembered: nothing refetched
        status = c.post("/admin/reload").json()
        assert status == {"pointer": 4, "model_version": 3, "refused": {"4": "sha256_mismatch"}}
        registry.publish(export(a))  # 5, good: the pointer moves on, so does the replica
        assert runtime.refresh_model() and runtime.state.bundle.version == 5


def test_refusals_are_remembered_by_digest_across_a_registry_restarted_empty(
    tmp_path, models, caplog
):
    a, b = models
    with redis_server(tmp_path) as url:
        registry = RedisRegistry(url, prefix="rb")
        settings = small_settings(registry={"kind": "redis", "url": url, "prefix": "rb"})
        with serving(settings, registry, watch=False) as (http, runtime, metrics):
            caplog.set_level(logging.INFO, logger="streamlearn.serve.runtime")
            assert registry.publish(export(a)) == 1
            assert runtime.refresh_model()
            assert registry.publish(_truncated(export(b))) == 2
            assert not runtime.refresh_model() and not runtime.refresh_model()
            served = runtime.state.bundle

            admin = redis.Redis.from_url(url)  # the registry restarts empty
            admin.flushall()
            admin.client_kill_filter(_type="normal", skipme=True)
            admin.client_kill_filter(_type="pubsub")
            admin.close()

            assert registry.publish(export(b)) == 1  # the served number, other bytes
            assert runtime.refresh_model()
            assert runtime.state.bundle is not served and runtime.state.bundle.version == 1
            republished = "streamlearn_serve_versions_republished_total"
            assert metrics.get_sample_value(republished) == 1
            assert registry.publish(export(a)) == 2  # the number refused before, good now
            assert runtime.refresh_model() and runtime.state.bundle.version == 2
            assert registry.publish(_truncated(export(a))) == 3
            assert not runtime.refresh_model() and not runtime.refresh_model()
            with httpx.Client(base_url=http) as client:
                assert client.get("/v2/health/ready").json()["model_version"] == "2"

            assert metrics.get_sample_value(REFUSED, {"reason": "sha256_mismatch"}) == 2
            assert (
                metrics.get_sample_value("streamlearn_serve_swaps_total", {"result": "refused"})
                == 2
            )
            refusals = [m for m in caplog.messages if m.startswith("refused model version")]
            assert len(refusals) == 2  # each refused artifact logged once
            assert any("re-published with other bytes" in m for m in caplog.messages)
        registry.close()


def test_a_version_without_meta_json_is_refused_once(tmp_path, models):
    a, b = models
    registry = FilesystemRegistry(tmp_path)
    registry.publish(export(a))
    with serving(small_settings(), registry, watch=False) as (_, runtime, metrics):
        assert runtime.refresh_model()
        registry.publish(export(b))
        (tmp_path / "versions" / "00000002" / "meta.json").unlink()
        assert not runtime.refresh_model() and not runtime.refresh_model()
        assert runtime.refused == {2: "missing_file"}
        assert metrics.get_sample_value(REFUSED, {"reason": "missing_file"}) == 1
        registry.publish(export(b))
        assert runtime.refresh_model() and runtime.state.bundle.version == 3


def test_fetch_meta_on_both_backends(tmp_path, models):
    with redis_server(tmp_path) as url:
        backends = [FilesystemRegistry(tmp_path / "files"), RedisRegistry(url, prefix="fm")]
        for registry in backends:
            artifact = export(models[0])
            version = registry.publish(artifact)
            assert registry.fetch_meta(version) == registry.fetch(version).meta
            with pytest.raises(RegistryError):
                registry.fetch_meta(version + 1)
            registry.close()
        redis.Redis.from_url(url).hset("fm:artifact:9", "onnx", b"x")  # a hash without meta
        with pytest.raises(ArtifactError, match="missing_file"):
            RedisRegistry(url, prefix="fm").fetch_meta(9)
