"""The full embedded loop behind ``streamlearn demo --serve``: learn, publish, serve — one process.

A worker-like loop streams the configured source through the prequential learner and the
:class:`~streamlearn.worker.publisher.Publisher` (filesystem registry, no Kafka or Redis),
while uvicorn serves the published models from a background thread, hot-swapping each new
version. When the stream ends the server keeps answering until Ctrl-C (or ``stop`` is set).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import uvicorn

from streamlearn.app import build_prequential, build_publisher, build_server, build_source
from streamlearn.events import Event
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.serve.limits import uvicorn_options
from streamlearn.settings import Settings

__all__ = ["BackgroundServer", "LiveDemoReport", "run_live_demo"]


@dataclass
class LiveDemoReport:
    url: str = ""
    events: int = 0
    published: list[int] = field(default_factory=list)
    gated: int = 0
    drifts: list[int] = field(default_factory=list)


class BackgroundServer:
    """uvicorn serving ``app`` from a daemon thread (the demo, tests and benchmarks use it);
    ``options`` go to ``uvicorn.Config`` (``serve.limits.uvicorn_options``: the head limits)."""

    def __init__(self, app: object, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise OSError(f"the server could not start on {host}:{port}")
            time.sleep(0.02)
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        self.url = f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def run_live_demo(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
    linger: bool = True,
) -> LiveDemoReport:
    """Train on the stream while serving; returns when the stream ends and ``stop`` is set."""
    out = out or sys.stdout
    stop = stop or threading.Event()
    registry = FilesystemRegistry(settings.registry.path, keep=settings.registry.keep)
    app, runtime = build_server(settings, registry)
    srv = settings.serve
    server = BackgroundServer(app, srv.host, srv.port, **uvicorn_options(srv, runtime.metrics))
    report = LiveDemoReport(url=server.url)
    preq, publisher = build_prequential(settings), build_publisher(settings, registry)
    example: dict[str, object] | None = None
    print(f"serving on {report.url} (registry {settings.registry.path})", file=out, flush=True)
    try:
        for step, batch in enumerate(build_source(settings).batches(settings.source.batch_size)):
            events = [e for e in batch if isinstance(e, Event)]
            if not events:
                continue
            preq.process([e.x for e in events], [e.y for e in events])
            result = publisher.after_batch(preq, step)
            if result.published:
                report.published.append(result.version or 0)
                print(
                    f"published version {result.version} at event {preq.seen:,} "
                    f"({result.trigger}, loss {result.candidate_loss:.4f})",
                    file=out,
                    flush=True,
                )
            if example is None and report.published:
                example = {
                    k: round(v, 2) if isinstance(v, float) else v for k, v in events[0].x.items()
                }
                _print_usage(report.url, srv.model_name, example, out)
            if stop.is_set():
                break
        final = publisher.maybe_publish(preq, 1 << 62, force=True)
        if final.published:
            report.published.append(final.version or 0)
        publisher.push_memory(preq, force=True)
        report.events, report.gated, report.drifts = preq.seen, publisher.gated, list(preq.drifts)
        print(
            f"stream done: {preq.seen:,} events learned, versions {report.published}, "
            f"{publisher.gated} gated, drifts at {report.drifts or 'none'}",
            file=out,
            flush=True,
        )
        if linger:
            print(f"still serving on {report.url}; Ctrl-C to stop", file=out, flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        server.stop()
        registry.close()
    return report


def _print_usage(url: str, name: str, example: dict[str, object], out: TextIO) -> None:
    body = json.dumps({"instances": [example]})
    print(
        "try:\n"
        f"  curl -s {url}/v2/health/ready\n"
        f"  curl -s -X POST {url}/v1/models/{name}:predict -H 'content-type: application/json' "
        f"-d '{body}'\n"
        f"  curl -s {url}/metrics | grep streamlearn_serve",
        file=out,
        flush=True,
    )
