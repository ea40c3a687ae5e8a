"""Start-up failures an operator can cause, through the real command line (issue 19).

Each ends with exit code 2 and one line on stderr, ``streamlearn: error: ...``, naming the
setting, with no traceback. The failing workers are given a broker nothing listens on: every
check comes before Kafka is contacted, so a check made after connecting would retry the
connection with back-off and time the test out. A comma-separated bootstrap list from the
environment is accepted: the worker joins the group on the tansu broker, with either client.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka_tools import FAST_GROUP, create_topic, event, send, unique
from serving_support import free_port

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
ERROR = "streamlearn: error: "
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")  # configure_logging's
N_EVENTS = 100


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without STREAMLEARN_* (plus ``variables``), the checkout
    importable from any working directory."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMLEARN_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return {**env, **variables}


def write_config(tmp_path: Path, bootstrap: str, **sections: dict[str, Any]) -> Path:
    """A small CPU worker configuration, each section merged with ``sections``."""
    config: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": [bootstrap], "topic": unique("events"),
            "group_id": unique("group"), "dead_letter_topic": None, **FAST_GROUP,
        },
        "learner": {"task": "binary", "hidden": [16], "device": "cpu"},
        "source": {"batch_size": 16},
        "worker": {"max_wait_s": 0.3},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "every_batches": 1, "every_s": 0},
        "registry": {"kind": "filesystem", "path": str(tmp_path / "registry")},
        "metrics": {"host": "127.0.0.1"},
    }  # fmt: skip
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fails(args: list[str], cwd: Path, **variables: str) -> str:
    """Run ``python -m streamlearn ARGS``: exit code 2 within 60 s, exactly one stderr line
    besides log lines, no traceback; returns that line."""
    done = subprocess.run(
        [sys.executable, "-m", "streamlearn", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, env=environment(**variables),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if not LOG_LINE.match(line)]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(ERROR)
    return lines[0]


@pytest.fixture
def unreachable() -> str:
    """A loopback broker address nothing listens on."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A plain file: no directory can be created beneath it, even by root."""
    path = tmp_path / "a-file"
    path.write_text("")
    return path


# -- the worker ----------------------------------------------------------------------------------
def test_worker_invalid_bootstrap_servers_from_env(tmp_path: Path, unreachable: str):
    config = write_config(tmp_path, unreachable)
    name = "STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS"
    line = fails(["worker", "--config", str(config)], tmp_path, **{name: '["127.0.0.1:9092"'})
    assert "kafka.bootstrap_servers" in line and name in line


def test_worker_invalid_settings_are_one_line(tmp_path: Path, unreachable: str):
    config = write_config(tmp_path, unreachable)
    line = fails(
        ["worker", "--config", str(config)],
        tmp_path,
        STREAMLEARN_KAFKA__MAX_POLL_RECORDS="0",
        STREAMLEARN_LEARNER__LR="fast",
    )
    assert "kafka.max_poll_records (STREAMLEARN_KAFKA__MAX_POLL_RECORDS)" in line
    assert "learner.lr (STREAMLEARN_LEARNER__LR)" in line


def test_worker_busy_metrics_port(tmp_path: Path, unreachable: str, busy_port: int):
    config = write_config(tmp_path, unreachable)
    line = fails(["worker", "--config", str(config), "--metrics-port", str(busy_port)], tmp_path)
    assert "metrics.port" in line and str(busy_port) in line and "free the port" in line


def test_worker_checkpoint_dir_cannot_be_created(tmp_path: Path, unreachable: str, a_file: Path):
    config = write_config(tmp_path, unreachable, checkpoint={"dir": str(a_file / "ckpt")})
    line = fails(["worker", "--config", str(config)], tmp_path)
    assert "checkpoint.dir" in line and str(a_file) in line


def test_worker_unreachable_redis_registry(tmp_path: Path, unreachable: str):
    url = f"redis://127.0.0.1:{free_port()}/0"
    config = write_config(tmp_path, unreachable, registry={"kind": "redis", "url": url})
    line = fails(["worker", "--config", str(config)], tmp_path)
    assert "registry.url" in line and "does not answer" in line


def test_worker_registry_path_cannot_be_created(tmp_path: Path, unreachable: str, a_file: Path):
    config = write_config(tmp_path, unreachable, registry={"path": str(a_file / "registry")})
    line = fails(["worker", "--config", str(config)], tmp_path)
    assert "registry.path" in line and str(a_file) in line


@pytest.mark.parametrize("text", [None, "kafka: [unclosed\n"], ids=["missing", "invalid-yaml"])
def test_worker_config_file(tmp_path: Path, text: str | None):
    config = tmp_path / "worker.yaml"
    if text is not None:
        config.write_text(text)
    line = fails(["worker", "--config", str(config)], tmp_path)
    assert str(config) in line and "--config" in line


# -- the server ----------------------------------------------------------------------------------
def test_serve_busy_port(tmp_path: Path, busy_port: int):
    line = fails(
        ["serve", "--registry", str(tmp_path / "registry"), "--port", str(busy_port)], tmp_path
    )
    assert "serve.port" in line and str(busy_port) in line and "--port" in line


def test_serve_unreachable_redis_registry(tmp_path: Path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    line = fails(["serve", "--redis", url, "--port", "0"], tmp_path)
    assert "registry.url" in line


def test_serve_registry_path_cannot_be_created(tmp_path: Path, a_file: Path):
    line = fails(["serve", "--registry", str(a_file / "registry"), "--port", "0"], tmp_path)
    assert "registry.path" in line


def test_serve_missing_config(tmp_path: Path):
    line = fails(["serve", "--config", str(tmp_path / "absent.yaml")], tmp_path)
    assert "absent.yaml" in line and "--config" in line


# -- accepted: a comma-separated bootstrap list from the environment ---------------------------
def committed(bootstrap: str, group: str, topic: str) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:
        return consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_comma_separated_bootstrap_servers_from_env_are_used(
    kafka_bootstrap: str, tmp_path: Path, unreachable: str, client: str
):
    topic = create_topic(kafka_bootstrap, unique("startup"))
    send(kafka_bootstrap, topic, [event(i) for i in range(N_EVENTS)])
    group = unique("group")
    # the file names a dead broker: the environment's list is the one that must be used
    config = write_config(
        tmp_path, unreachable, kafka={"topic": topic, "group_id": group, "client": client}
    )
    servers = f" {kafka_bootstrap} , 127.0.0.1:{free_port()}"  # spaces, and a dead second one
    log = tmp_path / "worker.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlearn", "worker", "--config", str(config)],
            stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path,
            env=environment(STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS=servers),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while committed(kafka_bootstrap, group, topic) != N_EVENTS:  # consumed, checkpointed
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert " assigned " in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
