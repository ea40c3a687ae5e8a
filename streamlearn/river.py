"""River-compatible estimators: the prequential learner behind river's one-row API.

A network learns best from micro-batches, so ``learn_one`` encodes its row at once (nothing
keeps the caller's dict) and buffers it; every ``batch_size`` rows go through one prequential
step. ``learn_many`` pushes rows through the same buffer, so both leave identical state. A label
is known as a class as soon as it is buffered, before the model has trained on it. Constructor
arguments are the whole configuration (river style), validated into Settings sections directly
rather than through ``load_settings``: a ``STREAMLEARN_*`` variable never overrides them.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ValidationError
from river import base

from streamlearn.core.features import EncodedFeatures
from streamlearn.core.prequential import Prequential
from streamlearn.errors import ConfigError
from streamlearn.settings import DriftSettings, FeatureSettings, LearnerSettings, Settings

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Classifier", "Regressor"]

Detector = Literal["loss_deviation", "adwin", "page_hinkley", "kswin", "none"]
Device = Literal["auto", "cpu", "cuda"]
# Constructor arguments that belong to the learner section of Settings.
_LEARNER_ARGS = (
    "hidden",
    "lr",
    "replay_size",
    "replay_ratio",
    "warmup_steps",
    "weight_decay",
    "max_classes",
    "device",
)


class _Streaming:
    """What both estimators share: settings, the micro-batch buffer and the flush."""

    _task: str
    batch_size: int
    drift_detector: str
    numeric_slots: int
    categorical_slots: int
    hash_buckets: int
    embedding_dim: int
    seed: int | None

    def _init_stream(self, params: dict[str, Any]) -> None:
        """Keep every constructor argument as an attribute (river's get_params reads them),
        then build the pipeline from them."""
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)
        learner = {k: params[k] for k in _LEARNER_ARGS if k in params}
        learner["hidden"] = tuple(learner["hidden"])
        seed = self.seed if self.seed is not None else secrets.randbits(32)
        try:
            settings = Settings.model_construct(
                features=FeatureSettings(
                    numeric_slots=self.numeric_slots,
                    categorical_slots=self.categorical_slots,
                    hash_buckets=self.hash_buckets,
                    embedding_dim=self.embedding_dim,
                ),
                learner=LearnerSettings(task=self._task, seed=seed, **learner),
                drift=DriftSettings(detector=self.drift_detector),
            )
        except ValidationError as exc:
            raise ConfigError(f"{type(self).__name__}: {exc}") from None
        if self.batch_size < 1:
            raise ConfigError(f"{type(self).__name__}: batch_size must be at least 1")
        self._pq = Prequential.from_settings(settings)
        self._num: list[np.ndarray] = []
        self._cat: list[np.ndarray] = []
        self._ys: list[Hashable | None] = []

    @property
    def prequential(self) -> Prequential:
        """The wrapped pipeline (encoder, labels, learner, drift detector), for inspection."""
        return self._pq

    @property
    def n_buffered(self) -> int:
        """Rows learned from but not yet trained on (waiting for a full micro-batch)."""
        return len(self._ys)

    def _register(self, ys: Sequence[Hashable | None]) -> None:
        """Hook: classifiers make new labels known before their rows enter the buffer."""

    def _push(self, feats: EncodedFeatures, ys: Sequence[Hashable | None]) -> None:
        """Append encoded rows to the buffer, flushing every time it holds a full batch."""
        start, n = 0, len(ys)
        while start < n:
            take = min(self.batch_size - len(self._ys), n - start)
            stop = start + take
            self._register(ys[start:stop])
            self._num.append(feats.num[start:stop].copy())
            self._cat.append(feats.cat[start:stop].copy())
            self._ys.extend(ys[start:stop])
            start = stop
            if len(self._ys) == self.batch_size:
                self._flush()

    def _flush(self) -> None:
        feats = EncodedFeatures(np.concatenate(self._num), np.concatenate(self._cat))
        ys = self._ys
        self._num, self._cat, self._ys = [], [], []
        self._pq.process_encoded(feats, ys)

    def _encode_frame(self, X: pd.DataFrame) -> EncodedFeatures:
        """Encode a DataFrame column-wise; NaN/None/pd.NA are missing values."""
        if X.shape[1] == 0:
            return self._pq.encoder.encode([{}] * len(X))
        return self._pq.encoder.encode_columns(dict(_columns(X)))

    def _predict_frame(self, X: pd.DataFrame) -> np.ndarray:
        if X.shape[1] == 0:
            return self._pq.predict([{}] * len(X))
        return self._pq.predict_columns(dict(_columns(X)))


def _columns(X: pd.DataFrame) -> Iterator[tuple[Any, np.ndarray]]:
    """Numeric/bool columns as float64 with NaN, anything else as objects with None."""
    from pandas.api import types

    for name, column in X.items():
        if types.is_bool_dtype(column.dtype) or types.is_numeric_dtype(column.dtype):
            yield name, column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            yield name, column.to_numpy(dtype=object, na_value=None)


def _label(y: Any) -> Hashable | None:
    """A class label, or None for a missing one (None or NaN)."""
    if y is None or (isinstance(y, float) and math.isnan(y)):
        return None
    return y.item() if isinstance(y, np.generic) else y


class Classifier(_Streaming, base.MiniBatchClassifier):
    """Online neural classifier (binary or multiclass) learning in micro-batches.

    Rows are trained on ``batch_size`` at a time (one gradient step over the batch plus a
    replayed sample); until the first batch fills the model only knows which classes exist.
    Classes may appear mid-stream (up to ``max_classes``), features may come and go.

    Parameters
    ----------
    hidden
        Width of each hidden layer of the MLP.
    lr
        Learning rate after warm-up (re-warmed when drift is detected).
    batch_size
        Rows per micro-batch: larger is faster per row, smaller adapts sooner.
    replay_size
        Capacity of the reservoir of past rows replayed with each batch (0 disables replay).
    replay_ratio
        Replayed rows per new row in each step.
    warmup_steps
        Steps of linear learning-rate warm-up.
    weight_decay
        AdamW weight decay.
    drift_detector
        Detector watching the prequential loss: "loss_deviation", "adwin", "page_hinkley",
        "kswin" or "none".
    max_classes
        Output slots, i.e. the most classes the stream may bring.
    numeric_slots, categorical_slots, hash_buckets, embedding_dim
        Fixed-width input encoding (see ``streamlearn.core.features``).
    device
        "cpu", "cuda" or "auto" (CUDA when present). One-row predictions are cheapest on CPU.
    seed
        Seeds weight initialisation and replay sampling; None draws a fresh seed.

    Examples
    --------
    >>> from river import evaluate, metrics
    >>> from streamlearn.river import Classifier
    >>> from streamlearn.sources.synthetic import stream_rows

    >>> model = Classifier(seed=42)
    >>> metric = evaluate.progressive_val_score(
    ...     stream_rows("sea-drift", 2000, 42), model, metrics.Accuracy()
    ... )
    >>> metric.get() > 0.8
    True
    >>> sorted(model.predict_proba_one({"0": 8.0, "1": 1.0, "2": 5.0}))
    [False, True]

    """

    _task = "multiclass"

    def __init__(
        self,
        hidden: tuple[int, ...] = (64, 64),
        lr: float = 0.01,
        batch_size: int = 8,
        replay_size: int = 2048,
        replay_ratio: float = 0.5,
        warmup_steps: int = 20,
        weight_decay: float = 0.0,
        drift_detector: Detector = "loss_deviation",
        max_classes: int = 16,
        numeric_slots: int = 64,
        categorical_slots: int = 16,
        hash_buckets: int = 4096,
        embedding_dim: int = 8,
        device: Device = "cpu",
        seed: int | None = None,
    ) -> None:
        self._init_stream(locals())

    @property
    def _multiclass(self) -> bool:
        return True

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"hidden": (16,), "batch_size": 8, "seed": 1}
        yield {"drift_detector": "adwin", "replay_size": 0, "max_classes": 8}

    def _register(self, ys: Sequence[Hashable | None]) -> None:
        labels = self._pq.labels
        known = len(labels)
        for y in ys:
            if y is not None:
                labels.add(y)
        if len(labels) != known:
            self._pq.learner.set_classes(labels.mask())

    def learn_one(self, x: dict[base.typing.FeatureName, Any], y: base.typing.ClfTarget) -> None:
        self._push(self._pq.encoder.encode([x]), [_label(y)])

    def learn_many(self, X: pd.DataFrame, y: pd.Series) -> None:
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        self._push(self._encode_frame(X), [_label(v) for v in y.tolist()])

    def _proba(self, row: np.ndarray) -> dict[base.typing.ClfTarget, float]:
        """Probabilities of the known classes, renormalised in float64 to sum to one."""
        classes = self._pq.labels.classes
        if not classes:
            return {}
        p = row[: len(classes)].astype(np.float64)
        total = p.sum()
        p = p / total if total > 0 else np.full(len(classes), 1.0 / len(classes))
        return dict(zip(classes, p.tolist(), strict=True))

    def predict_proba_one(
        self, x: dict[base.typing.FeatureName, Any]
    ) -> dict[base.typing.ClfTarget, float]:
        return self._proba(self._pq.predict([x])[0])

    def predict_proba_many(self, X: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        classes = list(self._pq.labels.classes)
        if not classes or len(X) == 0:
            return pd.DataFrame(index=X.index, columns=classes, dtype=np.float64)
        rows = [self._proba(r) for r in self._predict_frame(X)]
        return pd.DataFrame(rows, index=X.index, columns=classes)

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        import pandas as pd

        proba = self.predict_proba_many(X)
        if proba.shape[1] == 0:
            return pd.Series([None] * len(X), index=X.index, dtype=object)
        return proba.idxmax(axis="columns")


class Regressor(_Streaming, base.MiniBatchRegressor):
    """Online neural regressor learning in micro-batches; the target is standardised online.

    Rows are trained on ``batch_size`` at a time (one gradient step over the batch plus a
    replayed sample). The network predicts a target standardised by its running mean and
    standard deviation, de-standardised on the way out. Features may come and go.

    Parameters
    ----------
    hidden
        Width of each hidden layer of the MLP.
    lr
        Learning rate after warm-up (re-warmed when drift is detected).
    batch_size
        Rows per micro-batch: larger is faster per row, smaller adapts sooner.
    replay_size
        Capacity of the reservoir of past rows replayed with each batch (0 disables replay).
    replay_ratio
        Replayed rows per new row in each step.
    warmup_steps
        Steps of linear learning-rate warm-up.
    weight_decay
        AdamW weight decay.
    drift_detector
        Detector watching the prequential loss: "loss_deviation", "adwin", "page_hinkley",
        "kswin" or "none".
    numeric_slots, categorical_slots, hash_buckets, embedding_dim
        Fixed-width input encoding (see ``streamlearn.core.features``).
    device
        "cpu", "cuda" or "auto" (CUDA when present). One-row predictions are cheapest on CPU.
    seed
        Seeds weight initialisation and replay sampling; None draws a fresh seed.

    Examples
    --------
    >>> from river import datasets, evaluate, metrics
    >>> from streamlearn.river import Regressor

    >>> metric = evaluate.progressive_val_score(
    ...     datasets.TrumpApproval(), Regressor(seed=42), metrics.MAE()
    ... )
    >>> metric.get() < 1.3  # a running mean scores 1.57, scaled linear regression 1.31
    True

    """

    _task = "regression"

    def __init__(
        self,
        hidden: tuple[int, ...] = (64, 64),
        lr: float = 0.01,
        batch_size: int = 8,
        replay_size: int = 2048,
        replay_ratio: float = 0.5,
        warmup_steps: int = 20,
        weight_decay: float = 0.0,
        drift_detector: Detector = "loss_deviation",
        numeric_slots: int = 64,
        categorical_slots: int = 16,
        hash_buckets: int = 4096,
        embedding_dim: int = 8,
        device: Device = "cpu",
        seed: int | None = None,
    ) -> None:
        self._init_stream(locals())

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"hidden": (16,), "batch_size": 8, "seed": 1}
        yield {"drift_detector": "page_hinkley", "replay_size": 0}

    def learn_one(self, x: dict[base.typing.FeatureName, Any], y: base.typing.RegTarget) -> None:
        self._push(self._pq.encoder.encode([x]), [_target(y)])

    def learn_many(self, X: pd.DataFrame, y: pd.Series) -> None:
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        self._push(self._encode_frame(X), [_target(v) for v in y.tolist()])

    def predict_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        return float(self._pq.predict([x])[0])

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        import pandas as pd

        if len(X) == 0:
            return pd.Series([], index=X.index, dtype=np.float64)
        return pd.Series(self._predict_frame(X).astype(np.float64), index=X.index)


def _target(y: Any) -> float | None:
    """A regression target, or None for a missing one."""
    return None if y is None else float(y)
