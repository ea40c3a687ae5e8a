"""All configuration: one frozen pydantic-settings root, read from YAML plus STREAMLEARN_* env.

This is the only module that reads files or the environment for configuration. Nested keys
use ``__`` in the environment: ``STREAMLEARN_LEARNER__LR=0.01``. Environment wins over YAML,
YAML over defaults. A list of names or numbers may be given as JSON or comma-separated
(``STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS=a:9092,b:9092``); a mapping, and ``learner.classes``
(whose items keep their JSON types), as JSON. Any invalid value raises :class:`ConfigError`:
one line naming the dotted key and its environment variable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from streamlearn.errors import ConfigError

__all__ = [
    "CheckpointSettings",
    "DriftSettings",
    "ExpertSettings",
    "ExportSettings",
    "FeatureSettings",
    "KafkaSettings",
    "LearnerSettings",
    "LinearSettings",
    "MemorySettings",
    "MetricsSettings",
    "NeighbourSettings",
    "RegistrySettings",
    "ServeSettings",
    "Settings",
    "SourceSettings",
    "WorkerSettings",
    "env_var",
    "load_settings",
]

Task = Literal["binary", "multiclass", "regression"]
_ENV_PREFIX = "STREAMLEARN_"
_T = TypeVar("_T")


def _split_list(value: Any) -> Any:
    """A list given as text (an environment variable): JSON (``["a:1", "b:2"]``) or
    comma-separated (``a:1, b:2``; blanks around items and empty items dropped)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"not a JSON list ({exc.msg}); give a JSON list or comma-separated values"
            ) from None
    return [item.strip() for item in text.split(",") if item.strip()]


