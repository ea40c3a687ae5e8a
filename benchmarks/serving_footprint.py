"""The serving role's footprint: installed size and a server's memory, before and after the
torch-free serving tier.

- installed size: two fresh virtualenvs, ``du`` of their site-packages. *serve*: this checkout
  with ``pip install .[serve]``; *before*: the tree at ``--before`` (default 2e5ae53, when the
  base dependencies were every role's, torch included) installed as it was then
  (scripts/install-torch.sh, then ``pip install .``).
- server memory: the same published artifact (with its error memory) served by ``streamlearn
  serve`` from each virtualenv (*before* with its tree on ``PYTHONPATH``), resident set size
  (``VmRSS``) and its peak (``VmHWM``) from /proc after ``--requests`` v1 and v2 requests,
  and whether libtorch is mapped into the process.

Run it where this checkout's worker extra is installed (it trains the model it serves):
``python benchmarks/serving_footprint.py``. Writes <out>/serving_footprint.{md,json}. Needs
git, pip (offline against a local index works), Linux (/proc) and about 2 GB of disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from report import command_line, load_average, markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


# -- virtualenvs -------------------------------------------------------------------------------
def sh(command: list[str], **kwargs: Any) -> str:
    done = subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)
    return done.stdout


def virtualenv(path: Path) -> Path:
    """A fresh virtualenv; its python."""
    sh([sys.executable, "-m", "venv", "--clear", str(path)])
    return path / "bin" / "python"


def install_serve(python: Path, source: Path) -> None:
    sh([str(python), "-m", "pip", "install", "-q", f"{source}[serve]"])


def install_before(python: Path, source: Path) -> None:
    """As the tree at ``source`` was installed: torch by its script, then the package."""
    env = {**os.environ, "PYTHON": str(python)}
    sh(["bash", str(source / "scripts" / "install-torch.sh")], env=env)
    sh([str(python), "-m", "pip", "install", "-q", str(source)])


def footprint(python: Path) -> dict[str, Any]:
    """``du`` of the virtualenv's site-packages and the distributions installed there."""
    site = Path(
        sh([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    )
    kib = int(sh(["du", "-sk", str(site)]).split()[0])
    listed = json.loads(sh([str(python), "-m", "pip", "list", "--format", "json"]))
    return {
        "site_packages_mib": round(kib / 1024, 1),
        "distributions": len(listed),
        "torch": any(d["name"].lower() == "torch" for d in listed),
    }


@contextlib.contextmanager
def checkout(rev: str, where: Path) -> Iterator[Path]:
    """A detached git worktree of ``rev``, removed afterwards."""
    sh(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev])
    try:
        yield where
    finally:
        sh(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)])


# -- the served model --------------------------------------------------------------------------
def publish(registry: Path, events: int) -> dict[str, Any]:
    """Train with this checkout, publish one artifact and its error memory; a v1 row."""
    from streamlearn.app import build_prequential
    from streamlearn.events import Event
    from streamlearn.export.memory import encode_memory
    from streamlearn.export.onnx import export_prequential
    from streamlearn.registry.filesystem import FilesystemRegistry
    from streamlearn.settings import load_settings
    from streamlearn.sources.synthetic import SyntheticSource

    preq = build_prequential(load_settings(memory={"enabled": True}, learner={"device": "cpu"}))
    row: dict[str, Any] = {}
    for batch in SyntheticSource("agrawal-drift", events, 7).batches(64):
        good = [e for e in batch if isinstance(e, Event)]
        preq.process([e.x for e in good], [e.y for e in good])
        row = good[-1].x
    store = FilesystemRegistry(registry)
    artifact = export_prequential(preq)
    store.publish(artifact)
    store.push_memory(encode_memory(preq.memory, 1))
    store.close()
    return {
        "row": row,
        "numeric": preq.encoder.numeric_slots,
        "cat": preq.encoder.categorical_slots,
    }


# -- a server's memory -------------------------------------------------------------------------
def _post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        json.dumps(body).encode(),
        {"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def measure(python: Path, env: dict[str, str], registry: Path, model: dict, requests: int) -> dict:
    """Start ``streamlearn serve``, wait for a compensated answer, send ``requests`` v1 and v2
    requests, then read its memory from /proc."""
    from serving_support import free_port, stop_process

    port = free_port()
    serve = ["-m", "streamlearn", "serve", "--registry", str(registry), "--port", str(port)]
    log = registry.parent / f"server-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(python), *serve], env=env, cwd=registry.parent, stdout=sink, stderr=sink
        )
    v1 = {"instances": [model["row"]]}
    tensors = [("num", model["numeric"], "FP32"), ("cat", model["cat"], "INT64")]
    v2 = {
        "inputs": [
            {"name": n, "shape": [1, w], "datatype": t, "data": [0] * w} for n, w, t in tensors
        ]
    }
    try:
        deadline = time.monotonic() + 120
        started = time.monotonic()
        while True:
            with contextlib.suppress(OSError):
                if _post(port, "/v1/models/streamlearn:predict", v1)["compensated"]:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not serve: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        ready_s = time.monotonic() - started
        for i in range(requests):
            if i % 2:
                _post(port, "/v2/models/streamlearn/infer", v2)
            else:
                assert _post(port, "/v1/models/streamlearn:predict", v1)["compensated"]
        time.sleep(0.5)
        status = _status(proc.pid)
        torch = "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        stop_process(proc)
    return {
        "rss_mib": round(status["VmRSS"] / 1024, 1),
        "peak_rss_mib": round(status["VmHWM"] / 1024, 1),
        "libtorch_mapped": torch,
        "start_to_first_compensated_s": round(ready_s, 2),
    }


