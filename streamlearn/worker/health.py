"""The worker's liveness and readiness, served with its metrics (``/livez``, ``/readyz``).

A hung consumer loop must be restarted: nothing else notices it, since Kafka keeps the member
in the group while its client threads heartbeat. So the loop beats once per turn
(:meth:`Heartbeat.beat`), and ``/livez`` answers 503 once the last beat is older than
``worker.liveness_timeout_s`` (longer than any wait the loop makes on purpose: the back-off cap
is validated to be shorter). Before the loop starts (restoring, connecting through an outage)
the process counts as alive; a start-up probe in the chart bounds that phase. ``/readyz``
answers 200 once the checkpoint is restored and at least one partition is assigned.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, WSGIRequestHandler

__all__ = ["Heartbeat", "serve_metrics_and_health"]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Heartbeat:
    """What ``/livez`` and ``/readyz`` read: the loop's last beat, restore, assignment."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._last: float | None = None  # None until the loop's first turn
        self.restored = False
        self.partitions = 0

    def beat(self) -> None:
        """The loop completed a turn (called once per ``Worker.step``)."""
        self._last = self._clock()

    def live(self) -> tuple[bool, str]:
        """(alive, why): alive until the loop has gone ``timeout_s`` without a turn."""
        if self._last is None:
            return True, "starting: restoring or connecting"
        age = self._clock() - self._last
        if age > self.timeout_s:
            return False, f"the loop has made no turn for {age:.1f} s (limit {self.timeout_s:g} s)"
        return True, f"last turn {age:.1f} s ago"

    def ready(self) -> tuple[bool, str]:
        """(ready, why): restored and at least one partition assigned."""
        if not self.restored:
            return False, "restoring the checkpoint"
        if self.partitions == 0:
            return False, "no partition assigned"
        return True, f"{self.partitions} partition(s) assigned"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line."""


def serve_metrics_and_health(
    host: str, port: int, registry: CollectorRegistry, heartbeat: Heartbeat
) -> WSGIServer:
    """``/metrics`` (anything but the two probes), ``/livez`` and ``/readyz`` on ``host:port``
    from a daemon thread; OSError when the port cannot be listened on."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        probe = {"/livez": heartbeat.live, "/readyz": heartbeat.ready}.get(environ["PATH_INFO"])
        if probe is None:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        ok, why = probe()
        body = json.dumps({"ok": ok, "reason": why}).encode()
        status = "200 OK" if ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [body]

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
