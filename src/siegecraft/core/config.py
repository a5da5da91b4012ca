"""The part of the experiment schema every topology shares, and how config mistakes are reported.

`ExperimentBase` holds what any run needs (data, model, the one `[train]` section, output, tracking,
plugins); each engine subclasses it with `topology` fixed and its own sections. Every mistake is reported
as one line naming the full key path, the bad value and what is allowed (`ConfigError`).
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import tomllib
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from siegecraft.core.data.datasets import DATASETS
from siegecraft.core.data.partition import PARTITIONERS
from siegecraft.core.models.catalog import MODELS, model_options
from siegecraft.core.registry import Registry
from siegecraft.core.training import TrainConfig


class ConfigError(ValueError):
    """A mistake a user made in a config or on the command line; the message is one line."""


class RunFailed(RuntimeError):
    """A run stopped by a failure the user can act on (a function memory tier too small, retries used up).

    Unlike ConfigError it is raised after work began (the run directory keeps what was done); the CLI
    still prints it as one line and exits 2, because the fix is a setting, not a bug report.
    """


class FieldError(ValueError):
    """A cross-field problem raised inside a validator, located by `path` relative to that validator's model.

    `format_validation_error` joins the validator's location with `path`, so the message names the full
    key (`attack.options.attack_round`), never an empty one.
    """

    def __init__(self, path: Sequence[str | int], value: Any, allowed: str) -> None:
        self.path = tuple(path)
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key_path(self.path)} = {value!r}: {allowed}")


def registered(registry: Registry[Any]) -> Any:
    """A `str` config field that must name an entry of `registry` (the error lists the known names)."""

    def check(name: str) -> str:
        registry.get(name)
        return name

    return Annotated[str, AfterValidator(check)]


DatasetName = registered(DATASETS)
PartitionName = registered(PARTITIONERS)
ModelName = registered(MODELS)


class Section(BaseModel):
    """A config table: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def check_options(options: BaseModel | dict[str, Any], model: type[BaseModel], where: Sequence[str]) -> BaseModel:
    """Validate an options table against `model`, re-raising the first problem as a FieldError under `where`."""
    try:
        return model.model_validate(options if isinstance(options, dict) else options.model_dump())
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        if first["type"] == "extra_forbid" or first["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(model.model_fields)) or "(none)"
            raise FieldError((*where, *loc), first.get("input"), f"unknown key; allowed keys: {allowed}") from None
        raise FieldError((*where, *loc), first.get("input"), first["msg"].removeprefix("Value error, ")) from None


class DataConfig(Section):
    """Which dataset, how it is split across clients, and optional size limits."""

    dataset: DatasetName = "fashion_mnist"
    data_dir: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the dataset loader")
    partition: PartitionName = Field("iid", description="a registered partitioner: iid, dirichlet, shards, ...")
    alpha: float | None = Field(None, gt=0)
    min_partition_size: int = Field(0, ge=0)
    classes_per_client: int | None = Field(None, ge=1)
    train_limit: int | None = Field(None, ge=1, description="use only the first N training samples")
    test_limit: int | None = Field(None, ge=1, description="evaluate on only the first N test samples")



    @model_validator(mode="after")
    def _partition_params(self) -> DataConfig:
        loader = DATASETS.get(self.dataset)
        allowed = sorted({"channels", "size"} | set(getattr(loader, "options", ())))
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise FieldError(("options", unknown[0]), self.options[unknown[0]],
                             f"not an option of dataset {self.dataset!r}; allowed: {', '.join(allowed)}")
        params = inspect.signature(PARTITIONERS.get(self.partition)).parameters.values()
        for p in params:
            if p.kind is p.KEYWORD_ONLY and p.default is p.empty and getattr(self, p.name, None) is None:
                raise FieldError(("partition",), self.partition, f"this partitioner needs data.{p.name} to be set")
        return self

    def partition_params(self) -> dict[str, Any]:
        """The keyword options the chosen partitioner accepts, from this section's fields."""
        params = inspect.signature(PARTITIONERS.get(self.partition)).parameters
        return {k: getattr(self, k) for k in ("alpha", "min_partition_size", "classes_per_client")
                if k in params and getattr(self, k) is not None}


class ModelConfig(Section):
    """Model architecture; input shape defaults to the dataset's own."""

    name: ModelName = "cnn"
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the model")
    image_size: int | None = Field(None, ge=8)
    channels: int | None = Field(None, ge=1, le=3)


    @model_validator(mode="after")
    def _known_options(self) -> ModelConfig:
        allowed = model_options(self.name)
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise FieldError(("options", unknown[0]), self.options[unknown[0]],
                             f"not an option of model {self.name!r}; allowed: {', '.join(allowed) or '(none)'}")
        return self


class TrackingConfig(Section):
    """Experiment trackers fed every round: TensorBoard event files and/or an MLflow tracking URI."""

    tensorboard: bool = False
    mlflow: str | None = Field(None, description="tracking URI, e.g. file:///abs/mlruns or http://host:5000")
    mlflow_experiment: str | None = Field(None, description="MLflow experiment name; default: the run's name")

    @model_validator(mode="after")
    def _installed(self) -> TrackingConfig:
        for key, on, package in (("tensorboard", self.tensorboard, "tensorboard"), ("mlflow", self.mlflow, "mlflow")):
            if on and importlib.util.find_spec(package) is None:
                raise FieldError((key,), on, f"needs the {package} package: pip install 'siegecraft[track]'")
        return self


class OutputConfig(Section):
    root: str = "runs"
    report: bool = True


class ExperimentBase(Section):
    """What every experiment has; an engine subclasses it with its own `topology` and sections."""

    name: str = "experiment"
    seed: int = 0
    topology: str = "federated"
    plugins: list[str] = Field(default_factory=list, description="modules imported first; they register extensions")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def check_train_keys(self, supported: Sequence[str]) -> None:
        """Fail on `[train]` keys set to a non-default value that this topology does not use."""
        defaults = TrainConfig()
        for key in self.train.model_fields_set:
            if key not in supported and getattr(self.train, key) != getattr(defaults, key):
                raise FieldError(("train", key), getattr(self.train, key),
                                 f"not used by topology {self.topology!r}; it uses train.{', train.'.join(supported)}")


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str] | None:
    """Field names allowed at the parent of `loc`, walking the schema; None when unknown."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def key_path(loc: Sequence[str | int]) -> str:
    """A location as users write it: `defense.names[0]`, `attack.options.attack_round`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_error(e: dict[str, Any], model: Any) -> str:
    """One pydantic error as `key = value: what is allowed`, with the full key path."""
    loc = tuple(e["loc"])
    cause = (e.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return f"{key_path((*loc, *cause.path))} = {cause.value!r}: {cause.allowed}"
    path = key_path(loc) or "(top level)"
    if e["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = f"allowed keys: {', '.join(allowed)}" if allowed else "not a known key"
        return f"{path} = {e.get('input')!r}: unknown key; {hint}"
    msg = e["msg"].removeprefix("Value error, ")
    value = e.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"{path}{shown}: {msg}"


def format_validation_error(err: ValidationError, model: Any) -> str:
    """The first problem on one line (with a count of the others): key path, value, what is allowed."""
    errors = err.errors()
    line = describe_error(errors[0], model)
    more = len(errors) - 1
    return f"{line} (and {more} more problem{'s' if more > 1 else ''})" if more else line


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (["a", "b"], 3); the value is read as TOML, falling back to a bare string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: must look like key.path=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {item!r}: the key is empty; it must look like key.path=value")
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
                raise ConfigError(f"--set {item!r}: {part} = {nxt!r} is a value, not a table")
            node = nxt
        node[path[-1]] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw table of a TOML experiment file (ConfigError when missing or malformed)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config = {str(p)!r}: file not found")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config = {str(p)!r}: not valid TOML ({err})") from None


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
