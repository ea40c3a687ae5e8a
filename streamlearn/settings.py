"""All configuration: one frozen pydantic-settings root, read from YAML plus STREAMLEARN_* env.

This is the only module that reads files or the environment for configuration. Nested keys
use ``__`` in the environment: ``STREAMLEARN_LEARNER__LR=0.01``. Environment wins over YAML,
YAML over defaults. Any invalid value raises :class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamlearn.errors import ConfigError

__all__ = [
    "DriftSettings",
    "FeatureSettings",
    "LearnerSettings",
    "MemorySettings",
    "Settings",
    "SourceSettings",
    "load_settings",
]

Task = Literal["binary", "multiclass", "regression"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceSettings(_Section):
    """Where events come from."""

    kind: Literal["synthetic", "file"] = "synthetic"
    stream: str = Field("agrawal-drift", description="synthetic stream name")
    n_events: int = Field(30_000, gt=0, description="events a synthetic stream yields")
    seed: int = 42
    path: Path | None = Field(None, description="JSONL file for kind=file")
    batch_size: int = Field(64, gt=0, description="events per micro-batch")

    @model_validator(mode="after")
    def _file_needs_path(self) -> SourceSettings:
        if self.kind == "file" and self.path is None:
            raise ValueError("kind=file needs source.path")
        return self


class FeatureSettings(_Section):
    """Fixed-width encoding: slots for numeric and categorical features, hashed categories."""

    numeric: tuple[str, ...] = Field((), description="numeric feature names; empty = auto")
    categorical: tuple[str, ...] = Field((), description="categorical names; empty = auto")
    numeric_slots: int = Field(64, gt=0, le=4096)
    categorical_slots: int = Field(16, gt=0, le=1024)
    hash_buckets: int = Field(4096, ge=16, le=2**24)
    embedding_dim: int = Field(8, gt=0, le=256)


class LearnerSettings(_Section):
    """The gradient-trained model and how it learns."""

    task: Task = "binary"
    classes: tuple[str | int | bool, ...] = Field(
        (), description="class labels in index order; empty = learned from the stream"
    )
    max_classes: int = Field(16, ge=2, le=4096, description="output slots for classes")
    hidden: tuple[int, ...] = Field((64, 64), min_length=1)
    lr: float = Field(3e-3, gt=0, description="constant learning rate after warm-up")
    warmup_steps: int = Field(20, ge=0)
    rewarm_factor: float = Field(3.0, ge=1.0, description="LR peak after drift, times lr")
    rewarm_steps: int = Field(10, ge=0)
    redecay_steps: int = Field(200, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    clip_norm: float = Field(5.0, gt=0)
    replay_size: int = Field(2048, ge=0, description="reservoir capacity (0 disables replay)")
    replay_ratio: float = Field(0.5, ge=0, le=8, description="replayed samples per new one")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "on", "off"] = "auto"
    threads: int = Field(1, ge=0, description="torch CPU threads (0 = torch default)")
    seed: int = 0

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
    params: dict[str, float | int] = Field(
        default_factory=dict, description="extra keyword arguments for river detectors"
    )


class MemorySettings(_Section):
    """ReLoop2 error memory beside the model (see DESIGN.md)."""

    enabled: bool = False


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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry the YAML file's content; environment overrides it.
        return env_settings, init_settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "invalid settings:\n" + "\n".join(lines)


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Build Settings from an optional YAML file, the environment and keyword overrides.

    >>> load_settings(learner={"lr": 0.01}).learner.lr
    0.01
    """
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    for section, values in overrides.items():
        merged = dict(data.get(section) or {})
        merged.update(values)
        data[section] = merged
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
