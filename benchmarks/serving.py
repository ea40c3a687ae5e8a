"""Serving benchmark: latency, throughput and CPU of HTTP v1/v2 and gRPC; hot swaps under load.

The server runs as a real ``streamlearn serve`` subprocess (``--processes``, HTTP and the KServe
v2 gRPC port, as deployed) on loopback; the load generators run in this process: keep-alive
HTTP/1.1 connections as bare asyncio protocols (no task per request) and ``grpc.aio`` channels
sending ModelInfer with ``raw_input_contents``, each call on the channel with the fewest in
flight. The kernel gives each TCP connection (one per gRPC channel) to one server process, so
connections are opened until every process holds its share (:func:`balanced`), as many
clients' connections would spread. One-row requests throughout (online serving). Phases:

1. in-process — per call, no network: onnxruntime alone, the v1 model path (encode +
   onnxruntime + error-memory compensation), the whole ASGI app for v1 and v2, and the gRPC
   ModelInfer handler: what a server process spends on a request outside its HTTP or gRPC
   stack;
2. closed loop — ``--concurrency`` requests in flight back to back, v1, v2 and gRPC:
   requests/s and p50/p99 latency;
3. paced — an open-loop schedule at ``--rate`` requests/s, v1, v2 and gRPC; latency is
   measured from the scheduled send time, so queueing (in the server, or for a free connection
   in the client) is not hidden;
4. stack — paced at ``--rate`` with each server's cheapest request (GET /v2/health/live,
   gRPC ServerLive): what the HTTP and the gRPC stack cost alone, per request;
5. sweep — paced v2 and gRPC at each of ``--sweep`` rates: p99 against the offered rate;
6. swaps — paced load at ``--rate`` in all (HTTP v1 and gRPC, ``--swap-grpc-share`` of it on
   gRPC) while a new version is published every ``--swap-every`` seconds: failures, latency
   after each publish, and the time from publish to the first response by the new version
   (filesystem registry, and Redis when a redis-server is found).

Every load run also records what it cost: this process's CPU per request (the client's,
``time.process_time``, grpc's threads included), the server processes' CPU per request (from
/proc), how busy the whole machine was and how much of that was other programs, and how late
the generator issued its requests.

Writes <out>/serving.md, <out>/serving.json and <out>/serving-sweep.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import numpy as np
from report import command_line, load_average, machine_info, write_json
from serving_report import (
    TARGET_P99_MS,
    TARGET_RATE,
    render,
    shared,
    targets,
    write_sweep_plot,
)

from streamlearn.core.prequential import Prequential
from streamlearn.events import Event
from streamlearn.export.artifact import Artifact, load_bundle
from streamlearn.export.memory import decode_memory, encode_memory
from streamlearn.export.onnx import export_prequential
from streamlearn.registry.base import Registry
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.registry.redis import RedisRegistry
from streamlearn.serve.grpc_protocol import ModelInferRequest, ModelInferResponse
from streamlearn.settings import load_settings
from streamlearn.sources.synthetic import SyntheticSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
NO_ANSWER_S = 30.0  # a request unanswered this long after the schedule ends is a failure
_VERSION = re.compile(rb'"model_version":\s*"?(\d+)')
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_C = TypeVar("_C")  # a connection: an HTTP protocol or a gRPC channel
_IDS = itertools.count()


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
        out.append(export_prequential(preq))
    return out


def payloads(preq: Prequential, row: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """Per transport, (HTTP path or gRPC method, request body) of one row."""
    feats = preq.encoder.encode([row])
    num, cat = preq.encoder.standardize(feats.num).astype("<f4"), feats.cat.astype("<i8")
    tensors = (("num", num, "FP32"), ("cat", cat, "INT64"))
    v2 = {
        "inputs": [
            {"name": n, "shape": list(a.shape), "datatype": t, "data": a.ravel().tolist()}
            for n, a, t in tensors
        ],
        "outputs": [{"name": "prediction"}],
    }
    request = ModelInferRequest(model_name="streamlearn")
    for name, array, datatype in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(array.tobytes())
    request.outputs.add(name="prediction")
    return {
        "v1": ("/v1/models/streamlearn:predict", json.dumps({"instances": [row]}).encode()),
        "v2": ("/v2/models/streamlearn/infer", json.dumps(v2).encode()),
        "grpc": (GRPC_INFER, request.SerializeToString()),
        # the cheapest request of each server: what its HTTP or gRPC stack costs alone
        "http-live": ("/v2/health/live", b""),
        "grpc-live": ("/inference.GRPCInferenceService/ServerLive", b""),
    }


async def in_process(
    preq: Prequential, row: dict[str, Any], registry: Path, loads: dict[str, tuple[str, bytes]],
    n: int,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per-call time without a network, of what a server process runs per request:
    onnxruntime alone, the v1 model path (encode + onnxruntime + error memory), the whole ASGI
    app (Starlette, the limits middleware, handler, JSON, metrics) for v1 and v2, and the gRPC
    ModelInfer handler (deserialize, checks, inference, response, serialize, metrics)."""
    from prometheus_client import CollectorRegistry

    from streamlearn.app import build_server
    from streamlearn.serve import grpc_server

    art = export_prequential(preq).with_version(1)
    bundle = load_bundle(1, art.onnx, art.meta_bytes())
    memory = decode_memory(encode_memory(preq.memory, 1)).error_memory
    num, cat = bundle.encode([row])

    def v1_path() -> None:
        z, c = bundle.encode([row])
        pred, hidden = bundle.run(z, c)
        memory.compensate(hidden, pred)

    settings = load_settings(registry={"path": str(registry)})
    fs = FilesystemRegistry(registry)
    app, runtime = build_server(settings, fs, CollectorRegistry(), watch=False)
    runtime.refresh_model()
    runtime.refresh_memory()
    # the service's ModelInfer handler as grpcio calls it (a private function: no public way
    # to reach a handler without grpcio's core in between)
    service = grpc_server._service(runtime, settings.serve)
    infer = service.service(_Details(GRPC_INFER))
    assert infer is not None

    def grpc_handler() -> None:
        request = infer.request_deserializer(loads["grpc"][1])
        infer.response_serializer(infer.unary_unary(request, None))

    def timed(fn: Any) -> dict[str, Any]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return _summary(times)

    async def asgi_timed(path: str, body: bytes) -> dict[str, Any]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            await _asgi(app, path, body)
            times.append(time.perf_counter() - start)
        return _summary(times)

    try:
        return {
            "onnxruntime.run": timed(lambda: bundle.run(num, cat)),
            "v1 path": timed(v1_path),
            "ASGI app v1": await asgi_timed(*loads["v1"]),
            "ASGI app v2": await asgi_timed(*loads["v2"]),
            "gRPC handler": timed(grpc_handler),
        }
    finally:
        fs.close()


