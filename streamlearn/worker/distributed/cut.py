"""CutCheckpoint: the commit sequence over every rank, so a checkpoint is a consistent cut.

All ranks enter it in the same round (:class:`~streamlearn.worker.distributed.sync.Rounds`
agrees on it), right after the model averaging, so every rank holds the same weights and
statistics at the same round. Then:

1. **settle** — each rank waits until its own dead letters and predictions are acknowledged;
   the ranks agree (a minimum) on whether all did, else nobody saves;
2. **gather** — every rank's part of the state goes to every rank: its next offset per
   partition, its waiting late labels, its counters;
3. **save** — rank 0 alone writes one file (the shared checkpoint directory): its chain (the
   one model) with the counters summed over ranks, every partition's offset (the largest any
   rank learned to: a partition is learned by one rank at a time, and all ranks started from
   the same restored offsets), and all ranks' waiting late labels;
4. **commit** — each rank commits the saved offsets of the partitions it owns (lag only).

The file has the single worker's format, so a restart with any number of ranks, one
included, restores it: rank 0 reads it and sends it to the others, rank 0 keeps the summed
counters and the other ranks count from zero, and Kafka hands out the partitions anew, each
rank seeking to the cut's offsets of those it is given.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from streamlearn.worker.checkpointing import Checkpoint, Offsets
from streamlearn.worker.distributed.group import RankGroup
from streamlearn.worker.kafka.client import TopicPartition

__all__ = ["CutCheckpoint", "merge_parts"]


class CutCheckpoint(Checkpoint):
    """:class:`Checkpoint` whose save is a consistent cut over ``group`` (module docstring)."""

    def __init__(self, group: RankGroup, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def commit(
        self,
        snapshot: Callable[[], dict[str, Any]],
        offsets: Offsets,
        owned: set[TopicPartition],
        lock: threading.RLock,
        *,
        final: bool = False,
    ) -> bool:
        """The four steps above; False on every rank when some rank could not settle."""
        import torch
        import torch.distributed as dist

        settled = torch.tensor([1.0 if self._settle(final) else 0.0])
        self.group.all_reduce(settled, dist.ReduceOp.MIN)
        if not settled.item():
            return False
        with lock:
            state = snapshot()
            parts = self.group.all_gather_object(
                {key: state[key] for key in ("offsets", "late_labels", "stats")}
                | {"counters": state["prequential"]["counters"]}
            )
            merged = merge_parts(parts)
            if self.group.leader:
                state["prequential"]["counters"] = merged.pop("counters")
                self._save(lambda: {**state, **merged}, offsets)
            self.saved = {(str(t), int(p)): int(o) for t, p, o in merged["offsets"]}
            self.dirty = False
        self.commit_offsets(owned)
        return True

    def save_for_handover(self, snapshot: Callable[[], dict[str, Any]], offsets: Offsets) -> None:
        """Nothing: a cut needs every rank, and a revocation comes to one. Partitions moving
        after the start restart the group from the last cut instead (Worker, Rounds)."""


def merge_parts(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The cut's shared fields from every rank's part: offsets (largest per partition), waiting
    late labels (all ranks', each with the partition it came from), counters (summed; drift
    positions are the leader's, which every rank's response was also recorded in)."""
    offsets: dict[tuple[str, int], int] = {}
    for part in parts:
        for t, p, o in part["offsets"]:
            offsets[(t, p)] = max(offsets.get((t, p), 0), int(o))
    labels = dict(parts[0]["late_labels"])
    for side in ("events", "labels"):
        entries: dict[str, list[Any]] = {}
        for part in parts:
            for key, value, t in part["late_labels"][side]:
                entries.setdefault(key, [key, value, t])
        labels[side] = sorted(entries.values(), key=lambda entry: entry[2])
    labels["homes"] = {
        side: [
            home for part in parts for home in part["late_labels"].get("homes", {}).get(side, [])
        ]
        for side in ("events", "labels")
    }
    for name in ("joined", "early"):
        labels[name] = sum(int(part["late_labels"][name]) for part in parts)
    return {
        "offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())],
        "late_labels": labels,
        "stats": _summed([part["stats"] for part in parts]),
        "counters": {
            **_summed([part["counters"] for part in parts]),
            "drifts": list(parts[0]["counters"]["drifts"]),
        },
    }


def _summed(dicts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Numbers added key by key (one level of nested dicts too); lists from the first."""
    out: dict[str, Any] = {}
    for key, value in dicts[0].items():
        if isinstance(value, Mapping):
            keys = {k for d in dicts for k in d.get(key, {})}
            out[key] = {k: sum(int(d.get(key, {}).get(k, 0)) for d in dicts) for k in keys}
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = sum(d[key] for d in dicts)
        else:
            out[key] = value
    return out
