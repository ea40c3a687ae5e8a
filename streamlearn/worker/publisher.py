"""Publisher: the worker's export stage — when to export, the quality gate, the registry.

The worker calls two methods and nothing else (the seam; the loop itself lives in worker.py):

- :meth:`Publisher.maybe_publish` after every micro-batch: exports every ``every_steps``
  batches, ``after_drift_steps`` batches after a detected drift (the recovery export) and as
  soon as the gate has its rows after a switch to a past model (core/experts.py), if
  the :class:`~streamlearn.export.gate.QualityGate` passes, and publishes to the registry;
- :meth:`Publisher.push_memory` after every micro-batch: pushes the error-memory snapshot at
  most every ``memory_push_s`` seconds, re-keyed with the last model it published (replicas
  serve that model, so they look samples up in its hidden space).

Neither raises for an export refused, a gate failure or an unreachable registry: each is
counted and reported in the :class:`PublishResult`, and the worker keeps learning.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamlearn.core.memory.stage import MemoryStage
from streamlearn.core.model import TabularNet
from streamlearn.core.prequential import Prequential
from streamlearn.errors import ArtifactError, ExportError, RegistryError
from streamlearn.export.artifact import ModelBundle, load_bundle
from streamlearn.export.gate import QualityGate
from streamlearn.export.memory import encode_memory
from streamlearn.export.onnx import export_prequential
from streamlearn.registry.base import Registry
from streamlearn.settings import ExportSettings

__all__ = ["PublishResult", "Publisher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What one :meth:`Publisher.maybe_publish` call did.

    ``reason``: published | not_due | waiting_for_rows | gated | export_failed | registry_error
    """

    published: bool
    reason: str
    trigger: str = ""  # schedule | drift_recovery | expert_switch | forced
    version: int | None = None
    candidate_loss: float = math.nan
    published_loss: float = math.nan
    parity_error: float = math.nan
    seconds: float = 0.0
    detail: str = ""


