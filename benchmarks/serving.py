"""Serving benchmark: latency and throughput of v1/v2, the onnxruntime floor, hot swaps.

The server runs as a real ``streamlearn serve`` subprocess (uvicorn, one process, as deployed)
on loopback; the load generator is a minimal asyncio HTTP/1.1 keep-alive client in this
process, so the two do not share a GIL. One-row requests throughout (online serving). Phases:

1. floor — in-process: onnxruntime alone, and the whole v1 path (encode + onnxruntime +
   error-memory compensation), per call;
2. closed loop — ``--concurrency`` connections back to back for v1 and for v2: requests/s and
   p50/p99 latency;
3. paced — an open-loop schedule at ``--rate`` requests/s (latency measured from the scheduled
   send time, so queueing is not hidden);
4. swaps — the same paced load while a new version is published every ``--swap-every``
   seconds: latency during swaps, failures, and the time from publish to the first response
   served by the new version (filesystem registry, and Redis when a redis-server is found).

Writes <out>/serving.md and <out>/serving.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from report import command_line, load_average, machine_info, write_json
from serving_report import TARGET_P99_MS, TARGET_PUBLISH_S, TARGET_RATE, render

from streamlearn.core.prequential import Prequential
from streamlearn.events import Event
from streamlearn.export.artifact import Artifact, load_bundle
from streamlearn.export.memory import decode_memory, encode_memory
from streamlearn.export.onnx import export_artifact
from streamlearn.registry.base import Registry
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.registry.redis import RedisRegistry
from streamlearn.settings import load_settings
from streamlearn.sources.synthetic import SyntheticSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


# -- model and payloads ------------------------------------------------------------------------
def train_model(events: int) -> tuple[Prequential, list[dict[str, Any]]]:
    settings = load_settings(memory={"enabled": True}, learner={"device": "cpu"})
    preq = Prequential.from_settings(settings)
    rows: list[dict[str, Any]] = []
    for batch in SyntheticSource("agrawal-drift", events, 7).batches(64):
        good = [e for e in batch if isinstance(e, Event)]
        preq.process([e.x for e in good], [e.y for e in good])
        rows = [e.x for e in good]
    return preq, rows


def artifacts(preq: Prequential, n: int) -> list[Artifact]:
    """``n`` distinct exports (the model keeps learning between them)."""
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        x = {"salary": float(rng.uniform(2e4, 1.5e5)), "age": int(rng.integers(20, 80))}
        preq.process([x] * 8, [int(rng.integers(2))] * 8)
        out.append(export_artifact(preq.learner.model, preq.encoder, preq.labels, "binary"))
    return out


def payloads(preq: Prequential, row: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    feats = preq.encoder.encode([row])
    num, cat = preq.encoder.standardize(feats.num), feats.cat
    tensors = (("num", num, "FP32"), ("cat", cat, "INT64"))
    v2 = {
        "inputs": [
            {"name": n, "shape": list(a.shape), "datatype": t, "data": a.ravel().tolist()}
            for n, a, t in tensors
        ],
        "outputs": [{"name": "prediction"}],
    }
    return {
        "v1": ("/v1/models/streamlearn:predict", json.dumps({"instances": [row]}).encode()),
        "v2": ("/v2/models/streamlearn/infer", json.dumps(v2).encode()),
    }


def floor(preq: Prequential, row: dict[str, Any], n: int = 5000) -> dict[str, dict[str, float]]:
    """In-process per-call time (µs): onnxruntime alone and the full v1 path."""
    art = export_artifact(preq.learner.model, preq.encoder, preq.labels, "binary").with_version(1)
    bundle = load_bundle(1, art.onnx, art.meta_bytes())
    memory = decode_memory(encode_memory(preq.memory, 1)).error_memory
    num, cat = bundle.encode([row])

    def v1_path() -> None:
        z, c = bundle.encode([row])
        pred, hidden = bundle.run(z, c)
        memory.compensate(hidden, pred)

    out = {}
    for name, fn in (("onnxruntime.run", lambda: bundle.run(num, cat)), ("v1 path", v1_path)):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = _summary(times)
    return out


# -- a minimal HTTP/1.1 keep-alive client --------------------------------------------------------
class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def closed_loop(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        conn = await Connection.open(port)
        end = time.perf_counter() + seconds
        while (start := time.perf_counter()) < end:
            status, _ = await conn.post(path, body)
            latencies.append(time.perf_counter() - start)
            failures += status != 200
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {**_summary(latencies), "rps": len(latencies) / elapsed, "failures": failures}


async def paced(
    port: int, path: str, body: bytes, rate: float, seconds: float, pool: int = 32
) -> tuple[dict, list[tuple[float, float, int]]]:
    """Open loop at ``rate``/s; returns the summary and (sent, done, version) per request."""
    conns: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool):
        conns.put_nowait(await Connection.open(port))
    records: list[tuple[float, float, int]] = []
    failures = 0

    async def one(scheduled: float) -> None:
        nonlocal failures
        conn = await conns.get()
        try:
            status, raw = await conn.post(path, body)
        finally:
            conns.put_nowait(conn)
        if status != 200:
            failures += 1
            return
        records.append((scheduled, time.perf_counter(), int(json.loads(raw)["model_version"])))

    t0, tasks = time.perf_counter(), []
    for i in range(int(rate * seconds)):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    while not conns.empty():
        conns.get_nowait().close()
    latencies = [done - sent for sent, done, _ in records]
    return {**_summary(latencies), "rps": len(records) / elapsed, "failures": failures}, records


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


# -- server and registries -----------------------------------------------------------------------
@contextlib.contextmanager
def server(registry_args: list[str], port: int, log: Path) -> Iterator[None]:
    config = log.with_suffix(".yaml")  # settings travel as a config file, not environment
    config.write_text("registry: {poll_s: 1.0}\nserve: {memory_poll_s: 2.0}\n", encoding="utf-8")
    command = [sys.executable, "-m", "streamlearn", "serve", "--config", str(config)]
    command += ["--port", str(port), *registry_args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not _ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready; see {log}")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(20)


def _ready(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def swap_phase(
    port: int, registry: Registry, arts: list[Artifact], payload: tuple[str, bytes], args: Any
) -> dict:
    """Paced load while publishing; publish→first-response time per version."""
    published: list[tuple[int, float]] = []

    async def publisher() -> None:
        await asyncio.sleep(args.swap_every)
        for art in arts:
            version = await asyncio.to_thread(registry.publish, art)
            published.append((version, time.perf_counter()))
            await asyncio.sleep(args.swap_every)

    seconds = args.swap_every * (len(arts) + 1.5)
    (stats, records), _ = await asyncio.gather(
        paced(port, *payload, args.rate, seconds), publisher()
    )
    to_serve, during = [], []
    for version, at in published:
        first = min((done for _, done, v in records if v == version), default=None)
        to_serve.append(None if first is None else first - at)
        during += [done - sent for sent, done, _ in records if at <= sent < at + 0.25]
    served = {v for _, _, v in records}
    ok = [t for t in to_serve if t is not None]
    return {
        "load": stats,
        "during_swaps": _summary(during) if during else None,
        "versions_published": len(published),
        "versions_seen_in_responses": len(served & {v for v, _ in published}),
        "unknown_versions": sorted(served - {v for v, _ in published} - {1}),
        "publish_to_serve_ms": {
            "median": float(np.median(ok) * 1e3) if ok else None,
            "max": float(max(ok) * 1e3) if ok else None,
            "never": to_serve.count(None),
        },
    }


async def run(args: argparse.Namespace) -> dict:
    preq, rows = train_model(args.events)
    row = rows[0]
    loads = payloads(preq, row)
    arts = artifacts(preq, args.swaps + 1)
    results: dict[str, Any] = {"floor": floor(preq, row), "closed": {}, "paced": {}, "swaps": {}}
    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    fs = FilesystemRegistry(work / "registry")
    fs.publish(arts[0])
    fs.push_memory(encode_memory(preq.memory, 1))
    with server(["--registry", str(work / "registry")], args.port, work / "server.log"):
        for name, (path, body) in loads.items():
            results["closed"][name] = await closed_loop(
                args.port, path, body, args.concurrency, args.seconds
            )
            results["paced"][name], _ = await paced(args.port, path, body, args.rate, args.seconds)
        results["swaps"]["filesystem"] = await swap_phase(
            args.port, fs, arts[1:], loads["v1"], args
        )
    from serving_support import redis_binary, redis_server  # tests/serving_support.py

    if redis_binary() and not args.no_redis:
        with redis_server(work) as url:
            redis = RedisRegistry(url)
            redis.publish(arts[0])
            with server(["--redis", url], args.port + 1, work / "server-redis.log"):
                results["swaps"]["redis"] = await swap_phase(
                    args.port + 1, redis, arts[1:], loads["v1"], args
                )
            redis.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=6000, help="training events before export")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="paced requests/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="per closed/paced phase")
    parser.add_argument("--swaps", type=int, default=20, help="versions published under load")
    parser.add_argument("--swap-every", type=float, default=0.5, help="seconds between publishes")
    parser.add_argument("--port", type=int, default=18_480)
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis swap phase")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    import onnxruntime
    import uvicorn

    data: dict[str, Any] = {
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "load_average": load_average(),
        "versions": {"onnxruntime": onnxruntime.__version__, "uvicorn": uvicorn.__version__},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    data["results"] = r = asyncio.run(run(args))
    swaps = r["swaps"].values()
    worst = [s["publish_to_serve_ms"]["max"] for s in swaps]
    data["targets"] = {
        "p99_v1_ms": r["paced"]["v1"]["p99_ms"],
        "p99_v2_ms": r["paced"]["v2"]["p99_ms"],
        "p99_met": max(r["paced"]["v1"]["p99_ms"], r["paced"]["v2"]["p99_ms"]) < TARGET_P99_MS
        and min(r["paced"]["v1"]["rps"], r["paced"]["v2"]["rps"]) >= 0.97 * TARGET_RATE,
        "publish_to_serve_max_ms": max((w for w in worst if w is not None), default=None),
        "publish_met": all(w is not None and w < TARGET_PUBLISH_S * 1e3 for w in worst)
        and all(s["publish_to_serve_ms"]["never"] == 0 for s in swaps),
        "no_failures": all(s["load"]["failures"] == 0 and not s["unknown_versions"] for s in swaps),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.md").write_text(render(data), encoding="utf-8")
    write_json(args.out / "serving.json", data)
    print(render(data))


if __name__ == "__main__":
    main()
