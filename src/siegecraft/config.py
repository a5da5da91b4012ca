"""The experiment schema: TOML in, validated `Experiment` out, `--set a.b=c` overrides.

Every mistake in a config fails here, before any work, with the key path, the bad value and
what is allowed. Topology sections owned by other packages (`[hogwild]`, `[serverless]`) and
attack/defense options are validated by their owners' models, looked up lazily.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from siegecraft.train import TrainConfig


class ConfigError(ValueError):
    """A configuration problem, with the offending key path in the message."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    """Which dataset, how it is split across clients, and optional size limits."""

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    partition: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: float | None = Field(None, gt=0)
    min_partition_size: int = Field(0, ge=0)
    classes_per_client: int | None = Field(None, ge=1)
    train_limit: int | None = Field(None, ge=1, description="use only the first N training samples")
    test_limit: int | None = Field(None, ge=1, description="evaluate on only the first N test samples")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from siegecraft.data import DATASETS

        DATASETS.get(v)
        return v

    @model_validator(mode="after")
    def _partition_params(self) -> DataConfig:
        if self.partition == "dirichlet" and self.alpha is None:
            raise ValueError("partition 'dirichlet' needs data.alpha (e.g. 0.5)")
        if self.partition == "shards" and self.classes_per_client is None:
            raise ValueError("partition 'shards' needs data.classes_per_client (e.g. 2)")
        return self

    def partition_params(self) -> dict[str, Any]:
        if self.partition == "dirichlet":
            return {"alpha": self.alpha, "min_partition_size": self.min_partition_size}
        if self.partition == "shards":
            return {"classes_per_client": self.classes_per_client}
        return {}


class ModelConfig(Section):
    """Model architecture; input shape defaults to the dataset's own."""

    name: str = "cnn"
    options: dict[str, Any] = Field(default_factory=dict)
    image_size: int | None = Field(None, ge=8)
    channels: Literal[1, 3] | None = None

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        from siegecraft.models import MODELS

        MODELS.get(v)
        return v


class FLConfig(Section):
    """Federated rounds, client sampling and the server update rule."""

    rounds: int = Field(5, ge=1)
    clients: int = Field(10, ge=1)
    clients_per_round: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    sampling: Literal["random", "round-robin"] = "random"
    strategy: Literal["fedavg", "fedavgm"] = "fedavg"
    server_lr: float = Field(1.0, gt=0)
    server_momentum: float = Field(0.9, ge=0, lt=1)
    eval_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(0, ge=0, description="0 disables checkpoints")

    @model_validator(mode="after")
    def _sampling(self) -> FLConfig:
        if self.clients_per_round is not None and self.fraction is not None:
            raise ValueError("set fl.clients_per_round or fl.fraction, not both")
        if self.clients_per_round is not None and self.clients_per_round > self.clients:
            raise ValueError(
                f"fl.clients_per_round={self.clients_per_round} exceeds fl.clients={self.clients}"
            )
        return self

    def per_round(self) -> int:
        if self.clients_per_round is not None:
            return self.clients_per_round
        if self.fraction is not None:
            return max(1, round(self.fraction * self.clients))
        return self.clients


class RuntimeConfig(Section):
    """Where client work runs."""

    executor: Literal["inline", "processes", "ray"] = "inline"
    workers: int = Field(2, ge=1)
    address: str | None = None


class SecureConfig(Section):
    """Secure aggregation: plain FedAvg, or Citadel's zero-sum masked tree (attested by `attestation`)."""

    aggregation: Literal["plain", "zero-sum"] = "plain"
    fanout: int = Field(10, ge=2)
    on_dropout: Literal["remask", "abort"] = "remask"
    max_update_norm: float | None = Field(
        None, gt=0, description="L2 bound on each party's update, applied inside its training enclave")
    attestation: str = Field("mock", description="attestation backend; 'mock' simulates, with no hardware protection")

    @field_validator("attestation")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from siegecraft.enclave.backends import backend_names

        if v not in backend_names():
            raise ValueError(f"unknown attestation backend {v!r}; allowed: {', '.join(backend_names())}")
        return v