def median_run(runs: list[dict]) -> dict:
    return {
        "rss_mib": statistics.median(r["rss_mib"] for r in runs),
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
        "libtorch_mapped": any(r["libtorch_mapped"] for r in runs),
        "start_to_first_compensated_s": statistics.median(
            r["start_to_first_compensated_s"] for r in runs
        ),
        "runs": runs,
    }


# -- report ------------------------------------------------------------------------------------
def _row(label: str, side: dict) -> list[Any]:
    yes = {True: "yes", False: "no"}
    server = side["server"]
    return [
        label,
        side["site_packages_mib"],
        side["distributions"],
        yes[side["torch"]],
        server["rss_mib"],
        server["peak_rss_mib"],
        yes[server["libtorch_mapped"]],
    ]


def render(data: dict) -> str:
    before, after = data["before"], data["after"]
    rows = [
        _row(f"before ({data['before_rev']}, `pip install .`)", before),
        _row("after (`pip install .[serve]`)", after),
    ]
    headers = [
        "serving role",
        "site-packages MiB",
        "distributions",
        "torch installed",
        "server RSS MiB",
        "peak RSS MiB",
        "libtorch mapped",
    ]
    size = after["site_packages_mib"] / before["site_packages_mib"]
    rss = after["server"]["rss_mib"] / before["server"]["rss_mib"]
    return "\n".join(
        [
            "# Serving footprint",
            "",
            f"Command: `{data['command']}`  ",
            f"Date: {data['date']}  ",
            f"Machine: {data['cpu_count']} logical cores, Python {data['python']}; "
            f"load average at start {data['load_average']}",
            "",
            "Installed size: `du -sk` of a fresh virtualenv's site-packages. Server memory: "
            "`streamlearn serve` on the same artifact (filesystem registry, error memory on), "
            f"VmRSS and VmHWM after {data['requests']} requests (v1 and v2 alternating), the "
            f"median of {data['repeats']} starts.",
            "",
            markdown_table(headers, rows),
            "",
            f"After / before: installed size {size:.2f}×, server RSS {rss:.2f}×.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="2e5ae53", help="the revision measured as before")
    parser.add_argument("--before-tree", type=Path, help="an existing checkout of --before")
    parser.add_argument("--requests", type=int, default=200, help="requests before reading RSS")
    parser.add_argument("--repeats", type=int, default=3, help="server starts each (median)")
    parser.add_argument("--events", type=int, default=5000, help="events the model learns")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, help="keep the virtualenvs here (default: a temp dir)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="footprint-"))
    work.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "command": command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_average": load_average(),
        "before_rev": args.before,
        "requests": args.requests,
        "repeats": args.repeats,
    }
    try:
        with contextlib.ExitStack() as stack:
            tree = args.before_tree or stack.enter_context(
                checkout(args.before, work / "before-tree")
            )
            print("installing the serving role (.[serve]) ...", flush=True)
            serve_py = virtualenv(work / "venv-serve")
            install_serve(serve_py, ROOT)
            print(f"installing {args.before} as it was (torch, then .) ...", flush=True)
            before_py = virtualenv(work / "venv-before")
            install_before(before_py, tree)
            data["after"], data["before"] = footprint(serve_py), footprint(before_py)
            registry = work / "registry"
            shutil.rmtree(registry, ignore_errors=True)
            model = publish(registry, args.events)
            clean = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("STREAMLEARN_", "PYTHONPATH"))
            }
            servers = {
                "after": (serve_py, clean),
                "before": (before_py, {**clean, "PYTHONPATH": str(tree)}),
            }
            runs: dict[str, list[dict]] = {name: [] for name in servers}
            for _ in range(args.repeats):  # alternate, so drifting load spreads over both
                for name, (python, env) in servers.items():
                    print(f"serving with {name} ...", flush=True)
                    runs[name].append(measure(python, env, registry, model, args.requests))
            for name in servers:
                data[name]["server"] = median_run(runs[name])
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    write_json(args.out / "serving_footprint.json", data)
    markdown = render(data)
    (args.out / "serving_footprint.md").write_text(markdown, encoding="utf-8")
    print(markdown)


if __name__ == "__main__":
    main()
