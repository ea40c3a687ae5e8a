"""``streamlearn serve --processes 2``: several server processes on one HTTP and one gRPC port.

The command runs as a subprocess, as deployed. New connections spread over the processes (the
kernel balances ``SO_REUSEPORT`` sockets), each process swaps in a new version by itself, the
metrics any process answers are the sum over all, a process that dies is replaced, and SIGTERM
stops them all with exit code 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml
from serving_support import export, free_port, make_rows, publish_trained, stop_process, train

from streamlearn.registry.filesystem import FilesystemRegistry

pytestmark = pytest.mark.timeout(120)
V1 = "/v1/models/streamlearn:predict"


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()]


def wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def answers(url: str, n: int) -> list[str]:
    """``n`` v1 requests, each on a connection of its own; the versions that answered."""
    versions = []
    for _ in range(n):
        with httpx.Client(base_url=url, timeout=5) as client:
            r = client.post(V1, json={"instances": [{"num_0": 0.5}]})
            assert r.status_code == 200, r.text
            versions.append(r.json()["model_version"])
    return versions


def requests_counted(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("streamlearn_serve_requests_total{") and 'endpoint="v1_predict"' in line
    )


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "registry"
    _, preq = publish_trained(root)
    port, grpc_port = free_port(), free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "registry": {"kind": "filesystem", "path": str(root), "poll_s": 0.1},
        "serve": {"port": port, "grpc_port": grpc_port, "processes": 2},
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlearn", "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready)
    yield {"proc": proc, "url": url, "grpc": f"127.0.0.1:{grpc_port}", "root": root,
           "preq": preq, "log": log}  # fmt: skip
    if proc.poll() is None:
        stop_process(proc)


def test_every_process_swaps_and_the_metrics_add_up(server):
    url = server["url"]
    assert len(children(server["proc"].pid)) == 2
    assert set(answers(url, 40)) == {"1"}
    assert requests_counted(url) == 40  # whichever process answers the scrape

    preq = server["preq"]
    train(preq, *make_rows(200, 2))
    registry = FilesystemRegistry(server["root"])
    registry.publish(export(preq))
    registry.close()
    wait_for(lambda: set(answers(url, 10)) == {"2"})
    # 60 fresh connections over two processes: both answer (all on one: p = 2**-59), and
    # every one answers with the new version, so each process swapped by itself
    assert set(answers(url, 60)) == {"2"}
    assert requests_counted(url) >= 110


def test_grpc_answers_on_the_shared_port(server):
    client = triton_grpc.InferenceServerClient(server["grpc"])
    try:
        rng = np.random.default_rng(0)
        for _ in range(10):
            inputs = []
            for name, data, datatype in (
                ("num", rng.normal(size=(2, 8)).astype(np.float32), "FP32"),
                ("cat", rng.integers(0, 256, (2, 4)), "INT64"),
            ):
                tensor = triton_grpc.InferInput(name, list(data.shape), datatype)
                tensor.set_data_from_numpy(data)
                inputs.append(tensor)
            assert client.infer("streamlearn", inputs).as_numpy("prediction").shape[0] == 2
    finally:
        client.close()


def test_a_dead_process_is_replaced_and_sigterm_stops_all_with_0(server):
    proc, url = server["proc"], server["url"]
    first = children(proc.pid)
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: len(children(proc.pid)) == 2 and first[0] not in children(proc.pid))
    assert set(answers(url, 20)) == {"1"}
    now = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, server["log"].read_text()
    for pid in now:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