@dataclass
class _Details:
    """What grpcio tells a generic handler about a call."""

    method: str
    invocation_metadata: tuple[()] = ()


async def _asgi(app: Any, path: str, body: bytes) -> None:
    """One POST through the ASGI app, as uvicorn would deliver it."""
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }  # fmt: skip
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    assert status == [200], status


# -- load generators -----------------------------------------------------------------------------
@dataclass
class Run:
    """What one load run recorded: (scheduled, answered, model version) per answered request,
    failures by reason, and how late the generator issued requests (s, one per wake-up)."""

    records: list[tuple[float, float, int]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    late: list[float] = field(default_factory=list)


class Load(Protocol):
    """A load generator: ``submit(t)`` sends a request scheduled at ``t`` (perf_counter) now or
    as soon as it can; ``closed_until`` > now makes each answer send the next at once."""

    run: Run
    closed_until: float

    def submit(self, scheduled: float) -> None: ...
    async def drained(self, timeout: float) -> None: ...
    async def close(self) -> None: ...


class _Outstanding:
    """Counts requests in flight; :meth:`drained` waits for none (the rest fail)."""

    def __init__(self) -> None:
        self.run, self.closed_until, self.outstanding = Run(), 0.0, 0
        self._idle: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """A task, referenced until it ends (the loop holds tasks weakly)."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finished(self) -> None:
        self.outstanding -= 1
        if not self.outstanding and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def drained(self, timeout: float) -> None:
        if self.outstanding:
            self._idle = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._idle, timeout)
            except TimeoutError:
                self.run.errors[f"no answer within {timeout:g} s"] += self.outstanding


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection of an :class:`HttpLoad`: one request at a time."""

    def __init__(self, load: HttpLoad) -> None:
        self.load, self.buffer = load, bytearray()
        self.transport: asyncio.Transport | None = None
        self.scheduled: float | None = None
        self.dropped = False  # closed on purpose before any use

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            length = _LENGTH.search(buffer, 0, end + 2)
            size = end + 4 + (int(length[1]) if length else 0)
            if len(buffer) < size:
                return
            status, body = int(buffer[9:12]), bytes(buffer[end + 4 : size])
            del buffer[:size]
            scheduled, self.scheduled = self.scheduled, None
            if scheduled is not None:
                self.load.answered(self, scheduled, status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.dropped:
            self.load.lost(self, self.scheduled is not None)

    async def drop(self) -> None:
        assert self.transport is not None
        self.dropped = True
        self.transport.close()


class HttpLoad(_Outstanding):
    """``connections`` keep-alive HTTP/1.1 connections posting one request body: a request goes
    out on the next free connection, or waits for one in a FIFO (the wait counts in its
    latency). Event-driven (protocol callbacks), so a request costs no task."""

    def __init__(self, port: int, path: str, body: bytes, connections: int) -> None:
        super().__init__()
        head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        self.request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        if not body:  # nothing to post: a GET
            self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        self.port, self.size, self.closing = port, connections, False
        self.free: deque[_HttpConnection] = deque()
        self.backlog: deque[float] = deque()
        self.spread: list[int] = []

    async def open(self, srv: Server) -> HttpLoad:
        drop = _HttpConnection.drop
        conns, self.spread = await balanced(self._connect, drop, srv, self.port, self.size)
        self.free.extend(conns)
        return self

    async def _connect(self) -> _HttpConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: _HttpConnection(self), "127.0.0.1", self.port
        )
        return conn

    def submit(self, scheduled: float) -> None:
        self.outstanding += 1
        if self.free:
            self.free.popleft().send(scheduled)
        else:
            self.backlog.append(scheduled)

    def answered(self, conn: _HttpConnection, scheduled: float, status: int, body: bytes) -> None:
        now = time.perf_counter()
        if status == 200:
            version = _VERSION.search(body)
            self.run.records.append((scheduled, now, int(version[1]) if version else 0))
        else:
            self.run.errors[f"HTTP {status}"] += 1
        self._finished()
        self._give(conn, now)

    def _give(self, conn: _HttpConnection, now: float) -> None:
        """A connection free again: the next closed-loop request, the oldest waiting one, or
        back to the pool."""
        if now < self.closed_until:
            self.outstanding += 1
            conn.send(now)
        elif self.backlog:
            conn.send(self.backlog.popleft())
        else:
            self.free.append(conn)

    def lost(self, conn: _HttpConnection, busy: bool) -> None:
        with contextlib.suppress(ValueError):
            self.free.remove(conn)
        if busy:
            self.run.errors["connection lost"] += 1
            self._finished()
        if not self.closing:
            self._spawn(self._replace())

    async def _replace(self) -> None:
        self._give(await self._connect(), time.perf_counter())

    async def close(self) -> None:
        self.closing = True
        for conn in self.free:
            assert conn.transport is not None
            conn.transport.close()
        await asyncio.sleep(0)


class GrpcLoad(_Outstanding):
    """``channels`` grpc.aio channels, each its own TCP connection, sending one serialized
    ModelInferRequest (no serializer: the bytes go as they are); a request goes on the channel
    with the fewest calls in flight (ties in turn)."""

    def __init__(self, port: int, method: str, payload: bytes, channels: int) -> None:
        super().__init__()
        self.port, self.method, self.payload, self.size = port, method, payload, channels
        self.channels: list[Any] = []
        self.calls: list[Any] = []
        self.in_flight: list[int] = []
        self.spread: list[int] = []
        self._turn = 0

    async def open(self, srv: Server) -> GrpcLoad:
        self.channels, self.spread = await balanced(
            self._connect, lambda channel: channel.close(), srv, self.port, self.size
        )
        self.calls = [channel.unary_unary(self.method) for channel in self.channels]
        self.in_flight = [0] * len(self.calls)
        return self

    async def _connect(self) -> Any:
        # a distinct option: a connection of its own, not one shared by equal channels
        options = [("grpc.use_local_subchannel_pool", 1), ("streamlearn.bench", next(_IDS))]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options)
        await channel.channel_ready()
        return channel

    def submit(self, scheduled: float) -> None:
        n, flight = len(self.calls), self.in_flight
        best = turn = self._turn
        self._turn = (turn + 1) % n
        for k in range(1, n):
            if flight[(turn + k) % n] < flight[best]:
                best = (turn + k) % n
        self.outstanding += 1
        flight[best] += 1
        self._spawn(self._call(best, scheduled))

    async def _call(self, channel: int, scheduled: float) -> None:
        try:
            raw = await self.calls[channel](self.payload, timeout=NO_ANSWER_S)
        except grpc.aio.AioRpcError as exc:
            self.run.errors[f"gRPC {exc.code().name}"] += 1
        else:
            now = time.perf_counter()
            infer = self.method == GRPC_INFER
            version = ModelInferResponse.FromString(raw).model_version if infer else ""
            self.run.records.append((scheduled, now, int(version or 0)))
        finally:
            self.in_flight[channel] -= 1
            self._finished()
        if (now := time.perf_counter()) < self.closed_until:
            self.submit(now)

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels))