# A tuple setting that also reads from text: NoDecode keeps pydantic-settings from insisting
# on JSON for the environment, and _split_list accepts JSON or a comma-separated list.
_TextList = Annotated[tuple[_T, ...], NoDecode, BeforeValidator(_split_list)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceSettings(_Section):
    """Where events come from."""

    kind: Literal["synthetic", "file", "kafka"] = "synthetic"
    stream: str = Field("agrawal-drift", description="synthetic stream name")
    n_events: int = Field(30_000, gt=0, description="events a synthetic stream yields")
    seed: int = 42
    path: Path | None = Field(None, description="JSONL file for kind=file")
    batch_size: int = Field(
        32, gt=0, description="events per micro-batch (scaled out: shared out over the ranks)"
    )
    rank_batch_size: int | None = Field(
        None, gt=0, description="scaled out: events per micro-batch on each rank instead"
    )

    @model_validator(mode="after")
    def _file_needs_path(self) -> SourceSettings:
        if self.kind == "file" and self.path is None:
            raise ValueError("kind=file needs source.path")
        return self

    def rank_batch(self, world: int, rank: int) -> int:
        """Events per micro-batch on rank ``rank`` of ``world`` (decision 0029):
        ``rank_batch_size`` if set, else the rank's share of ``batch_size``. The shares differ
        by at most one and add up to ``batch_size``, so the averaged model takes one step per
        ``batch_size`` events, as a single worker does. 0 if ``batch_size`` < ``world``."""
        if self.rank_batch_size is not None:
            return self.rank_batch_size
        return self.batch_size // world + int(rank < self.batch_size % world)


class FeatureSettings(_Section):
    """Fixed-width encoding: slots for numeric and categorical features, hashed categories."""

    numeric: _TextList[str] = Field((), description="numeric feature names; empty = auto")
    categorical: _TextList[str] = Field((), description="categorical names; empty = auto")
    numeric_slots: int = Field(64, gt=0, le=4096)
    categorical_slots: int = Field(16, gt=0, le=1024)
    hash_buckets: int = Field(4096, ge=16, le=2**24)
    embedding_dim: int = Field(8, gt=0, le=256)
    periodic: int = Field(
        4,
        ge=0,
        le=16,
        description="periodic features per numeric slot: the network also reads "
        "periodic_scale·sin(2π·c·z) and periodic_scale·(cos(2π·c·z) − 1) for this many fixed "
        "frequencies c ~ N(0, periodic_sigma²) of each standardised value z (thresholds and "
        "waves in one feature, which trees find at once); 0 = off, faster on many features "
        "(decisions 0041, 0042)",
    )
    periodic_sigma: float = Field(0.3, gt=0, le=10, description="the frequencies' spread")
    periodic_sharp_sigma: float = Field(
        0.9,
        gt=0,
        le=10,
        description="the spread of the last periodic // 2 frequencies of each slot: sharp "
        "thresholds beside the others' smooth waves; = periodic_sigma for one spread "
        "(decision 0050)",
    )
    periodic_scale: float = Field(
        0.15,
        gt=0,
        le=1,
        description="the periodic features' scale: small, so they do not disturb what the raw "
        "values already carry (decisions 0041, 0050)",
    )


class LearnerSettings(_Section):
    """The gradient-trained model and how it learns."""

    task: Task = "binary"
    classes: tuple[str | int | bool, ...] = Field(
        (), description="class labels in index order; empty = learned from the stream"
    )
    max_classes: int = Field(16, ge=2, le=4096, description="output slots for classes")
    hidden: _TextList[int] = Field((64, 64), min_length=1)
    wide: bool = Field(
        True,
        description="add a linear term of the inputs to the network's output (Wide & Deep): "
        "linear concepts are learned as fast as by a linear model",
    )
    lr: float = Field(5e-3, gt=0, description="constant learning rate after warm-up")
    warmup_steps: int = Field(20, ge=0)
    rewarm_factor: float = Field(3.0, ge=1.0, description="LR peak after drift, times lr")
    rewarm_steps: int = Field(10, ge=0)
    redecay_steps: int = Field(200, ge=0)
    updates: int = Field(2, ge=1, le=16, description="gradient steps per micro-batch")
    fast_start: int = Field(
        64,
        ge=0,
        le=1024,
        description="fast start: while a model has learned fewer than fast_start × batch "
        "events, a micro-batch is scored and learned in sub-batches of events/fast_start "
        "(the first event alone), so a young model is useful from its first events; 0 = off",
    )
    weight_decay: float = Field(0.0, ge=0)
    clip_norm: float = Field(5.0, gt=0)
    replay_size: int = Field(2048, ge=0, description="reservoir capacity (0 disables replay)")
    replay_ratio: float = Field(
        1.0, ge=0, le=8, description="replayed samples per new one (classification)"
    )
    replay_ratio_regression: float = Field(
        0.25,
        ge=0,
        le=8,
        description="replay_ratio for a regression target: uniform replay rehearses the stale "
        "targets of a trending series (decision 0038)",
    )
    fast_start_replay: float = Field(
        2.0,
        ge=0,
        le=8,
        description="classification: while the fast start splits a batch (and in a fresh "
        "model's sub-batches), each update replays fast_start_replay × replay_ratio rows: a "
        "young model's rows are few and more passes over them pay (decision 0039); 1 = off",
    )
    fast_start_replay_regression: float = Field(
        0.4,
        ge=0,
        le=8,
        description="fast_start_replay for a regression target: less, as a young trending "
        "series' first targets go stale soonest (decision 0040); 1 = off",
    )
    replay_floor: int = Field(
        0,
        ge=0,
        le=1024,
        description="classification: while the fast start splits a batch, each update "
        "replays at least this many rows (a one-row sub-batch replays one); 0 = off "
        "(8 helps small data sets, costs hyperplane: decision 0035)",
    )
    replay_reset_on_drift: bool = Field(
        True, description="empty the reservoir on drift: old labels may contradict the new concept"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="cpu, cuda, or auto: CUDA where one is present for a large model "
        "(kernels/model_size.py; decision 0037), else the CPU",
    )
    kernel: Literal["auto", "compiled", "torch"] = Field(
        "auto",
        description="compute backend: compiled (the C kernels built at install time; the "
        "training step on CPU only), torch (tensor ops), auto (compiled where this "
        "installation built it, else torch); 'native' is read as compiled",
    )
    overlap: Literal["auto", "on", "off"] = Field(
        "auto",
        description="with the compiled kernel: run a batch's updates (and the error memory's "
        "re-keying) on a second thread while the rest is processed (same results); auto: on "
        "where 2 or more CPUs are available (the affinity, capped by a container's CPU limit)",
    )
    amp: Literal["auto", "on", "off"] = "auto"
    threads: int = Field(1, ge=0, description="torch CPU threads (0 = torch default)")
    seed: int = 0

    @field_validator("kernel", mode="before")
    @classmethod
    def _kernel_alias(cls, value: Any) -> Any:
        """``native``, the value's name before the rename, still read from users' files."""
        return "compiled" if value == "native" else value

    @model_validator(mode="after")
    def _classes_fit(self) -> LearnerSettings:
        if len(self.classes) > self.max_classes:
            raise ValueError(f"{len(self.classes)} classes exceed max_classes={self.max_classes}")
        if self.task == "binary" and self.classes and len(self.classes) != 2:
            raise ValueError("task=binary takes exactly two classes")
        return self


class DriftSettings(_Section):
    """Which detector watches the prequential loss, and its parameters."""

    detector: Literal["loss_deviation", "adwin", "page_hinkley", "kswin", "none"] = "loss_deviation"
    alpha: float = Field(0.02, gt=0, le=1, description="EWMA smoothing of the loss")
    window: int = Field(500, ge=10, description="recent-loss window for mean and std")
    k: float = Field(4.0, gt=0, description="threshold in standard deviations")
    cooldown: int = Field(1000, ge=0, description="events ignored after a detection")
    min_samples: int = Field(300, ge=1, description="events before the first detection")
    min_rise: float = Field(
        0.2, ge=0, description="loss_deviation: smallest rise of the smoothed loss that counts"
    )
    params: dict[str, float | int] = Field(
        default_factory=dict, description="extra keyword arguments for river detectors"
    )


class MemorySettings(_Section):
    """ReLoop2 error memory beside the model (see DESIGN.md "Error memory")."""

    enabled: bool = Field(True, description="compensate predictions with the error memory")
    kind: Literal["topk", "lsh"] = Field(
        "topk", description="exact top-k over a ring buffer, or the paper's LSH sketch"
    )
    lam: float = Field(
        0.5, ge=0, le=4, description="λ: weight of the compensation (classes; decision 0048)"
    )
    lam_regression: float = Field(
        0.5,
        ge=0,
        le=4,
        description="λ for a regression target: a full compensation there adds the neighbours' "
        "noise (benchmarks/results/suite.md)",
    )
    gamma: float = Field(0.5, ge=0, le=1, description="γ: weight of ȳ − ŷ_base against ȳ − ȳ_base")
    tau: float = Field(0.1, gt=0, description="τ: softmax temperature over similarities")
    size: int = Field(128, ge=1, le=1_000_000, description="top-k: ring buffer capacity")
    k: int = Field(8, ge=0, le=4096, description="top-k: neighbours (0 = all, dense softmax)")
    tables: int = Field(8, ge=1, le=64, description="LSH: hash tables (K)")
    bits: int = Field(8, ge=1, le=20, description="LSH: bits per table (2^L buckets)")
    decay: float = Field(1.0, gt=0, le=1, description="LSH: bucket decay per stored sample")
    store: Literal["all", "errors"] = Field(
        "all", description="store every labelled row, or only rows the base model got wrong"
    )
    error_threshold: float = Field(
        0.5, ge=0, description="store=errors: 1 − p(true class) above this (regression: × MAE)"
    )
    reset_on_drift: bool = Field(True, description="clear the memory on a detected drift")
    rekey_after_drift: int = Field(
        20, ge=0, description="top-k: steps after a drift that re-encode the stored keys"
    )
    rekey_every: int = Field(3, ge=0, description="top-k: re-encode every N steps (0 = never)")
    gate: bool = Field(
        True,
        description="weigh the compensation against the base prediction by their recent "
        "hits (regression: absolute errors) with exponential weights: applied while it wins",
    )
    gate_eta: float = Field(2.0, gt=0, description="gate: learning rate of the weights")
    gate_horizon: int = Field(
        1000, ge=1, description="gate: labelled events its evidence spans (discount 1 − 1/N)"
    )
    gate_limit_for: float = Field(
        3.0, gt=0, description="gate: most evidence kept for the compensation (net losses to off)"
    )
    gate_limit_against: float = Field(
        20.0, gt=0, description="gate: most evidence kept against it (net wins to back on)"
    )
    gate_prior: float = Field(
        1.0, description="gate: evidence at the start and after a detected drift (> 0: on)"
    )


class ExpertSettings(_Section):
    """The pool of past models saved at detected drifts (see DESIGN.md "Recurring concepts")."""

    enabled: bool = Field(
        True, description="keep past models and switch back to one when its concept recurs"
    )
    size: int = Field(4, ge=1, le=64, description="models kept; the least recently used goes")
    snapshot_every: int = Field(
        16, ge=1, description="micro-batches between the copies of the live model a detection saves"
    )
    trial_rows: int = Field(
        128, ge=8, le=65_536, description="labelled events after a detection the pool is tried on"
    )
    margin: float = Field(
        0.5, ge=0, lt=1, description="switch if an expert's loss ≤ live model's × (1 − margin)"
    )
    early_ratio: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="switch at once, from the detection's own rows on and after each batch "
        "of the trial (at least 8 rows), to an expert whose loss is at most this × the live "
        "model's (a concept that recurs is served by its model within a batch); 0 = wait for "
        "trial_rows",
    )
    fresh: bool = Field(
        True,
        description="after a detection, a new model learns beside the live one and replaces "
        "it when clearly better (core/fresh.py)",
    )
    fresh_rows: int = Field(
        512, ge=16, le=1_000_000, description="events the fresh model learns before the decision"
    )
    fresh_t: float = Field(
        3.0, gt=0, description="switch if the live − fresh loss difference has a t-statistic ≥ this"
    )
    fresh_mix: bool = Field(
        True,
        description="while a fresh model learns, predictions mix it with the live model by "
        "exponential weights on both models' recent accuracy (its share restarts low at each "
        "start): a new concept is served well before the switch's evidence is in",
    )
    fresh_max_rows: int = Field(
        4096,
        ge=16,
        le=1_000_000,
        description="a fresh model ahead but not clearly (0 < t < fresh_t) learns on and is "
        "judged again at each doubling of its events, up to this many",
    )

    @model_validator(mode="after")
    def _fresh_rows_fit(self) -> ExpertSettings:
        if self.fresh_max_rows < self.fresh_rows:
            raise ValueError(
                f"experts.fresh_max_rows={self.fresh_max_rows} is below "
                f"experts.fresh_rows={self.fresh_rows}"
            )
        return self


