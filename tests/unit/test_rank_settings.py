"""What a rank of a scaled-out worker changes in its own settings (app.py): a metrics port per
rank on one machine, and the expert pool off with several ranks."""

from __future__ import annotations

import logging
import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from serving_support import free_port

from streamlearn.app import _single_model_settings, start_metrics_server
from streamlearn.settings import load_settings
from streamlearn.worker.health import Heartbeat


def adjacent_free_ports() -> int:
    """A free port whose successor is free too."""
    for _ in range(100):
        base = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise RuntimeError("no two adjacent free ports")


def test_ranks_on_one_machine_serve_metrics_on_their_own_ports():
    base = adjacent_free_ports()
    s = load_settings(metrics={"host": "127.0.0.1", "port": base})
    servers = [start_metrics_server(s, CollectorRegistry(), Heartbeat(60), r) for r in (0, 1)]
    try:
        for port in (base, base + 1):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5) as r:
                assert r.status == 200
    finally:
        for server in servers:
            assert server is not None
            server.shutdown()
            server.server_close()


def test_the_expert_pool_is_off_with_several_ranks(caplog: pytest.LogCaptureFixture):
    s = load_settings()
    assert s.experts.enabled  # the default
    assert _single_model_settings(s, 1) is s
    with caplog.at_level(logging.WARNING):
        ranked = _single_model_settings(s, 2)
    assert not ranked.experts.enabled
    assert ranked.experts.size == s.experts.size and ranked.learner == s.learner
    assert "expert pool is off with 2 ranks" in caplog.text