async def open_load(
    transport: str, srv: Server, payload: tuple[str, bytes], args: argparse.Namespace
) -> HttpLoad | GrpcLoad:
    """An opened :class:`HttpLoad` (``--connections``) or :class:`GrpcLoad` (``--channels``)."""
    if transport.startswith("grpc"):
        return await GrpcLoad(srv.grpc_port, *payload, args.channels).open(srv)
    return await HttpLoad(srv.port, *payload, args.connections).open(srv)


async def balanced(
    connect: Callable[[], Awaitable[_C]],
    drop: Callable[[_C], Awaitable[None]],
    srv: Server,
    port: int,
    count: int,
) -> tuple[list[_C], list[int]]:
    """``count`` connections to ``port``, spread evenly over the server processes, and how
    many each process holds. The kernel gives each connection to one process by a hash of its
    addresses: many clients' connections spread evenly, a few by chance (8 gRPC channels can
    land 6/2, and one process then gets three quarters of the load). So connections are opened
    one at a time, each kept while its process holds less than its share; the rest are
    closed (if the processes cannot be told apart, the first ``count`` are kept)."""
    procs = srv.serving_pids
    share = -(-count // len(procs))
    held = dict.fromkeys(procs, 0)
    kept: list[_C] = []
    spare: list[tuple[_C, int | None]] = []
    for _ in range(8 * count):
        if len(kept) == count:
            break
        before = connections(procs, port)
        conn = await connect()
        new: list[int] = []
        for _ in range(100):  # the process accepts it a moment after the handshake
            after = connections(procs, port)
            new = [pid for pid in procs if after[pid] > before[pid]]
            if new:
                break
            await asyncio.sleep(0.002)
        where = new[0] if len(new) == 1 else None
        if where is not None and held[where] < share:
            held[where] += 1
            kept.append(conn)
        else:
            spare.append((conn, where))
    while len(kept) < count and spare:  # could not balance: take what there is
        conn, where = spare.pop(0)
        kept.append(conn)
        if where is not None:
            held[where] += 1
    for conn, _ in spare:
        await drop(conn)
    return kept, sorted(held.values(), reverse=True)


async def schedule(load: Load, rate: float, seconds: float) -> None:
    """Open loop: ``rate × seconds`` requests at evenly spaced times; each wake-up sends all
    that are due (how late the first of them is goes to ``load.run.late``)."""
    n, start, sent = int(rate * seconds), time.perf_counter(), 0
    while sent < n:
        now = time.perf_counter()
        due = min(n, int((now - start) * rate) + 1)
        if due > sent:
            load.run.late.append(now - (start + sent / rate))
        while sent < due:
            load.submit(start + sent / rate)
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))


