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
- :class:`LinearRates`: that model at two SGD rates (``linear.lr``, ``linear.slow_lr``), each
  stepping on its own prediction, mixed by exponential weights on their discounted log loss
  (all rates in one kernel call for the prediction and one for the steps):
  stationary linear concepts (waveform, SEA) want the slow rate, drifting ones (a rotating
  hyperplane) the fast one, and no single rate wins both (decision 0052);
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

__all__ = ["LinearMixture", "LinearModel", "LinearPrediction", "LinearRates", "LinearWeights"]


@dataclass(frozen=True, slots=True)
class LinearWeights:
    """What the export needs of the mixture: each rate's weights, the rates' shares and the
    linear model's share.

    ``numeric`` [rates, numeric slots, W], ``buckets`` [rates, hash buckets, W] (row 0 zero),
    ``bias`` [rates, W], ``rate_shares`` [rates] (summing to 1), ``share`` the linear model's
    weight in the mix."""

    numeric: np.ndarray
    buckets: np.ndarray
    bias: np.ndarray
    rate_shares: np.ndarray
    share: float


@dataclass(frozen=True, slots=True)
class LinearPrediction:
    """The linear model's prediction of some rows: ``mixed`` [B, W], the rates' mix, and
    ``each`` [rates, B, W], every rate's own (what each one learns from)."""

    mixed: np.ndarray
    each: np.ndarray


