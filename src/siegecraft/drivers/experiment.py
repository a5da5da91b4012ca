"""The experiment schema as users write it: a typed union of the engines' schemas, chosen by `topology`.

`load_experiment(path, overrides, plugins)` reads TOML, applies `--set key=value` overrides, loads the
plugins (built-in engines and add-ons, `plugins = [...]`, `--plugin`, entry points), and validates with
the chosen topology's schema. Every mistake is a `ConfigError` whose one-line message names the full key
path, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

from pydantic import ValidationError

from siegecraft.core.config import ConfigError, ExperimentBase, FieldError, apply_overrides, format_validation_error, read_toml
from siegecraft.core.data.paths import DatasetNotFoundError
from siegecraft.core.topology import TOPOLOGIES, Topology
from siegecraft.drivers.plugins import load_all
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
    load_all([*(plugins or []), *listed])
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


def preflight(exp: ExperimentBase) -> None:
    """Checks that need the data (before any run directory exists); ConfigError on a mistake."""
    try:
        TOPOLOGIES.get(exp.topology).preflight(exp)
    except (FieldError, DatasetNotFoundError) as err:
        raise ConfigError(str(err)) from None