class AttackConfig(Section):
    """An adversary: its registered name, which clients it controls, and its options."""

    name: str = "none"
    clients: list[int] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)


class DefenseConfig(Section):
    """Server-side robust aggregation and other defenses, by registered name."""

    aggregator: str = "mean"
    options: dict[str, Any] = Field(default_factory=dict)
    names: list[str] = Field(default_factory=list)


class TrackingConfig(Section):
    """Experiment trackers fed every round: TensorBoard event files and/or an MLflow tracking URI."""

    tensorboard: bool = False
    mlflow: str | None = Field(None, description="tracking URI, e.g. file:///abs/mlruns or http://host:5000")
    mlflow_experiment: str | None = Field(None, description="MLflow experiment name; default: the run's name")

    @model_validator(mode="after")
    def _installed(self) -> TrackingConfig:
        import importlib.util

        for key, on, package in (("tensorboard", self.tensorboard, "tensorboard"), ("mlflow", self.mlflow, "mlflow")):
            if on and importlib.util.find_spec(package) is None:
                raise ValueError(f"tracking.{key} needs the {package} package: pip install 'siegecraft[track]'")
        return self


class OutputConfig(Section):
    root: str = "runs"
    report: bool = True


INDIVIDUAL_UPDATE_AGGREGATORS = {"median", "trimmed_mean", "krum", "multi_krum", "geomedian", "fltrust"}


class Experiment(Section):
    """One experiment: everything a run needs, resolved and validated."""

    name: str = "experiment"
    seed: int = 0
    topology: Literal["federated", "hogwild", "serverless"] = "federated"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    fl: FLConfig = Field(default_factory=FLConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    secure: SecureConfig = Field(default_factory=SecureConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    hogwild: dict[str, Any] = Field(default_factory=dict)
    serverless: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cross_checks(self) -> Experiment:
        if self.secure.aggregation == "zero-sum" and self.defense.aggregator in INDIVIDUAL_UPDATE_AGGREGATORS:
            raise ValueError(
                f"defense.aggregator={self.defense.aggregator!r} needs individual client updates, but "
                "secure.aggregation='zero-sum' reveals only their sum; use aggregator='mean' (clipping "
                "inside training enclaves stays allowed) or secure.aggregation='plain'"
            )
        bad = [c for c in self.attack.clients if not 0 <= c < self.fl.clients]
        if bad:
            raise ValueError(f"attack.clients {bad} out of range 0..{self.fl.clients - 1}")
        return self


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names allowed at the parent of `loc`, walking the schema; None when unknown."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def format_validation_error(err: ValidationError, model: type[BaseModel] = Experiment) -> str:
    """One line per problem: key path, value, and what is allowed."""
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"unknown key {path!r}{hint}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"{path}{shown}: {msg}")
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (["a", "b"], 3); the value is read as TOML, falling back to a bare string."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `key.path=value` set (creating tables as needed)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a table")
            node = nxt
        node[path[-1]] = value
    return out


def build_experiment(raw: dict[str, Any], *, check_sections: bool = True) -> Experiment:
    """Validate a raw dict into an `Experiment`, raising ConfigError with readable lines.

    `check_sections=False` skips the topology/attack section checks (for callers that re-check them).
    """
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    if check_sections:
        from siegecraft.topologies import validate_sections

        validate_sections(exp)
    return exp


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read a TOML experiment file, apply overrides, validate."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    return build_experiment(apply_overrides(raw, overrides or []))


def to_toml(data: dict[str, Any]) -> str:
    """Serialise nested dicts of scalars and lists as TOML (None values are omitted)."""
    scalars, tables = [], []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            scalars.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(scalars)
    for key, table in tables:
        out += _toml_table([key], table)
    return out.strip() + "\n"


def _toml_table(path: list[str], table: dict[str, Any]) -> str:
    scalars = [(k, v) for k, v in table.items() if v is not None and not isinstance(v, dict)]
    subtables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    text = f"\n\n[{'.'.join(_toml_key(p) for p in path)}]\n"
    text += "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in scalars)
    for k, v in subtables:
        text += _toml_table([*path, k], v)
    return text


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return "nan" if isinstance(v, float) and math.isnan(v) else repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return _toml_value(str(v))
