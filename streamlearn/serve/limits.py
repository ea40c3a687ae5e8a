"""Server limits (``serve.*``): requests in flight, and how long and large a request may arrive.

uvicorn leaves gaps here. Its ``limit_concurrency`` counts open connections too (idle keep-alive
ones included), answers a bare 503 with no Retry-After, and nothing of it reaches our metrics;
it has no timeout for a request's head or body (a connection that sends half a head, or a body
that stalls, is held forever), and with httptools no limit on the head's size
(``h11_max_incomplete_event_size`` binds the h11 parser only). So:

- :class:`RequestLimits`, ASGI middleware: at most ``max_in_flight`` requests at once per
  process (health and ``/metrics`` exempt, so probes and scrapes still answer under load),
  beyond that a JSON 503 with ``Retry-After``; and a body must arrive within ``body_timeout_s``
  of its head, else the read raises :class:`BodyTimeout` (a 408) and the connection is closed.
- :func:`uvicorn_options`: uvicorn's httptools protocol with a head deadline
  (``header_timeout_s``, from the connection's opening or the request's first byte: 408, or a
  silent close if nothing came) and a head size limit (``max_header_bytes``, to within one
  socket read: 431), and ``keep_alive_s`` as uvicorn's keep-alive timeout.

Every cut is counted in ``streamlearn_serve_requests_rejected_total{limit}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streamlearn.metrics.serve import ServeMetrics
from streamlearn.serve.tensors import ApiError
from streamlearn.settings import ServeSettings

__all__ = ["BodyTimeout", "RequestLimits", "uvicorn_options"]

EXEMPT_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})  # probes, scrapes
RETRY_AFTER_S = 1


class BodyTimeout(ApiError):
    """The request body did not arrive in time: a 408, after which the connection is closed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"request body not received within {seconds:g} s")


class RequestLimits:
    """ASGI middleware: the in-flight cap and the body deadline (one event loop: no locks)."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.app = app
        self.max_in_flight, self.body_timeout_s = settings.max_in_flight, settings.body_timeout_s
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.metrics.observe_rejected("in_flight")
            await self._busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self._timed(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _busy(self, scope: Scope, receive: Receive, send: Send) -> None:
        """503 with Retry-After; the connection is closed if a body would follow unread."""
        headers = {"retry-after": str(RETRY_AFTER_S)}
        if any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"]):
            headers["connection"] = "close"
        message = f"server busy: {self.max_in_flight} requests in flight (serve.max_in_flight)"
        await JSONResponse({"error": message}, 503, headers)(scope, receive, send)

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with ``receive`` bound to the body deadline; after a timeout the answer
        carries ``connection: close`` (the rest of the body is never read)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        state = {"body_done": False, "timed_out": False}

        async def receive_in_time() -> Message:
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                state["timed_out"] = True
                self.metrics.observe_rejected("body_timeout")
                raise BodyTimeout(self.body_timeout_s) from None
            state["body_done"] = not message.get("more_body", False)
            return message

        async def send_closing(message: Message) -> None:
            if state["timed_out"] and message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive_in_time, send_closing)


class _GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on each request head."""

    header_timeout_s: float
    max_header_bytes: int
    metrics: ServeMetrics

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._begun = False  # a byte of the current head came
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._head_bytes, self._begun = 0, False
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._head_timer is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_timer is not None and self._head_bytes > self.max_header_bytes:
            self._cut("header_size", b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm()
        self._begun = True

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._cut("header_timeout", b"408 Request Timeout" if self._begun else b"")

    def _cut(self, limit: str, status: bytes) -> None:
        """Answer ``status`` (if any) and close: the head is not worth waiting for."""
        self._disarm()
        if self.transport.is_closing():
            return
        self.metrics.observe_rejected(limit)
        if status:
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
        self.transport.close()


def uvicorn_options(settings: ServeSettings, metrics: ServeMetrics) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` that apply the head limits and
    the keep-alive timeout of ``settings``."""
    limits = {
        "header_timeout_s": settings.header_timeout_s,
        "max_header_bytes": settings.max_header_bytes,
        "metrics": metrics,
    }
    http = type("GuardedHttpTools", (_GuardedHttpTools,), limits)
    return {"http": http, "timeout_keep_alive": settings.keep_alive_s}
