"""Topology registry: how `siegecraft run` dispatches a validated Experiment.

Each topology names its runner and the validator of its own config section; modules are
imported lazily so that a missing optional dependency only matters when it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from siegecraft.registry import Registry

if TYPE_CHECKING:
    from siegecraft.config import Experiment


@dataclass(frozen=True)
class Topology:
    """Where its runner lives (`module:function`) and which Experiment section it owns."""

    runner: str
    section: str | None = None
    section_model: str | None = None
    checker: str | None = None  # `module:function(exp)` raising ValueError on cross-section mistakes

    def load_runner(self) -> Callable[..., dict[str, Any]]:
        return _import(self.runner)


def _import(target: str) -> Any:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


TOPOLOGIES: Registry[Topology] = Registry("topology")
TOPOLOGIES.add("federated", Topology("siegecraft.federated.engine:run_federated"))
TOPOLOGIES.add(
    "hogwild",
    Topology(
        "siegecraft.hogwild.runner:run_hogwild", "hogwild", "siegecraft.hogwild.config:HogwildConfig",
        checker="siegecraft.hogwild.runner:check_hogwild_experiment",
    ),
)
TOPOLOGIES.add(
    "serverless",
    Topology("siegecraft.serverless.runner:run_serverless", "serverless", "siegecraft.serverless.config:ServerlessConfig"),
)


def validate_sections(exp: Experiment) -> None:
    """Validate the sections owned by the chosen topology and by the attack, before any work."""
    from siegecraft.attacks.base import ATTACKS
    from siegecraft.config import ConfigError, format_validation_error
    from siegecraft.defenses.server import check_defense_config

    topo = TOPOLOGIES.get(exp.topology)
    if topo.section and topo.section_model:
        model = _import(topo.section_model)
        try:
            model.model_validate(getattr(exp, topo.section))
        except ValidationError as err:
            msg = format_validation_error(err, model).replace("\n  ", f"\n  {topo.section}.")
            raise ConfigError(msg) from None
    if topo.checker:
        try:
            _import(topo.checker)(exp)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err)) from None
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if exp.topology == "federated":
        try:
            attack_cls = ATTACKS.get(exp.attack.name)
            check_defense_config(exp)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        try:
            attack_cls.options_model.model_validate(exp.attack.options)
        except ValidationError as err:
            msg = format_validation_error(err, attack_cls.options_model).replace("\n  ", "\n  attack.options.")
            raise ConfigError(msg) from None
        if exp.attack.name != "none" and not exp.attack.clients:
            raise ConfigError(f"attack.clients: attack {exp.attack.name!r} needs at least one client id")