class LinearModel:
    """One rate of the softmax regression over standardised numeric slots and categorical
    buckets: its weights and SGD rate ``lr``; :class:`LinearRates` predicts and steps every
    rate by a :class:`~streamlearn.kernels.backend.LinearKernel` (``kernel``: compiled where
    the library loads).

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

    def bind(self, flat: np.ndarray) -> None:
        """Keep the weights in ``flat`` (a float32 view of this model's size, e.g. part of a
        buffer shared by several models), taking its current values."""
        if flat.shape != self.flat.shape or flat.dtype != np.float32:
            raise ValueError(f"want {self.flat.size} float32 weights, got {flat.size}")
        self.flat = flat
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

    def state_dict(self) -> dict[str, Any]:
        return {"flat": self.flat.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        flat = np.asarray(state["flat"], dtype=np.float32)
        if flat.shape != self.flat.shape:
            raise ValueError(f"linear model state has {flat.size} weights, want {self.flat.size}")
        self.flat[:] = flat


class LinearRates:
    """The linear model at one or more SGD rates, each stepping on its own prediction, their
    predictions mixed by exponential weights on discounted log loss (η = 1: the Bayesian
    mixture of the rates with forgetting; Cesa-Bianchi & Lugosi, *Prediction, Learning, and
    Games*, 2006, ch. 3: log loss is exp-concave at η = 1)::

        L_k ← β^n·L_k + Σ_i −log p_k(y_i)      w_k = exp(−L_k) / Σ_j exp(−L_j)

    The models' weights are one float32 array (``flat``, rate after rate; ``by_rate`` views it
    [rates, rows, W]) so that a scaled-out worker averages them in one operation and the kernel
    takes every rate in one call; ``loss`` holds the L_k.
    """

    def __init__(self, models: list[LinearModel], discount: float) -> None:
        self.models, self.discount = models, discount
        self.flat = np.concatenate([m.flat for m in models])
        self._bind()
        self.loss = np.zeros(len(models))
        self.shares = np.full(len(models), 1.0 / len(models))

    def _bind(self) -> None:
        """Each model's weights as its slice of ``flat``; the views and per-rate values the
        kernel reads."""
        models = self.models
        size = models[0].flat.size
        for k, model in enumerate(models):
            model.bind(self.flat[k * size : (k + 1) * size])
        self.by_rate = self.flat.reshape(len(models), -1, models[0].width)
        self.lrs = np.array([model.lr for model in models], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles hold ``flat`` and the models (the views are made again)."""
        state = dict(self.__dict__)
        for derived in ("by_rate", "lrs"):
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled models hold copies of their slices: bound to ``flat`` again."""
        self.__dict__.update(state)
        self._bind()

    @property
    def kernel(self) -> LinearKernel:
        """The kernel that computes every rate (the models': one kernel)."""
        return self.models[0].kernel

    @property
    def slow_share(self) -> float:
        """The second (slow) rate's share; 0 with one rate."""
        return float(self.shares[1]) if len(self.shares) > 1 else 0.0

    def predict(self, rows: LinearRows, active: int) -> LinearPrediction:
        """Each rate's probabilities and their mix for ``rows`` over the first ``active``
        class slots (zero elsewhere; all zero with none: :class:`LinearKernel`)."""
        each, mixed = self.kernel.predict(self, rows, active)
        return LinearPrediction(mixed, each)

    def learn(
        self, rows: LinearRows, target: np.ndarray, prediction: LinearPrediction, active: int
    ) -> None:
        """Labelled rows (class slots ``target`` [B], below ``active``) the rates predicted
        ``prediction``: the rates' losses, then one SGD step of each on its own prediction."""
        if len(target) and active:
            self.set_loss(self.kernel.learn(self, rows, active, target, prediction.each))

    def set_loss(self, loss: np.ndarray) -> None:
        """Take the discounted losses as given (ranks of a scaled-out worker agree on their
        average) and the shares they make."""
        self.loss = np.asarray(loss, dtype=np.float64)
        weight = np.exp(self.loss.min() - self.loss)
        self.shares = weight / weight.sum()

    def weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the rates' numeric [rates, slots, W], bucket [rates, buckets, W] and
        bias [rates, W] weights."""
        models = self.models
        return (
            np.stack([m.numeric for m in models]),
            np.stack([m.buckets for m in models]),
            np.stack([m.bias for m in models]),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"flat": self.flat.copy(), "loss": self.loss.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A state of the same rates, or one saved with a single rate (before the rates: each
        rate starts from its weights)."""
        flat = np.asarray(state["flat"], dtype=np.float32)
        size = self.models[0].flat.size
        if flat.size == size and "loss" not in state:
            self.flat[:] = np.tile(flat, len(self.models))
            self.set_loss(np.zeros(len(self.models)))
            return
        if flat.shape != self.flat.shape:
            raise ValueError(f"linear model state has {flat.size} weights, want {self.flat.size}")
        loss = np.asarray(state["loss"], dtype=np.float64)
        if loss.shape != self.loss.shape:
            raise ValueError(f"linear model state has {loss.size} rates, want {self.loss.size}")
        self.flat[:] = flat
        self.set_loss(loss)


class LinearMixture:
    """The linear model and its share in the base prediction (see the module docstring)."""

    def __init__(self, model: LinearRates, hedge: Hedge) -> None:
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
        rates = [settings.lr] + ([settings.slow_lr] if settings.slow_lr else [])
        models = [LinearModel(numeric_slots, buckets, width, lr, kernel) for lr in rates]
        return cls(LinearRates(models, hedge.discount), hedge)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Mixtures pickled before the rates hold one model: it becomes the only rate."""
        if isinstance(state["model"], LinearModel):
            state["model"] = LinearRates([state["model"]], state["hedge"].discount)
        self.__dict__.update(state)

    @property
    def share(self) -> float:
        """The linear model's weight in the base prediction."""
        return self.hedge.weight

    def mix(
        self, network: np.ndarray, rows: LinearRows, active: int
    ) -> tuple[np.ndarray, LinearPrediction]:
        """(the base prediction, the linear model's own) for ``rows`` (numeric values and
        bucket ids of the slots in use) the network predicted ``network`` [B, W], over the
        first ``active`` class slots, the two mixed as the error memory's gate mixes its
        predictions."""
        linear = self.model.predict(rows, active)
        return gated(network, linear.mixed, self.share), linear

    def learn(
        self,
        rows: LinearRows,
        target: np.ndarray,
        network: np.ndarray,
        linear: LinearPrediction,
        active: int,
    ) -> None:
        """Labelled rows, after :meth:`mix` with the same ``active``: the share learns from
        both predictions' losses, then the linear model from the rows."""
        self.hedge.update(target, network, linear.mixed)
        self.model.learn(rows, target, linear, active)

    def weights(self) -> LinearWeights:
        numeric, buckets, bias = self.model.weights()
        return LinearWeights(numeric, buckets, bias, self.model.shares.copy(), self.share)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "hedge": self.hedge.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.hedge.load_state_dict(state["hedge"])
