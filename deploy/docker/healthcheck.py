"""Container HEALTHCHECK for the streamlearn image (Docker and compose; Kubernetes uses probes).

The image runs several commands; the check follows the one PID 1 runs:

- ``streamlearn serve`` is healthy when GET /v2/health/live on its port answers 200; the port is
  the ``--port`` flag, else ``serve.port`` from ``--config`` and the STREAMLEARN_* environment
  (streamlearn's own loader), else 8080.
- ``streamlearn worker`` is healthy when GET /livez on its metrics port answers 200 (its loop
  has made a turn within ``worker.liveness_timeout_s``, or it is still starting); the port is
  ``--metrics-port``, else ``metrics.port`` from ``--config`` and the environment. A worker
  without a metrics port has no endpoint to ask: it counts as healthy while it runs.
- Any other command (produce, demo) is healthy while its process runs; Docker restarts it when
  it exits.

Exit 0 = healthy, 1 = unhealthy.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

LIVE_PATH = "/v2/health/live"  # streamlearn serve
WORKER_LIVE_PATH = "/livez"  # streamlearn worker, on its metrics port


def _flag(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` (last one wins, like argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def command(argv: Sequence[str]) -> str | None:
    """The streamlearn sub-command in a command line (``.../streamlearn serve ...``,
    ``python -m streamlearn serve ...``), or None when it is not a streamlearn command line."""
    for i, arg in enumerate(argv[:-1]):
        if Path(arg).name == "streamlearn":
            return argv[i + 1]
    return None


def _loopback(host: str) -> str:
    """Where to reach a server bound to ``host`` from inside its container."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def live_url(argv: Sequence[str]) -> str | None:
    """The liveness URL for the command line of PID 1, or None for commands without one."""
    sub = command(argv)
    if sub == "serve":
        port = _flag(argv, "--port")
        if port is None:
            from streamlearn.settings import load_settings

            port = str(load_settings(_flag(argv, "--config")).serve.port)
        return f"http://127.0.0.1:{int(port)}{LIVE_PATH}"
    if sub == "worker":
        from streamlearn.settings import load_settings

        metrics = load_settings(_flag(argv, "--config")).metrics
        port = _flag(argv, "--metrics-port")
        port = int(port) if port is not None else metrics.port
        if port is None:
            return None
        return f"http://{_loopback(metrics.host)}:{port}{WORKER_LIVE_PATH}"
    return None


def main() -> int:
    argv = Path("/proc/1/cmdline").read_bytes().decode().split("\0")
    try:
        url = live_url(argv)
    except Exception as exc:  # an unreadable config: the process itself says why at start
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # HTTPError (503: a stuck loop) included
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
