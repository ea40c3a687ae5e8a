"""RankGroup: this process's place in a torch.distributed process group, from the environment.

The rendezvous is torch's own ``env://`` method: ``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` (and ``LOCAL_RANK`` for the GPU), as ``torchrun`` sets them and a Kubernetes
StatefulSet or PyTorchJob can. ``WORLD_SIZE`` unset or 1 is the single worker: no group at
all. gloo on a CPU, NCCL with one GPU per rank. Every collective goes through this object, so
the time spent inside them and the payload bytes are counted in one place; a collective that
fails (a peer died: gloo sees its connection close, else the group's timeout) marks the group
broken, and the worker then exits without a checkpoint so the whole group restarts from the
last consistent cut.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from streamlearn.errors import StreamlearnError

__all__ = ["GroupBroken", "RankGroup", "join_from_env"]

T = TypeVar("T")


class GroupBroken(StreamlearnError):
    """A collective failed: a peer rank died or stopped answering within the group timeout."""


class RankGroup:
    """An initialised process group: rank, world size, device, collective accounting."""

    def __init__(self, rank: int, world_size: int, device: torch.device) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device
        self.collective_s = 0.0  # time inside collectives
        self.collective_bytes = 0  # payload bytes this rank contributed to them
        self.broken = False

    @property
    def leader(self) -> bool:
        """Rank 0: the one that exports, publishes and writes the shared checkpoint."""
        return self.rank == 0

    def _timed(self, payload: int, call: Callable[[], T]) -> T:
        if self.broken:
            raise GroupBroken("the process group is broken: a peer rank failed earlier")
        start = time.perf_counter()
        try:
            result = call()
        except (RuntimeError, dist.DistError) as exc:
            self.broken = True
            raise GroupBroken(f"rank {self.rank}: a collective failed ({exc})") from exc
        self.collective_s += time.perf_counter() - start
        self.collective_bytes += payload
        return result

    def all_reduce(
        self, tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM
    ) -> None:
        """In place, over every rank (moved to the group's device and back when it differs)."""
        on = tensor if tensor.device == self.device else tensor.to(self.device)
        self._timed(tensor.numel() * tensor.element_size(), lambda: dist.all_reduce(on, op))
        if on is not tensor:
            tensor.copy_(on)

    def all_gather_object(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable; ours are plain values), in rank order."""
        out: list[Any] = [None] * self.world_size
        size = len(pickle.dumps(value))
        self._timed(size, lambda: dist.all_gather_object(out, value))
        return out

    def broadcast_object(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (the others pass anything)."""
        box: list[Any] = [value]
        size = len(pickle.dumps(value)) if self.leader else 0
        self._timed(size, lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def close(self) -> None:
        """Leave the group (not after a failure: a dead peer would make that wait)."""
        if dist.is_initialized() and not self.broken:
            dist.destroy_process_group()


def join_from_env(timeout_s: float, environ: Mapping[str, str] | None = None) -> RankGroup | None:
    """Join the group the environment describes; None for a single worker (no WORLD_SIZE, or
    1). ``timeout_s`` bounds every collective, the longest a rank waits for its peers."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    rank = int(env["RANK"])
    if torch.cuda.is_available():
        device = torch.device("cuda", int(env.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    timeout = timedelta(seconds=timeout_s)
    restart = env.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None:
        dist.init_process_group(
            backend, init_method="env://", rank=rank, world_size=world, timeout=timeout
        )
        return RankGroup(rank, world, device)
    # under torchrun: its agent's store outlives a restart, and the env:// rendezvous does not
    # separate attempts, so a restarted rank would read its dead peers' addresses (seen with
    # torch 2.13); the attempt number keeps each generation's keys apart
    agent_hosts = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        env["MASTER_ADDR"], int(env["MASTER_PORT"]), world,
        is_master=not agent_hosts and rank == 0, timeout=timeout,
    )  # fmt: skip
    attempt = dist.PrefixStore(f"streamlearn/attempt_{restart}", store)
    dist.init_process_group(backend, store=attempt, rank=rank, world_size=world, timeout=timeout)
    return RankGroup(rank, world, device)
