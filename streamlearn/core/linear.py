"""LinearMixture: a linear model learned beside the network, mixed with it by exponential weights.

On streams whose concept is (nearly) linear in the inputs, or noisy enough that a linear model's
low variance wins, a logistic regression trained by plain SGD one step per row is more
accurate than the network (with its wide term) at the same events: river's StandardScaler |
LogisticRegression leads the suite's hyperplane, waveform and sparse-categorical streams. A
network that also learns the linear part does not make up for it (decision 0033's wide term:
one optimiser, one learning rate, the network's noise). So a classifier keeps, beside the
network:

- :class:`LinearModel`: a softmax regression over the network's own inputs (the standardised
  numeric slots and one weight row per categorical hash bucket, bucket 0, missing, fixed at
  zero), over the class slots switched on; one SGD step per (sub-)batch on the summed
  gradient of the log loss (``lr`` per row, as a per-row step would take);
- a :class:`~streamlearn.core.hedge.Hedge` with the network first and the linear model second:
  the base prediction is ``(1 − w)·p_network + w·p_linear``, ``w`` learned from both models'
  prequential 0/1 losses. Where neither wins clearly the two are averaged, which on some
  streams beats both (benchmarks/results/sweep-linear-enabled.md).

The mixed prediction is the chain's base prediction: the error memory compensates it, the
quality gate judges it, and the export computes it (``export/onnx.py``'s ``ServedNet``), so a
replica serves what the worker scored. The drift detector, the expert pool and the memory's
stored base values stay the network's own. Classification only: on the suite's regression
streams a linear model is far behind the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.core.hedge import Hedge
from streamlearn.core.memory.compensation import gated
from streamlearn.kernels.backend import LinearKernel, LinearRows
from streamlearn.settings import LinearSettings

__all__ = ["LinearMixture", "LinearModel", "LinearWeights"]


@dataclass(frozen=True, slots=True)
class LinearWeights:
    """What the export needs of the mixture: the linear model's weights and its share.

    ``numeric`` [numeric slots, W], ``buckets`` [hash buckets, W] (row 0 zero), ``bias`` [W],
    ``share`` the linear model's weight in the mix."""

    numeric: np.ndarray
    buckets: np.ndarray
    bias: np.ndarray
    share: float


class LinearModel:
    """Softmax regression over standardised numeric slots and categorical buckets, by SGD,
    computed by a :class:`~streamlearn.kernels.backend.LinearKernel` (compiled where the
    library loads).

    Its weights are one float32 array (``flat``) that ``weights`` [numeric slots + buckets +
    1, W] and the parts view, so a scaled-out worker averages them in one operation. Callers
    pass the slots in use only (a prefix of the columns, as the network's active widths): a
    slot never set has no evidence.
    """

    def __init__(
        self, numeric_slots: int, buckets: int, width: int, lr: float, kernel: LinearKernel
    ) -> None:
        self.lr, self.kernel = lr, kernel
        self.numeric_slots, self.width = numeric_slots, width
        self.flat = np.zeros((numeric_slots + buckets + 1) * width, dtype=np.float32)
        self._view()

    def _view(self) -> None:
        """The parts as views of ``flat``: weights [rows, W], numeric [slots, W], buckets
        [buckets, W], bias [W]."""
        self.weights = self.flat.reshape(-1, self.width)
        self.numeric = self.weights[: self.numeric_slots]
        self.buckets = self.weights[self.numeric_slots : -1]
        self.bias = self.weights[-1]

    def __getstate__(self) -> dict[str, Any]:
        """Pickles hold ``flat`` alone (a pickled view would come back as a copy)."""
        state = dict(self.__dict__)
        for view in ("weights", "numeric", "buckets", "bias"):
            del state[view]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._view()

    def predict(self, rows: LinearRows, active: int) -> np.ndarray:
        """Probabilities [B, W] for ``rows`` (numeric values and bucket ids of the slots in
        use) over the first ``active`` class slots (zero elsewhere; all zero with none)."""
        return self.kernel.predict(self, rows, active)

    def learn(
        self,
        rows: LinearRows,
        target: np.ndarray,
        linear: np.ndarray,
        active: int,
    ) -> None:
        """One SGD step on labelled rows (class slots ``target`` [B], below ``active``) whose
        prediction was ``linear``: the log loss's gradient, summed over the rows."""
        if len(target) and active:
            self.kernel.learn(self, rows, active, target, linear)

    def state_dict(self) -> dict[str, Any]:
        return {"flat": self.flat.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        flat = np.asarray(state["flat"], dtype=np.float32)
        if flat.shape != self.flat.shape:
            raise ValueError(f"linear model state has {flat.size} weights, want {self.flat.size}")
        self.flat[:] = flat


class LinearMixture:
    """The linear model and its share in the base prediction (see the module docstring)."""

    def __init__(self, model: LinearModel, hedge: Hedge) -> None:
        self.model = model
        self.hedge = hedge  # its weight is the linear model's share

    @classmethod
    def from_settings(
        cls,
        settings: LinearSettings,
        numeric_slots: int,
        buckets: int,
        width: int,
        kernel: LinearKernel,
    ) -> LinearMixture:
        hedge = Hedge.from_settings(settings)
        return cls(LinearModel(numeric_slots, buckets, width, settings.lr, kernel), hedge)

    @property
    def share(self) -> float:
        """The linear model's weight in the base prediction."""
        return self.hedge.weight

    def mix(
        self, network: np.ndarray, rows: LinearRows, active: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(the base prediction, the linear model's own) for ``rows`` (numeric values and
        bucket ids of the slots in use) the network predicted ``network`` [B, W], over the
        first ``active`` class slots, the two mixed as the error memory's gate mixes its
        predictions."""
        linear = self.model.predict(rows, active)
        return gated(network, linear, self.share), linear

    def learn(
        self,
        rows: LinearRows,
        target: np.ndarray,
        network: np.ndarray,
        linear: np.ndarray,
        active: int,
    ) -> None:
        """Labelled rows, after :meth:`mix` with the same ``active``: the share learns from
        both predictions' losses, then the linear model from the rows."""
        self.hedge.update(target, network, linear)
        self.model.learn(rows, target, linear, active)

    def weights(self) -> LinearWeights:
        m = self.model
        return LinearWeights(m.numeric.copy(), m.buckets.copy(), m.bias.copy(), self.share)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "hedge": self.hedge.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.hedge.load_state_dict(state["hedge"])