class Publisher:
    """Exports, gates and publishes the learner's model; pushes its error memory."""

    def __init__(
        self,
        registry: Registry,
        settings: ExportSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        push_after_batch: bool = True,
    ) -> None:
        """``push_after_batch``: :meth:`after_batch` pushes the error memory when due; False
        where the caller pushes (a scaled-out worker's rank 0 pushes every rank's memory)."""
        self.registry = registry
        self.push_after_batch = push_after_batch
        self.settings = settings
        self._clock = clock
        self._gate: QualityGate | None = None
        self._attached: Prequential | None = None
        self._last_step: int | None = None  # step of the last export attempt
        self._drift_step: int | None = None  # step a drift was seen, until its export
        self._drifts_seen = 0
        self._switches_seen = 0
        self._switched = False  # a switch to a past model, until its export
        self._incumbent: ModelBundle | None = None
        self._last_push = -math.inf
        self.last_version: int | None = None
        self._published_model: TabularNet | None = None  # a copy, to re-key memory pushes
        self.published = 0
        self.gated = 0
        self.export_failures = 0
        self.registry_errors = 0
        self.memory_pushes = 0

    def attach(self, prequential: Prequential) -> None:
        """Watch ``prequential``'s learned batches (done by the first maybe_publish too)."""
        if self._attached is prequential:
            return
        self._gate = QualityGate(
            self.settings.gate_window, self.settings.gate_margin, prequential.regression
        )
        prequential.observers.append(self._gate.observe)
        self._attached = prequential
        self._drifts_seen = len(prequential.drifts)
        self._switches_seen = prequential.expert_switches

    # -- models ---------------------------------------------------------------------------
    def _trigger(self, prequential: Prequential, step: int, force: bool) -> str:
        if len(prequential.drifts) > self._drifts_seen:
            self._drifts_seen = len(prequential.drifts)
            self._drift_step = step
            assert self._gate is not None
            self._gate.clear()  # judge on the new concept only
        if prequential.expert_switches > self._switches_seen:
            self._switches_seen = prequential.expert_switches
            self._switched = True
        s = self.settings
        if force:
            return "forced"
        if self._switched:  # the model in use changed at once: serve it as soon as it is judged
            return "expert_switch"
        if self._drift_step is not None and s.after_drift_steps:
            # mid-adaptation: no scheduled export until the recovery export is due
            return "drift_recovery" if step - self._drift_step >= s.after_drift_steps else ""
        if self._last_step is None or step - self._last_step >= s.every_steps:
            return "schedule"
        return ""

    def _published_bundle(self) -> ModelBundle | None:
        """The registry's current version, loaded (cached by version)."""
        version = self.registry.current()
        if version is None:
            return None
        if self._incumbent is None or self._incumbent.version != version:
            stored = self.registry.fetch(version)
            try:
                self._incumbent = load_bundle(version, stored.onnx, stored.meta)
            except ArtifactError as exc:  # an unusable incumbent cannot veto a good candidate
                log.warning("published version %s unusable for the gate: %s", version, exc)
                return None
        return self._incumbent

    def maybe_publish(
        self, prequential: Prequential, step: int, *, force: bool = False
    ) -> PublishResult:
        """Export and publish if due and the gate passes; ``step`` counts micro-batches."""
        self.attach(prequential)
        gate = self._gate
        assert gate is not None
        trigger = self._trigger(prequential, step, force)
        if not trigger:
            return PublishResult(False, "not_due")
        if gate.rows < (1 if force else self.settings.min_rows):
            return PublishResult(False, "waiting_for_rows", trigger, detail=f"{gate.rows} rows")
        start = self._clock()
        try:
            incumbent = self._published_bundle()
        except (RegistryError, ArtifactError) as exc:
            return self._registry_failed(step, trigger, exc)
        self._last_step, self._drift_step, self._switched = step, None, False
        verdict = gate.judge(incumbent)
        losses = {
            "candidate_loss": verdict.candidate_loss,
            "published_loss": verdict.published_loss,
        }
        if not verdict.passed:
            self.gated += 1
            log.info("publish gated at step %d: %s", step, losses)
            return PublishResult(False, "gated", trigger, **losses, seconds=self._clock() - start)
        try:
            artifact = export_prequential(
                prequential,
                opset=self.settings.opset,
                tolerance=self.settings.tolerance,
                parity_rows=self.settings.parity_rows,
                seed=step,
                extra={
                    "learner_step": prequential.learner.steps,
                    "seen": prequential.seen,
                    "worker_step": step,
                    "trigger": trigger,
                    "gate": {**_finite(losses), "rows": verdict.rows},
                },
            )
        except ExportError as exc:
            self.export_failures += 1
            log.warning("export refused at step %d: %s", step, exc)
            return PublishResult(False, "export_failed", trigger, **losses, detail=str(exc))
        try:
            version = self.registry.publish(artifact)
        except RegistryError as exc:
            return self._registry_failed(step, trigger, exc)
        stamped = artifact.with_version(version)
        try:
            self._incumbent = load_bundle(version, stamped.onnx, stamped.meta_bytes())
        except ArtifactError:  # cannot happen for a fresh export; refetch next time
            self._incumbent = None
        gate.clear()
        self.published += 1
        self.last_version = version
        self._published_model = copy.deepcopy(prequential.learner.model)
        return PublishResult(
            True,
            "published",
            trigger,
            version,
            **losses,
            parity_error=float(artifact.meta["parity_error"]),
            seconds=self._clock() - start,
        )

    def _registry_failed(self, step: int, trigger: str, exc: Exception) -> PublishResult:
        """Counted; retried at the next scheduled export, not on every batch."""
        self.registry_errors += 1
        self._last_step = step
        log.warning("registry unavailable at step %d: %s", step, exc)
        return PublishResult(False, "registry_error", trigger, detail=str(exc))

    # -- error memory ---------------------------------------------------------------------
    def memory_due(self) -> bool:
        """Whether ``memory_push_s`` passed since the last push."""
        return self._clock() - self._last_push >= self.settings.memory_push_s

    def push_memory(
        self, prequential: Prequential, *, force: bool = False, stage: MemoryStage | None = None
    ) -> bool:
        """Push the error-memory snapshot (with the neighbour vote) if ``memory_push_s``
        passed; True when pushed. ``stage``: push that memory instead of the chain's (every
        rank's rows, gathered; the vote is this rank's)."""
        stage = prequential.memory if stage is None else stage
        neighbours = prequential.neighbours
        if stage is None and neighbours is None:
            return False
        if not (force or self.memory_due()):
            return False
        self._last_push = self._clock()
        try:
            blob = encode_memory(
                stage, self.last_version, self._published_model, neighbours, prequential.learner
            )
            self.registry.push_memory(blob)
        except RegistryError as exc:
            self.registry_errors += 1
            log.warning("error-memory push failed: %s", exc)
            return False
        self.memory_pushes += 1
        return True

    def after_batch(self, prequential: Prequential, batches: int) -> PublishResult:
        """The worker's export hook: publish when due, push the error memory when due."""
        result = self.maybe_publish(prequential, batches)
        if self.push_after_batch:
            self.push_memory(prequential)
        if result.published:
            log.info(
                "published version %s (%s, loss %.4f)",
                result.version,
                result.trigger,
                result.candidate_loss,
            )
        return result


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: None for a loss that is not known."""
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}
