"""Every rank's error memory in one snapshot, so serving compensates with every partition's
recent errors.

Each rank's memory holds the rows of its own partitions. Before a push, rank 0 gathers every
rank's ring (keys, labels, base predictions and, for re-keying, the inputs) and builds a
temporary stage as large as all of them together; the publisher re-keys it with the published
model and pushes it like its own. The live memories are not touched, so training and
compensation on each rank go on as before. The LSH sketch keeps sums, not rows: with it rank 0
pushes its own memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamlearn.core.memory.stage import MemoryStage
from streamlearn.core.prequential import Prequential
from streamlearn.worker.distributed.group import RankGroup

__all__ = ["gathered_memory"]

_ROWS = ("keys", "y", "base")


def gathered_memory(group: RankGroup, preq: Prequential) -> MemoryStage | None:
    """Collective: on rank 0 a stage with every rank's stored rows (oldest first, rank by rank),
    else None; rank 0's own stage where rows cannot be merged (LSH, or no memory)."""
    stage = preq.memory
    ring = stage is not None and stage.settings.kind == "topk"
    parts = group.all_gather_object(stage.state_dict() if ring and stage else None)
    if not group.leader or not ring or stage is None:
        return stage if group.leader else None
    memory = dict(parts[0]["memory"])
    for name in _ROWS:
        memory[name] = np.concatenate([np.asarray(p["memory"][name]) for p in parts])
    memory["writes"] = sum(int(p["memory"]["writes"]) for p in parts)
    state: dict[str, Any] = {**parts[0], "memory": memory}
    if all("num" in p for p in parts):
        for name in ("num", "cat"):
            state[name] = np.concatenate([np.asarray(p[name]) for p in parts])
    rows = max(1, len(memory["keys"]))
    settings = stage.settings.model_copy(update={"size": rows})
    merged = MemoryStage.from_settings(settings, preq.learner)
    merged.load_state_dict(state)
    return merged
