"""Several server processes on one port, so serving uses every core.

One Python process answers on one core (the HTTP stack, JSON and the request path are Python,
holding the GIL). ``serve_processes`` forks ``count`` children before anything heavy is imported
(no onnxruntime session or thread pool crosses a fork), and each child runs a whole server —
its own runtime watching the registry, so a swap reaches every process the way it reaches every
replica — on sockets bound with ``SO_REUSEPORT`` (:func:`bound_socket`), over which the
kernel spreads new connections evenly. The caller holds the ports with :func:`reserve_port`
while the children live, so a busy port is an error before anything forks.

The parent only supervises: SIGTERM/SIGINT are passed on to the children and waited for; a
child that dies unasked is replaced (after a delay that doubles while children keep dying
young, so a broken configuration does not spin). Metrics: the children write prometheus-client
multiprocess files into ``metrics_dir`` (``PROMETHEUS_MULTIPROC_DIR``, set here before
prometheus-client is imported), any child's ``/metrics`` aggregates all of them, and a dead
child's files are marked so its live-only gauges disappear.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

__all__ = ["MULTIPROC_ENV", "bound_socket", "reserve_port", "serve_processes"]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_YOUNG_S = 5.0  # a child that dies sooner than this after its start counts as dying young
_MAX_DELAY_S = 30.0


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket that holds ``host:port`` for processes binding it with ``SO_REUSEPORT`` (0: a
    free port, then ``getsockname()`` says which). OSError when anyone else holds the port:
    checked with a plain bind first, since ``SO_REUSEPORT`` alone would share it silently with
    another server of the same user."""
    if port:
        bound_socket(host, port, reuse_port=False, listen=False).close()
    return bound_socket(host, port, reuse_port=True, listen=False)


def bound_socket(host: str, port: int, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEPORT`` if asked), listening unless told
    not; OSError when the port cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for sockets that say TCP, and
    # without it a response's body waits for the client's delayed ACK of its head (≈ 40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve_processes(count: int, child: Callable[[], None], metrics_dir: Path) -> None:
    """Run ``child()`` in ``count`` forked processes until SIGTERM/SIGINT; returns when every
    child has exited."""
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    from prometheus_client import multiprocess, values

    values.ValueClass = values.get_value_class()  # multiprocess values, even if imported early

    stopping = False
    started: dict[int, float] = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in started:
            _signal(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    delay = 0.0
    try:
        for _ in range(count):
            started[_fork(child)] = time.monotonic()
        while started:
            pid, status = os.wait()
            if pid not in started:
                continue
            lived = time.monotonic() - started.pop(pid)
            multiprocess.mark_process_dead(pid, str(metrics_dir))
            if stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            delay = min(_MAX_DELAY_S, max(0.5, delay * 2)) if lived < _YOUNG_S else 0.0
            log.warning(
                "server process %d exited (%s) after %.1f s; starting another in %.1f s",
                pid, code, lived, delay,
            )  # fmt: skip
            time.sleep(delay)
            if not stopping:
                pid = _fork(child)
                started[pid] = time.monotonic()
                if stopping:  # the signal came while it was being forked
                    _signal(pid, signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fork(child: Callable[[], None]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # the child's server installs its own
        child()
    except SystemExit as exc:  # a server's way to end: SystemExit(0) on SIGTERM
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        log.exception("server process %d failed", os.getpid())
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone; os.wait collects it
        os.kill(pid, sig)
