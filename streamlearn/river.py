"""River-compatible estimators: the prequential learner behind river's one-row API.

A network learns best from micro-batches, so ``learn_one`` encodes its row at once (nothing
keeps the caller's dict) and buffers it; every ``batch_size`` rows go through one prequential
step. ``learn_many`` pushes rows through the same buffer, so both leave identical state. A label
is known as a class as soon as it is buffered, before the model has trained on it. The ``*_many``
methods hand a DataFrame's columns to the column encoder as they are (no dict per row; a frame of
numpy numbers is one conversion per call), and give what the one-row API gives on the same rows,
bit for bit: beyond ``Prequential.process_columns`` the pandas path costs mostly the score-only
pass that river's predict-then-learn calls ask for (benchmarks/river_columns.py). Constructor
arguments are the whole configuration (river style), validated into Settings sections directly
rather than through ``load_settings``: a ``STREAMLEARN_*`` variable never overrides them.
"""

from __future__ import annotations

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
    periodic: int
    seed: int | None

    def _init_stream(self, params: dict[str, Any]) -> None:
        """Keep every constructor argument as an attribute (river's get_params reads them),
        then build the pipeline from them."""
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)
        learner = {k: params[k] for k in _LEARNER_ARGS if k in params}
        learner["hidden"] = tuple(learner["hidden"])
        if "replay_ratio" in learner:  # the estimator's one ratio, whatever its task
            learner["replay_ratio_regression"] = learner["replay_ratio"]
        seed = self.seed if self.seed is not None else secrets.randbits(32)
        try:
            settings = Settings.model_construct(
                features=FeatureSettings(
                    numeric_slots=self.numeric_slots,
                    categorical_slots=self.categorical_slots,
                    hash_buckets=self.hash_buckets,
                    embedding_dim=self.embedding_dim,
                    periodic=self.periodic,
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
        """Append encoded rows to the buffer, flushing every time it holds a full batch.

        Rows left waiting for more have their labels registered at once and their arrays
        copied (a few buffered rows never keep a large batch's arrays alive); rows that
        complete a batch within this call go to the step as views of ``feats`` (the caller's
        own fresh encoding), and the step registers their labels, in the same order."""
        start, n = 0, len(ys)
        while start < n:
            stop = min(start + self.batch_size - len(self._ys), n)
            self._ys.extend(ys[start:stop])
            num, cat = feats.num[start:stop], feats.cat[start:stop]
            if len(self._ys) < self.batch_size:
                self._register(ys[start:stop])
                num, cat = num.copy(), cat.copy()
            self._num.append(num)
            self._cat.append(cat)
            start = stop
            if len(self._ys) == self.batch_size:
                self._flush()

    def _flush(self) -> None:
        feats = EncodedFeatures(_joined(self._num), _joined(self._cat))
        ys = self._ys
        self._num, self._cat, self._ys = [], [], []
        self._pq.process_encoded(feats, ys)

    def _encode_frame(self, X: pd.DataFrame) -> EncodedFeatures:
        """Encode a DataFrame column-wise; NaN/None/pd.NA are missing values."""
        if X.shape[1] == 0:
            return self._pq.encoder.encode([{}] * len(X))
        return self._pq.encoder.encode_columns(_columns(X))

    def _predict_frame(self, X: pd.DataFrame) -> np.ndarray:
        if X.shape[1] == 0:
            return self._pq.predict([{}] * len(X))
        return self._pq.predict_columns(_columns(X))


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The buffered pieces as one array (a single piece as it is, without a copy)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _columns(X: pd.DataFrame) -> dict[Any, np.ndarray]:
    """X's columns for ``encode_columns``, as the dict path would see their values: numbers and
    bools as float64 (NaN = missing), anything else as objects (None = missing).

    A frame of numpy numbers (river's usual one) is one conversion, its columns views of the
    result; a frame with other dtypes (strings, categories, pandas' nullable types) is one
    conversion to objects with None for every missing value, numeric columns cast back.
    """
    values = X.to_numpy()
    if values.dtype.kind in "biuf":
        return dict(zip(X.columns, values.astype(np.float64, copy=False).T, strict=True))
    from pandas.api import types

    values = X.to_numpy(dtype=object, na_value=None)
    return {
        name: (
            values[:, j].astype(np.float64)  # None becomes NaN
            if types.is_bool_dtype(dtype) or types.is_numeric_dtype(dtype)
            else values[:, j]
        )
        for j, (name, dtype) in enumerate(X.dtypes.items())
    }


def _label(y: Any) -> Hashable | None:
    """A class label, or None for a missing one: what pandas reads as missing (None, NaN, NaT,
    pandas' NA), so that ``learn_one`` and ``learn_many`` agree (see :func:`_labels`)."""
    if y is None:
        return None
    try:
        if y != y:  # NaN, NaT
            return None
    except TypeError:  # pandas' NA: its truth value is ambiguous
        return None
    return y.item() if isinstance(y, np.generic) else y


def _labels(y: pd.Series) -> list[Hashable | None]:
    """:func:`_label` of every value of ``y``, vectorised: numpy ints and bools as they are
    (nothing is missing there), anything else through pandas with None for a missing value
    (numpy scalars left in an object column are unwrapped by the label map)."""
    if isinstance(y.dtype, np.dtype) and y.dtype.kind in "biu":
        return y.tolist()
    return y.to_numpy(dtype=object, na_value=None).tolist()


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
    periodic
        Fixed-frequency sin/cos features the network reads beside each numeric value (see
        ``streamlearn.core.model``): their number per feature (4), or 0 for none.
    device
        "cpu", "cuda" or "auto" (CUDA when present and the model large enough for it to pay).
        One-row predictions are cheapest on CPU.
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
    # (the label map's list of classes, an Index of it): see _class_index
    _classes_cache: tuple[list[Hashable], pd.Index] | None = None

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
        periodic: int = 4,
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
        labels.add_many(ys)
        if len(labels) != known:
            self._pq.learner.set_classes(labels.mask())

    def learn_one(self, x: dict[base.typing.FeatureName, Any], y: base.typing.ClfTarget) -> None:
        self._push(self._pq.encoder.encode([x]), [_label(y)])

    def learn_many(self, X: pd.DataFrame, y: pd.Series) -> None:
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        self._push(self._encode_frame(X), _labels(y))

    def _probabilities(self, prediction: np.ndarray) -> np.ndarray:
        """[rows, known classes] float64: each row renormalised to sum to one (uniform where
        the model gives the known classes nothing); one code for one row and for many, so
        ``predict_proba_one`` and ``predict_proba_many`` agree bit for bit."""
        p = prediction[:, : len(self._pq.labels)].astype(np.float64)
        total = p.sum(axis=1, keepdims=True)
        empty = (total <= 0)[:, 0]
        np.divide(p, total, out=p, where=total > 0)
        p[empty] = 1.0 / p.shape[1]
        return p

    def predict_proba_one(
        self, x: dict[base.typing.FeatureName, Any]
    ) -> dict[base.typing.ClfTarget, float]:
        classes = self._pq.labels.classes
        if not classes:
            return {}
        p = self._probabilities(self._pq.predict([x]))[0]
        return dict(zip(classes, p.tolist(), strict=True))

    def _class_index(self) -> pd.Index:
        """The known classes as an Index (predict_proba_many's columns), built again only when
        the label map has changed: inferring an Index from a list is pandas' slowest step in a
        small chunk's output."""
        classes = self._pq.labels.classes
        cached = self._classes_cache
        if cached is None or cached[0] is not classes or len(cached[1]) != len(classes):
            import pandas as pd

            cached = self._classes_cache = (classes, pd.Index(classes))
        return cached[1]

    def _proba_frame(self, X: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
        """The probabilities of X's rows and the class labels as an Index (the columns)."""
        classes = self._class_index()
        if classes.empty or len(X) == 0:
            return np.zeros((len(X), len(classes))), classes
        return self._probabilities(self._predict_frame(X)), classes

    def predict_proba_many(self, X: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        p, classes = self._proba_frame(X)
        return pd.DataFrame(p, index=X.index, columns=classes, copy=False)

    def predict_many(self, X: pd.DataFrame) -> pd.Series:
        """The most probable known class per row (the first on a tie, as ``idxmax``); None
        before any class is known."""
        import pandas as pd

        p, classes = self._proba_frame(X)
        if classes.empty:
            return pd.Series([None] * len(X), index=X.index, dtype=object)
        return pd.Series(classes.take(p.argmax(axis=1)), index=X.index)


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
    periodic
        Fixed-frequency sin/cos features the network reads beside each numeric value (see
        ``streamlearn.core.model``): their number per feature (4), or 0 for none.
    device
        "cpu", "cuda" or "auto" (CUDA when present and the model large enough for it to pay).
        One-row predictions are cheapest on CPU.
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
        periodic: int = 4,
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
        self._push(self._encode_frame(X), _targets(y))

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


def _targets(y: pd.Series) -> list[float | None]:
    """:func:`_target` of every value of ``y``: numpy numbers in one cast (NaN stays NaN, which
    the learner counts and does not learn, as ``learn_one`` does); other dtypes value by value."""
    if isinstance(y.dtype, np.dtype) and y.dtype.kind in "biuf":
        return y.to_numpy(dtype=np.float64).tolist()
    return [_target(v) for v in y.tolist()]
