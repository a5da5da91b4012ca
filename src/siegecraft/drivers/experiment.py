"""The experiment schema as users write it: a typed union of the engines' schemas, chosen by `topology`.

`load_experiment(path, overrides, plugins)` reads TOML, applies `--set key=value` overrides, loads the
plugins (built-in engines and add-ons, `plugins = [...]`, `--plugin`, entry points), and validates with
the chosen topology's schema. Every mistake is a `ConfigError` whose one-line message names the full key
path, the value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeAlias

from pydantic import ValidationError

from siegecraft.core.config import (
    ConfigError,
    ExperimentBase,
    FieldError,
    apply_overrides,
    format_validation_error,
    read_toml,
)
from siegecraft.core.data.datasets import DATASETS
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.data.paths import DatasetNotFoundError, resolve_data_dir
from siegecraft.core.models.catalog import build_model
from siegecraft.core.topology import TOPOLOGIES, Topology
from siegecraft.core.workload import load_splits
from siegecraft.drivers.plugins import load_all, load_plugins
from siegecraft.engines.federated.config import FederatedExperiment
from siegecraft.engines.hogwild.experiment import HogwildExperiment
from siegecraft.engines.serverless.experiment import ServerlessExperiment

#: the built-in topologies' schemas (a plugin topology brings its own `ExperimentBase` subclass)
Experiment: TypeAlias = FederatedExperiment | HogwildExperiment | ServerlessExperiment


def topology_of(raw: dict[str, Any]) -> type[Topology]:
    """The registered topology a raw config names (default: federated)."""
    name = raw.get("topology", "federated")
    if not isinstance(name, str) or name not in TOPOLOGIES:
        raise ConfigError(f"topology = {name!r}: unknown topology; allowed: {', '.join(TOPOLOGIES.names())}")
    return TOPOLOGIES.get(name)


def build_experiment(raw: dict[str, Any], plugins: list[str] | None = None) -> ExperimentBase:
    """Validate a raw config dict with its topology's schema (ConfigError with a one-line message)."""
    listed = raw.get("plugins", [])
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise ConfigError(f"plugins = {listed!r}: must be a list of module names")
    load_all(plugins or [])  # --plugin modules, named as such in errors
    load_plugins(listed, key="plugins")
    schema = topology_of(raw).schema
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, schema)) from None


def load_experiment(
    path: str | Path, overrides: list[str] | None = None, plugins: list[str] | None = None
) -> ExperimentBase:
    """Read a TOML experiment file, apply overrides, load plugins, validate."""
    return build_experiment(apply_overrides(read_toml(path), overrides or []), plugins)


def _named_option(err: Exception, options: dict[str, Any]) -> str | None:
    """The option key an error message names (as a whole word), or the only option set; else None."""
    named = next((k for k in options if re.search(rf"\b{re.escape(k)}\b", str(err))), None)
    return named or (next(iter(options)) if len(options) == 1 else None)


def check_workload(exp: ExperimentBase) -> ImageDataset:
    """The dataset is there and loads with `[data]`'s options, and the model builds for it (FieldError).

    Returns the (limited) training set, so the topology's own checks need not load it again."""
    d, m = exp.data, exp.model
    try:
        DATASETS.get(d.dataset).locate(resolve_data_dir(d.data_dir))
    except DatasetNotFoundError as err:
        where = err.expected[0].parent if err.expected else resolve_data_dir(d.data_dir)
        raise FieldError(("data", "dataset"), d.dataset,
                         f"not found under {where}; run: siegecraft data fetch {d.dataset}") from None
    try:
        train, _ = load_splits(exp)
    except (ValueError, TypeError) as err:
        key = _named_option(err, d.options)
        path, value = (("data", "options", key), d.options[key]) if key else (("data", "dataset"), d.dataset)
        raise FieldError(path, value, f"the dataset rejects it ({err})") from None
    c, h, _ = train.shape
    try:
        build_model(m.name, in_channels=m.channels or c, num_classes=train.num_classes, image_size=m.image_size or h,
                    **m.options)
    except (ValueError, TypeError) as err:
        key = _named_option(err, m.options)
        path, value = (("model", "options", key), m.options[key]) if key else (("model", "name"), m.name)
        raise FieldError(path, value, f"the model rejects it ({err})") from None
    return train


def _one_line(err: Exception) -> str:
    """An error's message on one line."""
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip())


def preflight(exp: ExperimentBase) -> None:
    """Checks that need the data (before any run directory exists); ConfigError on a mistake."""
    try:
        TOPOLOGIES.get(exp.topology).preflight(exp, check_workload(exp))
    except (FieldError, DatasetNotFoundError) as err:
        raise ConfigError(_one_line(err)) from None
