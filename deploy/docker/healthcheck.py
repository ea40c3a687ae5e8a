"""Container HEALTHCHECK for the streamlearn image (Docker and compose; Kubernetes uses probes).

The image runs several commands. ``streamlearn serve`` is healthy when GET /v2/health/live on its
port answers 200; the port is the ``--port`` flag, else ``serve.port`` from ``--config`` and the
STREAMLEARN_* environment (streamlearn's own loader), else 8080. Any other command (the worker,
produce) is healthy while its process runs: it has no HTTP endpoint, and Docker restarts it when
it exits. Exit 0 = healthy, 1 = unhealthy.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

LIVE_PATH = "/v2/health/live"


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


def live_url(argv: Sequence[str]) -> str | None:
    """The liveness URL for the command line of PID 1, or None for commands without HTTP."""
    if command(argv) != "serve":
        return None
    port = _flag(argv, "--port")
    if port is None:
        from streamlearn.settings import load_settings

        port = str(load_settings(_flag(argv, "--config")).serve.port)
    return f"http://127.0.0.1:{int(port)}{LIVE_PATH}"


def main() -> int:
    argv = Path("/proc/1/cmdline").read_bytes().decode().split("\0")
    url = live_url(argv)
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