class _MixSection(_Section):
    """Exponential weights that mix a second prediction into the model's, on both
    predictions' prequential accuracy (core/hedge.py)."""

    horizon: int = Field(
        500, ge=1, description="labelled events the mix's evidence spans (discount 1 − 1/N)"
    )
    eta: float = Field(1.0, gt=0, description="learning rate of the mix's weights")
    limit: float = Field(
        50.0, gt=0, description="most evidence kept either way (net wins before the mix turns)"
    )
    prior: float = Field(
        0.0, description="evidence at the start (< 0 favours the model, > 0 the second one)"
    )


class LinearSettings(_MixSection):
    """A linear model beside a classifier's network, mixed in by exponential weights on both
    models' prequential accuracy (see DESIGN.md "The linear model beside the network")."""

    enabled: bool = Field(
        True,
        description="classification: learn a linear model beside the network and serve their "
        "mix, each weighted by its recent accuracy (ignored for regression); its weights take "
        "(features.numeric_slots + features.hash_buckets + 1) × class slots floats a rate",
    )
    lr: float = Field(0.01, gt=0, le=1, description="the linear model's SGD step per row")
    slow_lr: float = Field(
        0.0025,
        ge=0,
        le=1,
        description="a second copy of the linear model learns at this step per row, the two "
        "mixed by their log loss over the last `horizon` events (a slow rate for stationary "
        "concepts, `lr` for drifting ones); 0: one rate, half the linear model's weights",
    )


