"""Start-up checks raise one-line ConfigErrors naming the setting (issue 19); the command line
turns every StreamlearnError into exit code 2 and one stderr line. In-process and fast: the
subprocess runs are in tests/integration/test_cli_startup_errors.py."""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from serving_support import free_port

from streamlearn import cli
from streamlearn.app import build_registry, build_worker, start_metrics_server
from streamlearn.errors import ConfigError
from streamlearn.settings import load_settings
from streamlearn.worker.checkpoint import CheckpointStore
from streamlearn.worker.health import Heartbeat

UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: connecting would be retried forever


@pytest.fixture
def busy_port() -> Iterator[int]:
    """The port of a worker's metrics server that is already up (on loopback)."""
    s = load_settings(metrics={"port": 0, "host": "127.0.0.1"})
    first = start_metrics_server(s, CollectorRegistry(), Heartbeat(60))
    assert first is not None
    try:
        yield int(first.server_port)
    finally:
        first.shutdown()
        first.server_close()


@pytest.fixture
def uncreatable(tmp_path: Path) -> Path:
    """A directory that cannot be created, even by root: its parent is a plain file."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "dir"


def one_line(exc: pytest.ExceptionInfo[ConfigError], *needles: str) -> str:
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    return message


def test_busy_metrics_port(busy_port: int):
    s = load_settings(metrics={"port": busy_port, "host": "127.0.0.1"})
    with pytest.raises(ConfigError) as info:
        start_metrics_server(s, CollectorRegistry(), Heartbeat(60))
    one_line(info, "metrics.port", "STREAMLEARN_METRICS__PORT", str(busy_port), "--metrics-port")


def test_unreachable_redis_registry():
    s = load_settings(registry={"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"})
    with pytest.raises(ConfigError) as info:
        build_registry(s)
    one_line(info, "registry.url", "STREAMLEARN_REGISTRY__URL", "does not answer")


def test_unusable_redis_url():
    with pytest.raises(ConfigError) as info:
        build_registry(load_settings(registry={"kind": "redis", "url": "http://localhost/0"}))
    one_line(info, "registry.url")


def test_registry_directory_that_cannot_be_created(uncreatable: Path):
    with pytest.raises(ConfigError) as info:
        build_registry(load_settings(registry={"path": uncreatable}))
    one_line(info, "registry.path", "STREAMLEARN_REGISTRY__PATH", str(uncreatable))


def test_registry_directory_that_cannot_be_written_fails_only_the_publisher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def read_only(*_: object, **__: object) -> None:  # root may write anywhere: a read-only
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))  # mount, as the kernel says it

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    s = load_settings(registry={"path": tmp_path / "registry"})
    build_registry(s).close()  # serving only reads
    with pytest.raises(ConfigError) as info:
        build_registry(s, publishing=True)
    one_line(info, "registry.path", "cannot write", "Read-only file system")


def test_checkpoint_store_checks_its_directory(uncreatable: Path, tmp_path: Path):
    with pytest.raises(OSError):
        CheckpointStore(uncreatable)
    store = CheckpointStore(tmp_path / "ckpt")
    assert list(store.directory.iterdir()) == []  # the write probe leaves nothing behind


def test_unusable_checkpoint_dir_fails_before_kafka_is_contacted(uncreatable: Path):
    s = load_settings(kafka={"bootstrap_servers": [UNREACHABLE]}, checkpoint={"dir": uncreatable})
    with pytest.raises(ConfigError) as info:  # not a retry loop on the unreachable broker
        build_worker(s, threading.Event())
    one_line(info, "checkpoint.dir", "STREAMLEARN_CHECKPOINT__DIR", "--checkpoint-dir")


def test_cli_busy_serve_port(tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]):
    argv = ["serve", "--registry", str(tmp_path / "registry"), "--port", str(busy_port)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamlearn: error: serve.port ")
    assert "STREAMLEARN_SERVE__PORT" in err and "--port" in err


def test_cli_prints_any_error_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    def refuse(*_: object, **__: object) -> None:
        raise ConfigError("first line\n  second line")

    monkeypatch.setattr(cli, "load_settings", refuse)
    assert cli.main(["worker"]) == 2
    assert capsys.readouterr().err == "streamlearn: error: first line second line\n"


def test_cli_bootstrap_servers_flag_is_read_by_the_settings():
    args = cli._parser().parse_args(["worker", "--bootstrap-servers", "a:1, b:2"])
    kafka = load_settings(**cli._kafka_overrides(args)).kafka
    assert kafka.bootstrap_servers == ("a:1", "b:2")
