"""Swap under load: requests flow continuously (bounded in count and time, loopback only)
while 20+ new versions are published; not one request fails, and every response names a
version that was published."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter

import httpx
import pytest
from serving_support import export, make_rows, redis_server, serving, small_settings, train

from streamlearn.core.prequential import Prequential
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.registry.redis import RedisRegistry

VERSIONS = 22
CLIENTS = 3
MAX_REQUESTS = 30_000
MAX_SECONDS = 60.0


def _load(url: str, stop: threading.Event, results: list, failures: list) -> None:
    """One client: alternate v1 and v2 requests until told to stop (or a bound is hit)."""
    v1 = {"instances": [{"a": 0.5, "b": 1.0, "color": "red"}, {"a": -1.0}]}
    v2 = {
        "inputs": [
            {"name": "num", "shape": [1, 8], "datatype": "FP32", "data": [0.1] * 8},
            {"name": "cat", "shape": [1, 4], "datatype": "INT64", "data": [3, 0, 0, 0]},
        ]
    }
    deadline = time.monotonic() + MAX_SECONDS
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set() and len(results) < MAX_REQUESTS and time.monotonic() < deadline:
            i += 1
            try:
                if i % 2:
                    r = client.post("/v1/models/streamlearn:predict", json=v1)
                else:
                    r = client.post("/v2/models/streamlearn/infer", json=v2)
                if r.status_code != 200:
                    failures.append((r.status_code, r.text[:200]))
                    continue
                results.append(int(r.json()["model_version"]))
            except httpx.HTTPError as exc:
                failures.append(repr(exc))


@pytest.mark.parametrize("backend", ["filesystem", "redis"])
def test_no_request_fails_while_versions_swap(tmp_path, backend):
    with _registries(tmp_path, backend) as (writer, watcher, registry_settings):
        settings = small_settings(registry=registry_settings, serve={"memory_poll_s": 0.2})
        preq = Prequential.from_settings(settings)
        train(preq, *make_rows(256, 1))
        published = [writer.publish(export(preq))]
        with serving(settings, watcher) as (url, runtime, metrics):
            while runtime.state.bundle is None:
                time.sleep(0.01)
            stop, results, failures = threading.Event(), [], []
            clients = [
                threading.Thread(target=_load, args=(url, stop, results, failures))
                for _ in range(CLIENTS)
            ]
            for thread in clients:
                thread.start()
            rows, ys = make_rows(64 * VERSIONS, 2)
            for k in range(VERSIONS):  # train a little, export, publish: a new model each time
                train(preq, rows[64 * k : 64 * (k + 1)], ys[64 * k : 64 * (k + 1)])
                published.append(writer.publish(export(preq)))
                time.sleep(0.1)
            deadline = time.monotonic() + 5
            while runtime.state.bundle.version != published[-1] and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)  # a little load on the final version too
            stop.set()
            for thread in clients:
                thread.join(MAX_SECONDS)
            swaps = metrics.get_sample_value("streamlearn_serve_swaps_total", {"result": "swapped"})
    assert not failures, failures[:5]
    assert len(results) > 200
    seen = Counter(results)
    assert set(seen) <= set(published), set(seen) - set(published)
    assert len(published) == VERSIONS + 1
    assert runtime.state.bundle.version == published[-1]
    assert len(seen) >= VERSIONS // 2  # responses really came from many versions
    assert swaps >= VERSIONS // 2


@contextlib.contextmanager
def _registries(tmp_path, backend: str):
    """(writer, watcher, registry settings) for one backend; closed (and stopped) after."""
    with contextlib.ExitStack() as stack:
        if backend == "redis":
            url = stack.enter_context(redis_server(tmp_path))
            handles = (RedisRegistry(url), RedisRegistry(url))
            config = {"kind": "redis", "url": url, "poll_s": 0.5}
        else:
            root = tmp_path / "registry"
            handles = (FilesystemRegistry(root), FilesystemRegistry(root))
            config = {"path": str(root), "poll_s": 0.5}
        for handle in handles:
            stack.callback(handle.close)
        yield (*handles, config)