class NeighbourSettings(_MixSection):
    """A vote of the nearest recent labelled rows mixed into a classifier's prediction by
    exponential weights on its prequential accuracy (see DESIGN.md "The neighbour vote")."""

    enabled: bool = Field(
        True,
        description="classification: mix in the vote of the k nearest of the last `window` "
        "labelled rows (Euclidean, over the standardised numeric features), weighted by its "
        "recent accuracy; retired while it keeps losing, back after a detected drift",
    )
    k: int = Field(5, ge=1, le=64, description="neighbours that vote")
    window: int = Field(2048, ge=1, le=65_536, description="recent labelled rows searched (a ring)")
    prior: float = Field(
        -3.0, description="evidence at the start and after a drift (< 0 favours the model)"
    )


class ExportSettings(_Section):
    """When the worker exports an ONNX artifact, how it is checked, and the publish gate."""

    every_steps: int = Field(500, ge=1, description="micro-batches between exports")
    after_drift_steps: int = Field(
        100, ge=0, description="micro-batches after a detected drift until the recovery export"
    )
    min_rows: int = Field(
        256, ge=1, description="labelled rows since the last publish before the gate can judge"
    )
    gate_margin: float = Field(
        0.02, ge=0, description="publish if candidate loss ≤ published loss × (1 + margin)"
    )
    gate_window: int = Field(4096, ge=1, description="recent labelled rows the gate compares on")
    tolerance: float = Field(1e-4, gt=0, description="max |onnxruntime − torch| on parity rows")
    parity_rows: int = Field(64, ge=1, le=65_536, description="rows of the parity batch")
    opset: int = Field(17, ge=13, le=21, description="ONNX opset of the export")
    memory_push_s: float = Field(2.0, gt=0, description="seconds between error-memory pushes")


