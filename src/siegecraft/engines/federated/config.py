"""`topology = "federated"`: the experiment schema of the federated engine.

Sections: `[fl]` (rounds, sampling, server rule), `[runtime]` (where client work runs), `[secure]`
(secure aggregation), `[attack]` and `[defense]`. Every name is a registry lookup, so a plugin's
strategy, executor, aggregator, defense, attack or secure aggregation is configured like a built-in one.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from siegecraft.core.config import ExperimentBase, FieldError, Section, check_options, registered
from siegecraft.engines.federated.aggregation import AGGREGATORS, is_linear
from siegecraft.engines.federated.executors.base import EXECUTORS
from siegecraft.engines.federated.extensions import ATTACKS, Adversary, build_adversary
from siegecraft.engines.federated.runners import FEDERATED_RUNNERS, unknown_runner_message
from siegecraft.engines.federated.secure import SECURE_AGGREGATIONS
from siegecraft.engines.federated.strategy import STRATEGIES
from siegecraft.engines.federated.wrappers import STRATEGY_DEFENSES, split_defense_options

StrategyName = registered(STRATEGIES)
ExecutorName = registered(EXECUTORS)
SecureAggregationName = registered(SECURE_AGGREGATIONS)
AttackName = registered(ATTACKS)
AggregatorName = registered(AGGREGATORS)


class FLConfig(Section):
    """Federated rounds, client sampling and the server update rule."""

    rounds: int = Field(5, ge=1)
    clients: int = Field(10, ge=1)
    clients_per_round: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    sampling: Literal["random", "round_robin"] = "random"
    strategy: StrategyName = Field("fedavg", description="a registered strategy: fedavg, fedavgm, ...")
    server_lr: float = Field(1.0, gt=0)
    server_momentum: float = Field(0.9, ge=0, lt=1)
    eval_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(0, ge=0, description="0 disables checkpoints")
    engine: str = Field("siegecraft", description="who runs the rounds: 'siegecraft' or a registered bridge ('flower')")

    @model_validator(mode="after")
    def _engine(self) -> FLConfig:
        if self.engine != "siegecraft" and self.engine not in FEDERATED_RUNNERS:
            raise FieldError(("engine",), self.engine, unknown_runner_message(self.engine))
        return self

    @model_validator(mode="after")
    def _sampling(self) -> FLConfig:
        if self.clients_per_round is not None and self.fraction is not None:
            raise FieldError(("fraction",), self.fraction, "set fl.clients_per_round or fl.fraction, not both")
        if self.clients_per_round is not None and self.clients_per_round > self.clients:
            raise FieldError(("clients_per_round",), self.clients_per_round,
                             f"at most fl.clients = {self.clients}")
        return self

    def per_round(self) -> int:
        if self.clients_per_round is not None:
            return self.clients_per_round
        if self.fraction is not None:
            return max(1, round(self.fraction * self.clients))
        return self.clients


class RuntimeConfig(Section):
    """Where client work runs: a registered executor (inline, processes, ray, ...)."""

    executor: ExecutorName = "inline"
    workers: int = Field(2, ge=1)
    address: str | None = None



class SecureConfig(Section):
    """Secure aggregation: plain FedAvg, or a registered one (Citadel's `zero_sum` masked tree)."""

    aggregation: SecureAggregationName = "plain"
    fanout: int = Field(10, ge=2)
    on_dropout: Literal["remask", "abort"] = "remask"
    max_update_norm: float | None = Field(
        None, gt=0, description="L2 bound on each party's update, applied inside its training enclave")
    attestation: str = Field("mock", description="attestation backend; 'mock' simulates, with no hardware protection")


    @model_validator(mode="after")
    def _aggregation_checks(self) -> SecureConfig:
        SECURE_AGGREGATIONS.get(self.aggregation).check(self)
        return self

    @property
    def sum_only(self) -> bool:
        """Whether the server sees only the sum of the updates."""
        return SECURE_AGGREGATIONS.get(self.aggregation).sum_only


class AttackConfig(Section):
    """An adversary: its registered name, which clients it controls, and its options."""

    name: AttackName = "none"
    clients: list[int] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict, description="validated by the attack's options model")


    @model_validator(mode="after")
    def _options(self) -> AttackConfig:
        check_options(self.options, ATTACKS.get(self.name).options_model, ("options",))
        if self.name != "none" and not self.clients:
            raise FieldError(("clients",), self.clients, f"attack {self.name!r} needs at least one client id")
        return self

    def build(self) -> Adversary:
        return build_adversary(self.name, self.clients, self.options)


