"""Scale-out: two ranks (gloo, CPU) keep one model over a 4-partition topic, exactly once.

Ranks are ``python -m streamlearn worker`` subprocesses with torch's env:// variables, as
torchrun or a StatefulSet would start them. One rank is killed with SIGKILL mid-stream: the
other one's next collective fails and it exits non-zero without a checkpoint (the group
restarts from the last consistent cut). The restarted pair finishes the stream; then one rank
alone (the partitions all move to it) continues on more events. Every checkpoint's offsets
and learned count add up: each event learned once, none twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kafka_tools import create_topic, send, unique
from worker_process import WorkerProcess, newest_state, run_to_end, seen, write_config

from streamlearn.export.memory import decode_memory
from streamlearn.registry.filesystem import FilesystemRegistry

pytestmark = pytest.mark.timeout(240)  # each test

PARTITIONS = 4
FIRST, SECOND = 3000, 1000  # events before and after the change to one rank


def drifting(i: int) -> bytes:
    """A labelled event whose concept flips halfway through the first part (y = a > 0, then
    y = a <= 0)."""
    a = ((i * 37) % 101 - 50) / 25.0
    y = int(a > 0) if i < FIRST // 2 or i >= FIRST else int(a <= 0)
    x = {"a": a, "b": ((i * 13) % 7) / 3.0, "c": "red" if i % 2 else "blue"}
    return json.dumps({"id": f"e-{i}", "x": x, "y": y}).encode()


def produce(bootstrap: str, topic: str, ids: range) -> None:
    for p in range(PARTITIONS):
        send(bootstrap, topic, [drifting(i) for i in ids if i % PARTITIONS == p], partition=p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ranks(config: Path, world: int) -> list[WorkerProcess]:
    port = str(free_port())
    return [
        WorkerProcess(
            config,
            env={
                "WORLD_SIZE": str(world),
                "RANK": str(r),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
        )
        for r in range(world)
    ]


def offsets(state: dict[str, Any]) -> dict[tuple[str, int], int]:
    return {(t, int(p)): int(o) for t, p, o in state["offsets"]}


# A rank blocks in a collective while its peer is slower (a checkpoint, a loaded machine) and
# does not poll meanwhile: the other tests' 3.5 s between polls dropped a rank from the group
# under the suite's load, and its partitions moved. The worker's defaults allow 300 s.
RANK_GROUP = {
    "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 20000,
}  # fmt: skip


def scale_config(path: Path, bootstrap: str, topic: str, **sections: dict[str, Any]) -> Path:
    """The worker config of these tests: fixed slots (ranks need them), frequent cuts, the
    group's timeouts of RANK_GROUP."""
    sections["kafka"] = RANK_GROUP | sections.get("kafka", {})
    return write_config(
        path, bootstrap, topic, features={"numeric": ["a", "b"], "categorical": ["c"]},
        learner={"classes": [0, 1]}, checkpoint={"every_batches": 5, "every_s": 0.5}, **sections,
    )  # fmt: skip


def wait_seen(ckpt: Path, n: int, procs: list[WorkerProcess], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while seen(newest_state(ckpt)) < n:
        for proc in procs:
            assert proc.proc.poll() is None, proc.text()
        assert time.monotonic() < deadline, "\n".join(p.text()[-3000:] for p in procs)
        time.sleep(0.1)


def test_two_ranks_kill_9_then_one_rank_learn_every_event_once(
    kafka_bootstrap: str, tmp_path: Path
):
    topic = create_topic(kafka_bootstrap, unique("scale"), partitions=PARTITIONS)
    produce(kafka_bootstrap, topic, range(FIRST))
    # rings kept through the flip's drift response, so both are full whenever rank 0 pushes
    config = scale_config(
        tmp_path / "w.yaml", kafka_bootstrap, topic, memory={"reset_on_drift": False}
    )
    ckpt = tmp_path / "ckpt"

    pair = ranks(config, 2)
    wait_seen(ckpt, 600, pair)
    pair[1].kill()
    assert pair[0].proc.wait(60) != 0, pair[0].text()  # its next collective failed
    assert "no final checkpoint" in pair[0].text()
    at_kill = seen(newest_state(ckpt))
    assert 0 < at_kill < FIRST

    pair = ranks(config, 2)
    wait_seen(ckpt, FIRST, pair)
    for proc in pair:  # as Kubernetes stops the pods: every rank at once
        proc.proc.send_signal(signal.SIGTERM)
    for proc in pair:
        assert proc.proc.wait(30) == 0, proc.text()
    state = newest_state(ckpt)
    assert state is not None
    assert seen(state) == FIRST  # learned once each: a repeat would count twice
    assert offsets(state) == {(topic, p): FIRST // PARTITIONS for p in range(PARTITIONS)}
    assert "partitions settled" in pair[1].text()
    assert len(state["prequential"]["counters"]["drifts"]) >= 1  # the flip was seen
    pushed = FilesystemRegistry(tmp_path / "registry").pull_memory()
    assert pushed is not None  # rank 0 pushed both ranks' full rings of 128 rows
    assert len(decode_memory(pushed).error_memory) == 2 * 128

    produce(kafka_bootstrap, topic, range(FIRST, FIRST + SECOND))
    # one rank (WORLD_SIZE unset), in a new consumer group: offsets come from the cut alone
    # (a group only assigns partitions here; tansu left the old group without an assignment)
    alone = scale_config(
        tmp_path / "w.yaml", kafka_bootstrap, topic, kafka={"group_id": unique("alone")}
    )
    state = run_to_end(alone, FIRST + SECOND)
    assert seen(state) == FIRST + SECOND
    total = (FIRST + SECOND) // PARTITIONS
    assert offsets(state) == {(topic, p): total for p in range(PARTITIONS)}


def test_torchrun_restarts_the_group_after_a_kill_9_and_it_finishes_exactly(
    kafka_bootstrap: str, tmp_path: Path
):
    """The launcher of the README: torchrun, elastic, with restarts (c10d rendezvous)."""
    topic = create_topic(kafka_bootstrap, unique("torchrun"), partitions=PARTITIONS)
    produce(kafka_bootstrap, topic, range(FIRST))
    config = scale_config(tmp_path / "w.yaml", kafka_bootstrap, topic)
    agent = WorkerProcess(config, command=(
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "--max-restarts", "2", "-m", "streamlearn", "worker",
    ))  # fmt: skip
    ckpt = tmp_path / "ckpt"
    wait_seen(ckpt, 600, [agent])
    children = subprocess.run(
        ["pgrep", "-P", str(agent.proc.pid)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(children) == 2, children  # the two ranks
    os.kill(int(children[-1]), signal.SIGKILL)
    wait_seen(ckpt, FIRST, [agent])
    assert "a collective failed" in agent.text()  # the survivor saw its peer die
    assert agent.text().count("partitions settled") >= 4  # two ranks, two generations
    state = newest_state(ckpt)
    assert state is not None and seen(state) == FIRST
    assert offsets(state) == {(topic, p): FIRST // PARTITIONS for p in range(PARTITIONS)}
    agent.proc.send_signal(signal.SIGTERM)  # the agent forwards it to the ranks
    agent.proc.wait(60)
