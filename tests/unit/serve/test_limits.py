"""Server limits on a real uvicorn with the options `streamlearn serve` passes (loopback, one
event loop per test): requests beyond ``serve.max_in_flight`` get a 503 with Retry-After at
once, a stalled body, a stalled or oversized head are cut and counted, and an idle kept-alive
connection is closed after ``serve.keep_alive_s``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from serving_support import export, small_settings, trained

from streamlearn.app import build_server
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.serve.limits import uvicorn_options

V1 = "/v1/models/streamlearn:predict"
BODY = json.dumps({"instances": [{"a": 0.5, "color": "red"}]}).encode()
REJECTED = "streamlearn_serve_requests_rejected_total"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    registry = FilesystemRegistry(tmp_path_factory.mktemp("registry"))
    registry.publish(export(trained("binary", n=200)))
    return registry


@asynccontextmanager
async def _server(registry, **limits) -> AsyncIterator[tuple[int, CollectorRegistry]]:
    """uvicorn on a free port in this event loop, a model loaded; yields (port, metrics)."""
    settings = small_settings(serve=limits)
    metrics = CollectorRegistry()
    app, runtime = build_server(settings, registry, metrics, watch=False)
    assert runtime.refresh_model()
    options = uvicorn_options(settings.serve, runtime.metrics)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **options)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1], metrics
    finally:
        server.should_exit = True
        await task


async def _stalled_upload(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A v1 request whose head is complete and whose body stops after 10 of its bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {V1} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
    writer.write(f"{head}content-length: {len(BODY)}\r\n\r\n".encode() + BODY[:10])
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), within)


def test_requests_beyond_the_cap_are_answered_503_at_once(registry):
    async def main() -> None:
        async with _server(registry, max_in_flight=2, body_timeout_s=30) as (port, metrics):
            stalled = [await _stalled_upload(port) for _ in range(2)]  # both slots taken
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(20):  # the two uploads are being read once refusals start
                    busy = await client.post(V1, content=BODY, timeout=5)
                    if busy.status_code == 503:
                        break
                    await asyncio.sleep(0.02)
                start = time.monotonic()
                refused = [await client.post(V1, content=BODY, timeout=5) for _ in range(5)]
                assert time.monotonic() - start < 2.0  # answered, not queued
                for r in [busy, *refused]:
                    assert r.status_code == 503 and r.headers["retry-after"] == "1"
                    assert "serve.max_in_flight" in r.json()["error"]
                ready = await client.get("/v2/health/ready")  # probes are exempt
                assert ready.status_code == 200
                for reader, writer in stalled:  # the uploads finish and are answered
                    writer.write(BODY[10:])
                    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                    assert answer.startswith(b"HTTP/1.1 200")
                    writer.close()
                assert (await client.post(V1, content=BODY)).status_code == 200  # slots free
            assert metrics.get_sample_value(REJECTED, {"limit": "in_flight"}) == 6

    asyncio.run(main())


def test_a_stalled_upload_is_cut_after_the_body_timeout(registry):
    async def main() -> None:
        async with _server(registry, body_timeout_s=0.3) as (port, metrics):
            start = time.monotonic()
            reader, writer = await _stalled_upload(port)
            answer = await _answer(reader, 5)  # read to EOF: the server closed the connection
            assert 0.3 <= time.monotonic() - start < 3.0
            assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer
            assert b"request body not received within 0.3 s" in answer
            writer.close()
            assert metrics.get_sample_value(REJECTED, {"limit": "body_timeout"}) == 1
            requests = {"endpoint": "v1_predict", "code": "408"}
            assert metrics.get_sample_value("streamlearn_serve_requests_total", requests) == 1
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.post(V1, content=BODY)).status_code == 200

    asyncio.run(main())


def test_a_stalled_or_oversized_head_is_cut(registry):
    async def main() -> None:
        limits = {"header_timeout_s": 0.3, "max_header_bytes": 4096}
        async with _server(registry, **limits) as (port, metrics):
            half, w1 = await asyncio.open_connection("127.0.0.1", port)
            w1.write(f"POST {V1} HTTP/1.1\r\nhost: t\r\n".encode())  # and nothing more
            idle, w2 = await asyncio.open_connection("127.0.0.1", port)  # sends nothing at all
            big, w3 = await asyncio.open_connection("127.0.0.1", port)
            w3.write(f"GET /v2 HTTP/1.1\r\nx-pad: {'a' * 8000}".encode())
            assert (await _answer(big, 2)).startswith(b"HTTP/1.1 431")
            assert (await _answer(half, 3)).startswith(b"HTTP/1.1 408")
            assert await _answer(idle, 3) == b""  # closed without a word: no request began
            for writer in (w1, w2, w3):
                writer.close()
            assert metrics.get_sample_value(REJECTED, {"limit": "header_size"}) == 1
            assert metrics.get_sample_value(REJECTED, {"limit": "header_timeout"}) == 2

    asyncio.run(main())


def test_an_idle_kept_alive_connection_is_closed_after_keep_alive_s(registry):
    async def main() -> None:
        async with _server(registry, keep_alive_s=1, header_timeout_s=0.3) as (port, metrics):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await reader.readexactly(len(b'{"live":true}'))
            start = time.monotonic()
            assert await _answer(reader, 5) == b""
            assert 0.9 <= time.monotonic() - start < 3.0  # keep-alive's, not the head timeout
            writer.close()
            assert metrics.get_sample_value(REJECTED, {"limit": "header_timeout"}) == 0

    asyncio.run(main())
