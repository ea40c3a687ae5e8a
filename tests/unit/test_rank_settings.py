"""What a rank of a scaled-out worker changes in its own settings (app.py): a metrics port per
rank on one machine, its share of the micro-batch, and the expert pool off with several ranks."""

from __future__ import annotations

import logging
import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from serving_support import free_port

from streamlearn.app import rank_settings, start_metrics_server
from streamlearn.errors import ConfigError
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
    assert rank_settings(s, 1, 0) is s
    with caplog.at_level(logging.WARNING):
        ranked = rank_settings(s, 2, 0)
    assert not ranked.experts.enabled
    assert ranked.experts.size == s.experts.size and ranked.learner == s.learner
    assert ranked.source.kind == s.source.kind and ranked.worker == s.worker
    assert "expert pool is off with 2 ranks" in caplog.text


@pytest.mark.parametrize(("batch", "world", "shares"), [
    (32, 1, [32]), (32, 2, [16, 16]), (32, 3, [11, 11, 10]), (5, 4, [2, 1, 1, 1]), (4, 4, [1] * 4),
])  # fmt: skip
def test_ranks_share_out_the_micro_batch_of_the_one_model(batch, world, shares):
    s = load_settings(source={"batch_size": batch}, experts={"enabled": False})
    got = [rank_settings(s, world, r).source.batch_size for r in range(world)]
    assert got == shares and sum(got) == batch  # one averaged step per batch_size events


def test_an_explicit_rank_batch_is_taken_by_every_rank():
    s = load_settings(source={"batch_size": 32, "rank_batch_size": 24})
    assert [rank_settings(s, 2, r).source.batch_size for r in (0, 1)] == [24, 24]
    assert rank_settings(s, 1, 0).source.batch_size == 32  # a single worker: batch_size


def test_a_micro_batch_smaller_than_the_ranks_is_a_config_error():
    s = load_settings(source={"batch_size": 3})
    with pytest.raises(ConfigError, match=r"source\.batch_size") as caught:
        rank_settings(s, 4, 3)
    assert "source.rank_batch_size" in str(caught.value)  # the fix is named
    assert rank_settings(s, 3, 2).source.batch_size == 1
