"""MemoryStage: how the prequential loop uses the error memory, and when its keys are renewed.

Per labelled micro-batch: the learner's base prediction (made before it learns) is compensated
by :class:`~streamlearn.core.memory.error_memory.ErrorMemory`, then the memory stores
(hidden, y, base prediction). Score-only rows are compensated the same way. The drift
detector keeps watching the *base* model's loss. With ``gate`` on, what is served is
``(1 − w)·base + w·compensated``, ``w`` the
:class:`~streamlearn.core.memory.gate.CompensationGate`'s weight, learned from the labelled
rows' losses under both predictions before the memory stores them.

Keys are the model's hidden representation, which moves as the model trains, fastest right
after a drift, when the LR is re-warmed. The rule (measured in benchmarks/error_memory.py, see
DESIGN.md "Error memory"):

- a small ring buffer (``size`` samples, a few micro-batches) bounds how stale a key can be;
- on a detected drift the memory is cleared (its labels belong to the old concept);
- for ``rekey_after_drift`` steps after a detected drift, and every ``rekey_every`` steps
  otherwise (0 = never), the stored inputs are re-encoded with the current model, refreshing
  both the keys and the stored base predictions (top-k store only: a sketch of sums cannot be
  re-encoded, so the LSH store relies on the reset and its ``decay``).

Where the learner's updates overlap (``learner.overlap``), :meth:`MemoryStage.refresh` leaves
the re-encoding running on the learner's worker thread while the caller goes on with the next
batch's features. The stage owns that work's handle and waits on it in one place, before it
next reads or writes its ring (:meth:`MemoryStage.ring_ready`); so does whoever changes the
weights outside a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from streamlearn.core.learner import OnlineLearner
from streamlearn.core.memory.compensation import gated
from streamlearn.core.memory.error_memory import ErrorMemory, TopKStore
from streamlearn.core.memory.gate import CompensationGate
from streamlearn.core.model import TabularNet
from streamlearn.core.pending import Pending
from streamlearn.kernels.torch_memory import unit_rows
from streamlearn.settings import MemorySettings

__all__ = ["MemoryStage"]


class MemoryStage:
    """Compensates the learner's predictions with an ErrorMemory and keeps the memory fresh."""

    def __init__(
        self,
        memory: ErrorMemory,
        learner: OnlineLearner,
        settings: MemorySettings,
    ) -> None:
        """``memory`` beside ``learner`` (whose model keys it and whose forward re-keys it;
        the ring mirrors the model's standardised inputs for re-keying); ``settings``: the
        re-key and reset rules. :meth:`from_settings` builds the memory."""
        self.settings = settings
        self.learner = learner
        self.memory = memory
        store = self.memory.storage
        self._ring: TopKStore | None = None
        if isinstance(store, TopKStore) and (settings.rekey_every or settings.rekey_after_drift):
            self._ring = store  # inputs are mirrored slot for slot with the ring buffer
            model, device = learner.model, learner.device
            self._num = torch.zeros((store.size, model.numeric_slots), device=device)
            self._cat = torch.zeros(
                (store.size, model.categorical_slots), dtype=torch.long, device=device
            )
        self.gate: CompensationGate | None = None
        if settings.gate:
            self.gate = CompensationGate(
                1.0 - 1.0 / settings.gate_horizon,
                settings.gate_eta,
                (-settings.gate_limit_against, settings.gate_limit_for),
                settings.gate_prior,
            )
        # the last compensated rows: (hidden, unit keys, base, full compensation), for store()
        self._keys: tuple[np.ndarray, torch.Tensor, np.ndarray, np.ndarray] | None = None
        self._full: tuple[torch.Tensor, ...] | None = None  # views of the full ring's slots
        self._rekeying: Pending[None] | None = None  # a re-keying left on the worker thread
        self.steps = 0
        self.since_drift = -1  # steps since the last detected drift; -1 = none yet
        self.resets = 0
        self.rekeys = 0

    @classmethod
    def from_settings(cls, settings: MemorySettings, learner: OnlineLearner) -> MemoryStage:
        """The memory ``settings`` describe, keyed by ``learner``'s model, on its device and
        computing with its backend's memory kernel (the compiled top-k on the CPU); λ is
        ``lam``, or ``lam_regression`` for a regression learner."""
        model = learner.model
        memory = ErrorMemory(
            model.hidden_dim,
            int(model.class_mask.shape[0]),
            kind=settings.kind,
            lam=settings.lam_regression if learner.regression else settings.lam,
            gamma=settings.gamma,
            tau=settings.tau,
            size=settings.size,
            k=settings.k,
            tables=settings.tables,
            bits=settings.bits,
            decay=settings.decay,
            store=settings.store,
            error_threshold=settings.error_threshold,
            regression=learner.regression,
            device=learner.device,
            seed=learner.settings.seed,
            kernel=learner.backend.memory,
        )
        return cls(memory, learner, settings)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles and copies see the memory with its re-keying done (and no views: a pickle
        would copy them apart from the ring)."""
        self.ring_ready()
        return {**self.__dict__, "_full": None, "_rekeying": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Pickles of releases before the gate compensate in full, as they did."""
        state.setdefault("gate", None)
        self.__dict__.update(state)

    def ring_ready(self) -> None:
        """Wait for a re-keying left running (it reads the weights and writes the ring's keys
        and base values): before the ring is touched, and before the weights are changed
        other than by a step (a scaled-out worker's round)."""
        if self._rekeying is not None:
            self._rekeying.wait()
            self._rekeying = None

    @property
    def weight(self) -> float:
        """The compensation's share in what is served (1 without a gate)."""
        return 1.0 if self.gate is None else self.gate.weight

    # -- scoring ----------------------------------------------------------------------------
    def compensate(self, hidden: np.ndarray, base: np.ndarray) -> np.ndarray:
        """The base prediction corrected by the memory, in the gate's share (unchanged while
        the memory is empty)."""
        self.ring_ready()
        if len(self.memory) == 0:
            return base
        compensated, keys = self.memory.compensate_keyed(hidden, base)
        self._keys = (hidden, keys, base, compensated)  # keys normalised once for store()
        return gated(base, compensated, self.weight)

    # -- learning ---------------------------------------------------------------------------
    def store(
        self,
        num: np.ndarray,
        cat: np.ndarray,
        hidden: np.ndarray,
        target: np.ndarray,
        base: np.ndarray,
        drifted: bool,
    ) -> None:
        """After a learned batch: the gate learns from the rows' losses with and without the
        compensation (of the prediction :meth:`compensate` was given), then the reset rule,
        then the rows are stored with ``base``, the network's own prediction (what re-keying
        recomputes). Re-keying reads the model: :meth:`refresh` once the batch's updates are
        done."""
        self.ring_ready()
        self.steps += 1
        keys = None
        if self._keys is not None and self._keys[0] is hidden:  # these rows were compensated
            keys = self._keys[1]
            if self.gate is not None:
                self.gate.update(target, *self._keys[2:])
        self._keys = None
        if drifted:
            self.on_drift()
        elif self.since_drift >= 0:
            self.since_drift += 1
        mirror = None if self._ring is None else (self._num, self._cat, num, cat)
        self.memory.update(hidden, target, base, keys, mirror)

    def on_drift(self) -> None:
        """A drift was detected: clear the memory (``reset_on_drift``), re-key every step for
        ``rekey_after_drift`` steps, restart the gate's evidence."""
        self.ring_ready()
        self.since_drift = 0
        if self.gate is not None:
            self.gate.restart()
        if self.settings.reset_on_drift:
            self.memory.reset()
            self.resets += 1

    def refresh(self) -> Pending[None]:
        """Re-key the stored inputs with the current model when the rule says so, on the
        learner's worker thread where its updates overlap. The stage waits on the handle
        returned before it next touches its ring; a caller reading the ring directly waits
        on it first."""
        if self._ring is not None and self._rekey_due():
            self.ring_ready()
            pending = self._rekey(self.learner.begin_forward_seen_into)
            self._rekeying = None if pending is None or pending.done else pending
        return self._rekeying or Pending(None, None)

    def _rekey_due(self) -> bool:
        s = self.settings
        if 0 <= self.since_drift < s.rekey_after_drift:
            return True
        return bool(s.rekey_every) and self.steps % s.rekey_every == 0

    def rekey(self) -> None:
        """Re-encode every stored input with the current model: fresh keys and base values."""
        self.ring_ready()
        self._rekey(self.learner.forward_seen_into)

    def _rekey(self, forward: Callable[..., Pending[None] | None]) -> Pending[None] | None:
        """Re-encode with ``forward``: the learner's forward_seen_into or its begin_ form (whose
        handle this returns)."""
        ring = self._ring
        if ring is None or ring.filled == 0:
            return None
        self.rekeys += 1
        return forward(*self._stored(ring))

    def _stored(self, ring: TopKStore) -> tuple[torch.Tensor, ...]:
        """(inputs, buckets, base values, keys) of the filled slots: views, made once for the
        full ring (the usual case)."""
        n, w = ring.filled, ring.width
        if n == ring.size and self._full is not None:
            return self._full
        views = (self._num[:n], self._cat[:n], ring.values[:n, w:], ring.keys[:n])
        if n == ring.size:
            self._full = views
        return views

    @torch.no_grad()
    def state_for(self, model: TabularNet | None) -> tuple[dict[str, Any], bool]:
        """The memory's state and whether it was re-keyed: with ``model`` (e.g. the last
        exported one) the stored inputs are re-encoded by it, so a replica serving that model
        retrieves in its own hidden space. Needs the top-k store's kept inputs; the live
        memory is not changed. ``weight``: the gate's, which a replica applies too."""
        self.ring_ready()
        state = {**self.memory.state_dict(), "weight": self.weight}
        ring = self._ring
        if model is None or ring is None or ring.filled == 0:
            return state, False
        order = ring.order()
        pred, hidden = model.from_values(self._num[order], self._cat[order])
        state["keys"] = unit_rows(hidden.float()).cpu().numpy()
        state["base"] = pred.float().view(len(order), ring.width).cpu().numpy()
        return state, True

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain arrays and scalars: the memory, the inputs kept for re-keying, counters."""
        self.ring_ready()
        state = {
            "memory": self.memory.state_dict(),
            "steps": self.steps,
            "since_drift": self.since_drift,
            "model_step": self.learner.steps,  # the learner step the keys belong to
        }
        if self.gate is not None:
            state["gate"] = self.gate.state_dict()
        if self._ring is not None:
            order = self._ring.order()
            state["num"] = self._num[order].cpu().numpy()
            state["cat"] = self._cat[order].cpu().numpy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ring_ready()
        self.memory.load_state_dict(state["memory"])
        self.steps = int(state["steps"])
        self.since_drift = int(state["since_drift"])
        if self.gate is not None and "gate" in state:
            self.gate.load_state_dict(state["gate"])
        if self._ring is not None and "num" in state:
            n = self._ring.filled  # the ring was rewritten oldest-first from slot 0
            self._num[:n] = torch.as_tensor(np.asarray(state["num"]), dtype=torch.float32)[-n:]
            self._cat[:n] = torch.as_tensor(np.asarray(state["cat"]), dtype=torch.long)[-n:]