class RegistrySettings(_Section):
    """Where artifacts and the error memory are published (filesystem or Redis)."""

    kind: Literal["filesystem", "redis"] = "filesystem"
    path: Path = Field(Path("registry"), description="filesystem: root directory")
    url: str = Field("redis://localhost:6379/0", description="redis: server URL")
    password: SecretStr | None = Field(None, description="redis: password (kept out of logs)")
    prefix: str = Field("streamlearn", min_length=1, description="redis: key prefix")
    keep: int = Field(20, ge=2, description="versions kept; older ones are deleted")
    poll_s: float = Field(1.0, gt=0, description="pointer polling interval (pub/sub fallback)")


class ServeSettings(_Section):
    """The serving tier: KServe v2 over HTTP and gRPC, v1 :predict."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65_535)
    processes: int = Field(
        0, ge=0, le=256, description="server processes on the ports (0 = one per usable CPU)"
    )
    grpc_port: int | None = Field(
        8081,
        ge=0,
        le=65_535,
        description="KServe v2 gRPC port (GRPCInferenceService); 0 = any free, null or off = none",
    )

    @field_validator("grpc_port", mode="before")
    @classmethod
    def _grpc_off(cls, value: Any) -> Any:
        """``off``, ``null`` or ``none`` (any case; an environment variable cannot be YAML's
        null) turn the gRPC server off."""
        if isinstance(value, str) and value.strip().lower() in ("off", "null", "none"):
            return None
        return value

    model_name: str = Field("streamlearn", pattern=r"^[A-Za-z0-9_.-]+$")
    admin_token: SecretStr | None = Field(
        None, description="bearer token for /admin/*; unset = admin endpoints disabled"
    )
    max_batch: int = Field(1024, ge=1, le=1_000_000, description="rows per request")
    max_body_bytes: int = Field(4 << 20, ge=1024, description="request body limit")
    memory_poll_s: float = Field(2.0, gt=0, description="seconds between error-memory pulls")
    compensate: bool = Field(True, description="apply the pulled error memory")
    warm_rows: int = Field(8, ge=1, le=4096, description="rows of the warm-up batch")
    max_in_flight: int = Field(
        64, ge=1, description="requests one process handles at once; beyond: 503 + Retry-After"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request head must arrive within this (408, then closed)"
    )
    max_header_bytes: int = Field(
        64 << 10, ge=1024, description="request head size limit (431, then closed)"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="a request body must arrive within this of its head (408)"
    )
    keep_alive_s: int = Field(5, ge=1, description="idle keep-alive connections are closed")


class KafkaSettings(_Section):
    """Kafka connection, topics and consumer group (``source.kind: kafka``, worker, produce).

    Connection keys are passed through to the client. Further client settings go verbatim
    (kafka-python keyword names, or librdkafka names for confluent): ``client_options`` to the
    consumer and the producer alike, ``consumer_options`` and ``producer_options`` to one of
    them only (kafka-python refuses a setting of the other client's).
    """

    client: Literal["kafka-python", "confluent"] = Field(
        "kafka-python", description="kafka-python (always installed) or confluent-kafka (faster)"
    )
    reader_process: bool = Field(
        False,
        description="consume in a child process: the client's fetching and the records' "
        "conversion then run beside the learner; pays only with a core free for it (decision "
        "0051; the records are parsed in C either way, decision 0053)",
    )
    bootstrap_servers: _TextList[str] = Field(
        ("localhost:9092",), min_length=1, description="host:port list (JSON or comma-separated)"
    )
    topic: str = Field("events", min_length=1, description="labelled/unlabelled events")
    labels_topic: str | None = Field(None, description='late labels {"id": ..., "y": ...}')
    dead_letter_topic: str | None = Field(
        "events.dead-letter", description="rejected messages (original bytes + reason headers)"
    )
    output_topic: str | None = Field(None, description="predictions (id, prediction, model_step)")
    group_id: str = Field("streamlearn", min_length=1)
    client_id: str = "streamlearn"
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a partition starts with neither checkpoint nor commit"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(None, description="kept out of logs and reprs")
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    session_timeout_ms: int = Field(45_000, ge=1_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    max_poll_records: int = Field(500, ge=1, description="records one poll may return")
    request_timeout_ms: int = Field(30_000, ge=1_000)
    reconnect_backoff_max_ms: int = Field(10_000, ge=100, description="client reconnect cap")
    client_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="extra settings of both clients, the consumer's and the producer's, "
        "passed through verbatim",
    )
    consumer_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="extra settings of the consumer alone (e.g. fetch sizes), verbatim, "
        "over client_options",
    )
    producer_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="extra settings of the producer alone (e.g. batching, compression), "
        "verbatim, over client_options",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol={self.security_protocol} needs sasl_mechanism")
            if self.sasl_username is None or self.sasl_password is None:
                raise ValueError("SASL needs sasl_username and sasl_password")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        return self

    @property
    def consumer_extras(self) -> dict[str, str | int | float | bool]:
        """What the consumer gets verbatim: client_options, consumer_options over them."""
        return self.client_options | self.consumer_options

    @property
    def producer_extras(self) -> dict[str, str | int | float | bool]:
        """What the producer gets verbatim: client_options, producer_options over them."""
        return self.client_options | self.producer_options


class WorkerSettings(_Section):
    """The long-running worker: batching, late labels, back-off, limits."""

    max_wait_s: float = Field(
        1.0, gt=0, description="a partial batch is learned once its oldest event waited this long"
    )
    poll_timeout_s: float = Field(0.1, gt=0, le=5, description="longest single poll")
    label_cache_size: int = Field(
        100_000, ge=0, description="unlabelled events kept for late labels"
    )
    label_ttl_s: float = Field(
        3_600.0, gt=0, description="how long an unlabelled event waits for its label"
    )
    early_label_cache_size: int = Field(
        100_000, ge=0, description="labels kept until their event is read (labels before events)"
    )
    early_label_ttl_s: float = Field(
        3_600.0, gt=0, description="how long a label waits for its event"
    )
    max_event_bytes: int = Field(64 * 1024, ge=64, description="larger messages are rejected")
    backoff_initial_s: float = Field(0.5, gt=0, description="first retry delay in an outage")
    backoff_max_s: float = Field(30.0, gt=0, description="retry delay cap in an outage")
    idle_probe_s: float = Field(5.0, gt=0, description="probe the broker after this long idle")
    client_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "CRITICAL", description="Kafka client library logs (they repeat per retry)"
    )
    log_every_s: float = Field(30.0, gt=0, description="seconds between progress lines")
    liveness_timeout_s: float = Field(
        60.0, gt=0, description="/livez fails once the loop made no turn for this long"
    )
    no_partitions_warn_s: float = Field(
        60.0, gt=0, description="warn (every log_every_s) after this long without a partition"
    )
    shutdown_timeout_s: float = Field(
        10.0,
        ge=0,
        description="on stop: final settle, checkpoint, commit and client close end within this",
    )

    @model_validator(mode="after")
    def _liveness_outlasts_waits(self) -> WorkerSettings:
        if self.liveness_timeout_s <= self.backoff_max_s:
            raise ValueError(
                f"liveness_timeout_s ({self.liveness_timeout_s:g}) must exceed backoff_max_s "
                f"({self.backoff_max_s:g}): a loop waiting out a back-off is alive"
            )
        return self


class CheckpointSettings(_Section):
    """Where and how often the worker saves its whole state (offsets included)."""

    dir: Path = Field(Path("checkpoints"), description="checkpoint directory")
    every_batches: int = Field(0, ge=0, description="batches between checkpoints (0 = off)")
    every_s: float = Field(5.0, ge=0, description="seconds between checkpoints (0 = off)")
    keep: int = Field(3, ge=1, description="newest checkpoints kept")


class MetricsSettings(_Section):
    """Prometheus metrics of the worker (the server serves them on its own ``/metrics``)."""

    port: int | None = Field(
        None,
        ge=0,
        le=65_535,
        description="worker: serve /metrics, /livez and /readyz on this port (None = off)",
    )
    host: str = Field("0.0.0.0", description="worker: bind address of the metrics port")
    lag_interval_s: float = Field(
        5.0, gt=0, description="seconds between end-offset lookups for the consumer lag"
    )
    smoothing: float = Field(
        0.01, gt=0, le=1, description="EWMA weight of one event in the smoothed loss and metric"
    )


class Settings(BaseSettings):
    """The root: one section per stage."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMLEARN_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    source: SourceSettings = SourceSettings()
    features: FeatureSettings = FeatureSettings()
    learner: LearnerSettings = LearnerSettings()
    drift: DriftSettings = DriftSettings()
    memory: MemorySettings = MemorySettings()
    experts: ExpertSettings = ExpertSettings()
    linear: LinearSettings = LinearSettings()
    neighbours: NeighbourSettings = NeighbourSettings()
    kafka: KafkaSettings = KafkaSettings()
    worker: WorkerSettings = WorkerSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    export: ExportSettings = ExportSettings()
    registry: RegistrySettings = RegistrySettings()
    serve: ServeSettings = ServeSettings()
    metrics: MetricsSettings = MetricsSettings()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path} (--config): {exc.strerror}") from exc
    except yaml.YAMLError as exc:  # str(exc) spans lines: say where and what, on one
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(
            f"config file {path} (--config) is not valid YAML{where}: {problem}"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def env_var(key: str) -> str:
    """The environment variable that sets a dotted key (error messages name both forms).

    >>> env_var("kafka.bootstrap_servers")
    'STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS'
    """
    return _ENV_PREFIX + key.upper().replace(".", "__")


_SECRET_WORDS = ("password", "token", "secret")


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(exc: ValidationError) -> str:
    """One line for the operator: each invalid key with its environment variable, what is
    wrong and the value given; the value is left out for secrets and for whole sections
    (which may hold a secret)."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "<root>"
        if len(loc) < 2:
            problems.append(f"{key}: {err['msg']}")
            continue
        problem = f"{key} ({env_var('.'.join(loc[:2]))}): {err['msg']}"
        if not any(word in key.lower() for word in _SECRET_WORDS):
            problem += f" (got {_shown(err.get('input'))})"
        problems.append(problem)
    return "invalid settings: " + "; ".join(problems)


def _describe_undecodable(exc: SettingsError) -> str:
    """One line for an environment value that pydantic-settings could not decode as JSON (a
    mapping, or a list that is not read as comma-separated text), naming its variable."""
    cause = exc.__cause__
    text = getattr(cause, "doc", None)  # json.JSONDecodeError keeps the text it was given
    names = sorted(
        name
        for name, value in os.environ.items()
        if name.upper().startswith(_ENV_PREFIX) and value == text
    )
    where = "; ".join(
        f"{name[len(_ENV_PREFIX) :].lower().replace('__', '.')} ({name})" for name in names
    )
    return (
        f"invalid settings: {where or exc}: not valid JSON ({cause}); a mapping or list from "
        """the environment is JSON, e.g. '{"delta": 0.01}' or '["a", "b"]'"""
    )


class _MappingSource(PydanticBaseSettingsSource):
    """A settings layer from an already-parsed mapping (the YAML file)."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings from defaults < YAML file < STREAMLEARN_* environment < keyword overrides.

    Keyword overrides are per section (what a command-line flag sets) and win over all else.

    >>> load_settings(learner={"lr": 0.01}).learner.lr
    0.01
    """
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, _MappingSource(settings_cls, data)

    try:
        layered = _Layered(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:
        raise ConfigError(_describe_undecodable(exc)) from None
    # Hand back a plain (picklable) Settings holding the validated sections.
    return Settings.model_construct(
        **{name: getattr(layered, name) for name in Settings.model_fields}
    )