async def closed(load: Load, concurrency: int, seconds: float) -> None:
    """Closed loop: ``concurrency`` requests in flight, each answer sending the next."""
    now = time.perf_counter()
    load.closed_until = now + seconds
    for _ in range(concurrency):
        load.submit(now)
    await asyncio.sleep(seconds)


# -- what a run cost -----------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def server_pids(root: int) -> list[int]:
    """``root`` and its children (the server processes ``streamlearn serve`` forks)."""
    pids = [root]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == root:
                pids.append(int(stat.parent.name))
    return pids


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of ``pids`` (all their threads)."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    return user / _TICK, system / _TICK


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


async def measured(load: Load, drive: Awaitable[None], pids: list[int]) -> dict[str, Any]:
    """Runs ``drive`` and waits for every answer; the summary of ``load.run`` with what it
    cost (requests/s: answered ones over the time until the last answer), and what other
    programs took meanwhile: on average, and at their peak over half a second (a burst that
    short is enough to spoil a p99). The client's collector is off meanwhile (its pauses would
    show as latency)."""
    cpu, (user, system), (busy, total) = time.process_time(), _cpu_seconds(pids), _machine_ticks()
    start = time.perf_counter()
    samples: list[tuple[float, float]] = []  # (time, other programs' CPU seconds so far)
    sampler = asyncio.ensure_future(_sample_others(pids, samples))
    gc.disable()
    try:
        await drive
        await load.drained(NO_ANSWER_S)
    finally:
        gc.enable()
        sampler.cancel()
    elapsed = time.perf_counter() - start
    cpu, (user_after, system_after) = time.process_time() - cpu, _cpu_seconds(pids)
    user, system = user_after - user, system_after - system
    server = user + system
    busy_after, total_after = _machine_ticks()
    run = load.run
    n = len(run.records) + sum(run.errors.values())
    per = 1e6 / max(n, 1)
    stats = _summary([done - sent for sent, done, _ in run.records])
    return {
        **stats,
        "rps": len(run.records) / elapsed,
        "failures": sum(run.errors.values()),
        "errors": dict(run.errors),
        "client_cpu_us": cpu * per,
        "server_cpu_us": server * per,
        "server_system_us": system * per,  # of which in the kernel (sockets, scheduling)
        "machine_busy": (busy_after - busy) / max(total_after - total, 1),
        # cores kept busy by other programs meanwhile (other work on a shared machine)
        "other_cores": max(0.0, ((busy_after - busy) / _TICK - cpu - server) / elapsed),
        "other_peak_cores": _peak(samples, 0.5),
        "generator_late_p99_ms": float(np.percentile(run.late, 99) * 1e3) if run.late else None,
    }