class DefenseConfig(Section):
    """Server-side robust aggregation and strategy wrappers, by registered name.

    `aggregator` (with the scalar entries of `options`) picks the aggregation rule; `names` lists strategy
    wrappers, each configured by its own `[defense.options.<name>]` table.
    """

    aggregator: AggregatorName = "mean"
    options: dict[str, Any] = Field(default_factory=dict)
    names: list[str] = Field(default_factory=list)


    @model_validator(mode="after")
    def _checks(self) -> DefenseConfig:
        if len(set(self.names)) != len(self.names):
            raise FieldError(("names",), self.names, "each defense may be named once")
        for i, name in enumerate(self.names):
            if name not in STRATEGY_DEFENSES:
                raise FieldError(("names", i), name,
                                 f"not a federated defense; known: {', '.join(STRATEGY_DEFENSES.names())}")
        agg_options, tables = split_defense_options(self.names, self.options)
        nested = [k for k, v in agg_options.items() if isinstance(v, Mapping)]
        if nested:
            raise FieldError(("options", nested[0]), agg_options[nested[0]],
                             f"a table, but {nested[0]!r} is not in defense.names {self.names}")
        params = inspect.signature(AGGREGATORS.get(self.aggregator)).parameters.values()
        allowed = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        unknown = sorted(set(agg_options) - set(allowed))
        if unknown:
            raise FieldError(("options", unknown[0]), agg_options[unknown[0]],
                             f"not an option of aggregator {self.aggregator!r}; allowed: {', '.join(allowed) or '(none)'}")
        for name, table in tables.items():
            if not isinstance(table, Mapping):
                raise FieldError(("options", name), table, "must be a table of that defense's options")
            check_options(dict(table), STRATEGY_DEFENSES.get(name).options_model, ("options", name))
        return self


class FederatedExperiment(ExperimentBase):
    """Federated learning: rounds of sampled clients, a server strategy, optional attack, defense and
    secure aggregation."""

    topology: Literal["federated"] = "federated"
    fl: FLConfig = Field(default_factory=FLConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    secure: SecureConfig = Field(default_factory=SecureConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> FederatedExperiment:
        if self.secure.sum_only:
            if not is_linear(AGGREGATORS.get(self.defense.aggregator)):
                raise FieldError(("defense", "aggregator"), self.defense.aggregator,
                                 f"needs individual client updates, but secure.aggregation = "
                                 f"{self.secure.aggregation!r} reveals only their sum; use 'mean' (clipping inside "
                                 "training enclaves stays allowed: secure.max_update_norm) or secure.aggregation = 'plain'")
            if self.defense.names:
                raise FieldError(("defense", "names"), self.defense.names,
                                 f"these screen individual client updates, but secure.aggregation = "
                                 f"{self.secure.aggregation!r} reveals only their sum; drop them or use 'plain'")
        bad = [c for c in self.attack.clients if not 0 <= c < self.fl.clients]
        if bad:
            raise FieldError(("attack", "clients"), self.attack.clients,
                             f"client ids must lie in 0..{self.fl.clients - 1} (fl.clients = {self.fl.clients})")
        attack = ATTACKS.get(self.attack.name)
        attack.check(attack.options_model.model_validate(self.attack.options), self)
        if self.fl.engine in FEDERATED_RUNNERS:  # the built-in 'siegecraft' runner honours every setting
            FEDERATED_RUNNERS.get(self.fl.engine).check(self)
        return self
