"""Handles for work a learner leaves running on its worker thread.

Overlap is explicit: a method that starts work returns a handle, and whoever needs the work's
result waits on that handle, once, in one place. Nothing reads a model or a buffer that such
work writes before its handle has been waited on; the learner refuses to start new work or to
change its state while a step it began is still unwaited (:class:`StepPending`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

__all__ = ["Pending", "PendingStep", "StepPending"]

T = TypeVar("T")


class StepPending(RuntimeError):
    """The learner was asked to read or change its state while a step it began still runs:
    wait on the step's :class:`PendingStep` first."""


class Pending(Generic[T]):
    """Work begun elsewhere: :meth:`wait` blocks until it is done and returns its result.

    ``finish`` blocks for the work and returns its result; it runs once, at the first
    :meth:`wait`, and later calls return the same result. Work that was done at once is a
    handle made with ``finish=None`` and its ``result``.
    """

    __slots__ = ("_finish", "_result")

    def __init__(self, finish: Callable[[], T] | None, result: T) -> None:
        self._finish = finish
        self._result = result

    @property
    def done(self) -> bool:
        """Whether :meth:`wait` has run (or there was nothing to wait for)."""
        return self._finish is None

    def wait(self) -> T:
        if self._finish is not None:
            finish, self._finish = self._finish, None
            self._result = finish()
        return self._result


class PendingStep(Pending[bool]):
    """A prequential step: its scoring at once, its learning once waited on.

    ``prediction`` [B, C] probabilities or [B] values and ``loss`` [B] come from the weights
    before the step's updates; ``hidden`` [B, H] is the error memory's key. :meth:`wait`
    returns whether every update of the step applied (False: one was skipped as non-finite).
    """

    __slots__ = ("hidden", "loss", "prediction")

    def __init__(
        self,
        prediction: np.ndarray,
        loss: np.ndarray,
        hidden: np.ndarray,
        finish: Callable[[], bool] | None,
        learned: bool = True,
    ) -> None:
        super().__init__(finish, learned)
        self.prediction = prediction
        self.loss = loss
        self.hidden = hidden