async def _sample_others(pids: list[int], samples: list[tuple[float, float]]) -> None:
    """Every 0.1 s: the CPU seconds the machine spent on other programs than ``pids`` and
    this one, so far."""
    while True:
        ours = time.process_time() + sum(_cpu_seconds(pids))
        samples.append((time.perf_counter(), _machine_ticks()[0] / _TICK - ours))
        await asyncio.sleep(0.1)


def _peak(samples: list[tuple[float, float]], window: float) -> float | None:
    """The most cores the samples' CPU seconds grew by over any ``window`` s."""
    peak, j = None, 0
    for i, (t, cpu) in enumerate(samples):
        while j < i and t - samples[j + 1][0] >= window:
            j += 1
        if t - samples[j][0] >= window:
            rate = (cpu - samples[j][1]) / (t - samples[j][0])
            peak = rate if peak is None else max(peak, rate)
    return None if peak is None else max(0.0, peak)


def _summary(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0, "mean_ms": None, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = np.asarray(seconds) * 1e3
    return {
        "n": len(ms),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def connections(pids: list[int], port: int) -> dict[int, int]:
    """How many established connections to ``port`` each of ``pids`` holds."""
    inodes: dict[str, int] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes[cols[9]] = 0
    counts = dict.fromkeys(pids, 0)
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    counts[pid] += link.startswith("socket:[") and link[8:-1] in inodes
    return counts


# -- server and registries -----------------------------------------------------------------------
@dataclass
class Server:
    """A running ``streamlearn serve``: its ports and its processes."""

    port: int
    grpc_port: int
    pids: list[int]

    @property
    def serving_pids(self) -> list[int]:
        """The processes that answer: the children, or the one process if it has none."""
        return self.pids[1:] or self.pids

    @property
    def processes(self) -> int:
        return len(self.serving_pids)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(registry_args: list[str], processes: int, log: Path) -> Iterator[Server]:
    """``streamlearn serve`` with ``processes`` processes on free HTTP and gRPC ports."""
    port, grpc_port = free_port(), free_port()
    config = log.with_suffix(".yaml")  # settings travel as a config file, not environment
    config.write_text(
        f"registry: {{poll_s: 1.0}}\nserve: {{memory_poll_s: 2.0, grpc_port: {grpc_port}}}\n",
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "streamlearn", "serve", "--config", str(config)]
    command += ["--port", str(port), "--processes", str(processes), *registry_args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not _ready(port, grpc_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready; see {log}")
            time.sleep(0.1)
        time.sleep(1.0)  # every process ready, not just the first that answered
        yield Server(port, grpc_port, server_pids(proc.pid))
    finally:
        proc.terminate()
        proc.wait(30)


def _ready(port: int, grpc_port: int) -> bool:
    import httpx

    try:
        ready = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
    except httpx.HTTPError:
        return False
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", grpc_port), 1):
        return ready.status_code == 200
    return False


async def steady(
    srv: Server,
    transport: str,
    payload: tuple[str, bytes],
    drive: Callable[[Load, float], Awaitable[None]],
    seconds: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """``drive`` for a warm-up (``--warmup`` s, not kept), then for ``seconds``: the summary.
    Each attempt first waits for a quiet machine (``--quiet-wait``), and a run that other
    programs shared (:func:`serving_report.shared`) is repeated (``--retries``); the summary
    says how many attempts it took and how long it waited."""
    load = await open_load(transport, srv, payload, args)
    try:
        for attempt in range(1, args.retries + 2):
            waited = await quiet(args.quiet_wait)
            load.run = Run()
            await measured(load, drive(load, args.warmup), srv.pids)
            load.run = Run()
            stats = await measured(load, drive(load, seconds), srv.pids)
            stats |= {"attempts": attempt, "quiet_wait_s": waited, "spread": load.spread}
            if not shared(stats):
                break
        return stats
    finally:
        await load.close()


def paced(rate: float) -> Callable[[Load, float], Awaitable[None]]:
    return lambda load, seconds: schedule(load, rate, seconds)


def closed_loop(concurrency: int) -> Callable[[Load, float], Awaitable[None]]:
    return lambda load, seconds: closed(load, concurrency, seconds)


async def quiet(max_wait: float, busy: float = 0.1) -> float:
    """Waits, at most ``max_wait`` s, for a second in which the machine was less than ``busy``
    busy (this benchmark's processes idle, so the rest is other programs); the time waited."""
    start, waited = time.perf_counter(), 0.0
    while waited < max_wait:
        before = _machine_ticks()
        await asyncio.sleep(1.0)
        after = _machine_ticks()
        waited = time.perf_counter() - start
        if after[0] - before[0] < busy * (after[1] - before[1]):
            break
    return waited


async def swap_phase(
    srv: Server,
    registry: Registry,
    arts: list[Artifact],
    loads: dict[str, tuple[str, bytes]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Paced v1 and gRPC load (``--rate`` in all) while publishing; publish→first response."""
    published: list[tuple[int, float]] = []

    async def publisher() -> None:
        await asyncio.sleep(args.swap_every)
        for art in arts:
            version = await asyncio.to_thread(registry.publish, art)
            published.append((version, time.perf_counter()))
            await asyncio.sleep(args.swap_every)

    seconds = args.swap_every * (len(arts) + 1.5)
    rates = {"v1": args.rate * (1 - args.swap_grpc_share), "grpc": args.rate * args.swap_grpc_share}
    rates = {t: r for t, r in rates.items() if r > 0}
    gens = {t: await open_load(t, srv, loads[t], args) for t in rates}
    waited = await quiet(args.quiet_wait)
    try:
        warm = [measured(g, schedule(g, rates[t], args.warmup), srv.pids) for t, g in gens.items()]
        await asyncio.gather(*warm)  # not kept
        for gen in gens.values():
            gen.run = Run()
        runs = [measured(g, schedule(g, rates[t], seconds), srv.pids) for t, g in gens.items()]
        *stats, _ = await asyncio.gather(*runs, publisher())
    finally:
        for gen in gens.values():
            await gen.close()
    records = [r for gen in gens.values() for r in gen.run.records]
    to_serve, during = [], []
    for version, at in published:
        first = min((done for _, done, v in records if v == version), default=None)
        to_serve.append(None if first is None else first - at)
        during += [done - sent for sent, done, _ in records if at <= sent < at + 0.25]
    served = {v for _, _, v in records}
    ok = [t for t in to_serve if t is not None]
    return {
        "rates": rates,
        "quiet_wait_s": waited,
        "load": dict(zip(gens, stats, strict=True)),
        "overall": _summary([done - sent for sent, done, _ in records]),
        "failures": sum(s["failures"] for s in stats),
        "during_swaps": _summary(during),
        "versions_published": len(published),
        "versions_seen_in_responses": len(served & {v for v, _ in published}),
        "unknown_versions": sorted(served - {v for v, _ in published} - {1}),
        "publish_to_serve_ms": {
            "median": float(np.median(ok) * 1e3) if ok else None,
            "max": float(max(ok) * 1e3) if ok else None,
            "never": to_serve.count(None),
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    preq, rows = train_model(args.events)
    row = rows[0]
    loads = payloads(preq, row)
    arts = artifacts(preq, args.swaps + 1)
    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    fs = FilesystemRegistry(work / "registry")
    fs.publish(arts[0])
    fs.push_memory(encode_memory(preq.memory, 1))
    results: dict[str, Any] = {
        "in_process": await in_process(preq, row, work / "registry", loads, args.calls),
        "closed": {}, "paced": {}, "stack": {}, "sweep": {}, "swaps": {},
    }  # fmt: skip
    transports = ("v1", "v2", "grpc")
    with server(["--registry", str(work / "registry")], args.processes, work / "fs.log") as srv:
        results["server_processes"] = srv.processes
        for t in transports:
            results["closed"][t] = await steady(
                srv, t, loads[t], closed_loop(args.concurrency), args.seconds, args
            )
        for t in transports:
            results["paced"][t] = await steady(
                srv, t, loads[t], paced(args.rate), args.seconds, args
            )
        for t in ("http-live", "grpc-live"):
            results["stack"][t] = await steady(
                srv, t, loads[t], paced(args.rate), args.seconds, args
            )
        for t in ("v2", "grpc") if args.sweep else ():
            results["sweep"][t] = {
                str(float(rate)): await steady(
                    srv, t, loads[t], paced(rate), args.sweep_seconds, args
                )
                for rate in args.sweep
            }
        if args.swaps:
            results["swaps"]["filesystem"] = await swap_phase(srv, fs, arts[1:], loads, args)
    from serving_support import redis_binary, redis_server  # tests/serving_support.py

    if args.swaps and redis_binary() and not args.no_redis:
        with redis_server(work) as url:
            redis = RedisRegistry(url)
            redis.publish(arts[0])
            with server(["--redis", url], args.processes, work / "redis.log") as srv:
                results["swaps"]["redis"] = await swap_phase(srv, redis, arts[1:], loads, args)
            redis.close()
    return results


def _positive_rates(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("rates are positive")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--events", type=int, default=6000, help="training events before export")
    add("--processes", type=int, default=0, help="server processes (0: one per usable CPU)")
    add("--calls", type=int, default=5000, help="in-process calls timed per measurement")
    add("--rate", type=float, default=TARGET_RATE, help="paced requests/s (default: the target)")
    add("--seconds", type=float, default=8.0, help="per closed/paced phase")
    add("--warmup", type=float, default=1.0, help="seconds of load before each measured run")
    add("--concurrency", type=int, default=8, help="closed loop: requests in flight")
    add("--connections", type=int, default=32, help="HTTP keep-alive connections")
    add("--channels", type=int, default=8, help="gRPC channels (TCP connections)")
    add("--sweep", type=_positive_rates, nargs="*", default=[1000, 1500, 2000, 2500, 3000],
        help="rates of the sweep (v2 and gRPC; none: no sweep)")  # fmt: skip
    add("--sweep-seconds", type=float, default=3.0, help="per sweep point")
    add("--swaps", type=int, default=20, help="versions published under load (0: no swaps)")
    add("--swap-every", type=float, default=0.5, help="seconds between publishes")
    add("--swap-grpc-share", type=float, default=0.5, help="share of the swap load on gRPC")
    add("--quiet-wait", type=float, default=60.0,
        help="before each run, wait up to this long for a quiet machine (s)")  # fmt: skip
    add("--retries", type=int, default=3,
        help="repeat a run during which other programs were busy, this many times")  # fmt: skip
    add("--no-redis", action="store_true", help="skip the Redis swap phase")
    add("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add("--render", type=Path, metavar="JSON", help="only write the report of a run's JSON")
    add("--note", action="append", default=[], help="a line for the report's notes (repeat)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.render:  # the report again from a run's JSON, next to it
        write_report(json.loads(args.render.read_text(encoding="utf-8")), args.render.parent)
        return
    import onnxruntime
    import uvicorn

    data: dict[str, Any] = {
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": _commit(),
        "machine": machine_info(),
        "load_average": load_average(),
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "uvicorn": uvicorn.__version__,
            "grpcio": grpc.__version__,
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets_set": {"rate": TARGET_RATE, "p99_ms": TARGET_P99_MS},
        "notes": args.note,
    }
    data["results"] = asyncio.run(run(args))
    data["load_average_end"] = load_average()
    data["targets"] = targets(data)
    write_json(args.out / "serving.json", data)
    write_report(data, args.out)


def write_report(data: dict[str, Any], out: Path) -> None:
    """serving.md (printed too) and, with a sweep, serving-sweep.png."""
    out.mkdir(parents=True, exist_ok=True)
    if data["results"]["sweep"]:
        write_sweep_plot(data, out / "serving-sweep.png")
    (out / "serving.md").write_text(render(data), encoding="utf-8")
    print(render(data))


def _commit() -> str | None:
    """The checked-out commit, with ``+dirty`` when streamlearn/ differs from it."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: never rewrite the index
    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "streamlearn"], env=env)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty.returncode else "")


if __name__ == "__main__":
    main()
