"""The adversary contract of the federated engine, and its attack registry.

An attack is a client-side role (what its clients upload), plus optional round hooks and a final
inference-time step; register one with `@ATTACKS.register("name")`. The default of every hook is benign,
so an attack overrides only what it changes. Its result contract: `success_metric` names the key of
`finish()`'s metrics that measures its success, and `check` rejects settings it cannot run with before
any work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel
from siegecraft.core.registry import Registry
from siegecraft.engines.federated.client import ClientTrainer, ClientUpdate


class AttackOptions(BaseModel):
    """Base of every attack's options model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class FederationContext:
    """What an adversary may see of the federation: its own clients' data and the global model."""

    exp: Any  # the FederatedExperiment being run
    train_set: ImageDataset
    test_set: ImageDataset
    partitions: list
    model_factory: Callable[[], SiegeModel]
    trainer: ClientTrainer
    figures_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)


class Adversary:
    """Base adversary: behaves exactly like a benign client unless a hook is overridden."""

    options_model: ClassVar[type[AttackOptions]] = AttackOptions
    #: the key of `finish()`'s metrics that measures this attack's success (None: it reports none)
    success_metric: ClassVar[str | None] = None

    @classmethod
    def check(cls, options: AttackOptions, exp: Any) -> None:
        """Reject settings this attack cannot run with, before any work (raise FieldError with the key path)."""
        del options, exp

    @classmethod
    def check_data(cls, options: AttackOptions, exp: Any, train_set: ImageDataset) -> None:
        """Checks that need the training data (its class count, ...); run before the run directory exists."""
        del options, exp, train_set

    def __init__(self, clients: list[int], options: AttackOptions) -> None:
        self.clients = set(clients)
        self.options = options

    def setup(self, ctx: FederationContext) -> None:
        """Called once before round 1."""

    def client_update(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        """The upload of an adversarial client; `benign()` computes the honest one."""
        del ctx, client_id, rnd, global_weights
        return benign()

    def on_round_end(self, ctx: FederationContext, rnd: int, global_weights: torch.Tensor) -> dict[str, Any]:
        """Metrics to add to this round's record (after aggregation)."""
        del ctx, rnd, global_weights
        return {}

    def finish(self, ctx: FederationContext, final_model: SiegeModel) -> dict[str, Any]:
        """Inference-time step on the final global model; returns summary metrics."""
        del ctx, final_model
        return {}


ATTACKS: Registry[type[Adversary]] = Registry("attack")


@ATTACKS.register("none")
class NoAttack(Adversary):
    """No adversary: every client is benign."""


def build_adversary(name: str, clients: list[int], options: dict[str, Any]) -> Adversary:
    """Instantiate a registered attack with validated options."""
    cls = ATTACKS.get(name)
    return cls(clients, cls.options_model.model_validate(options))
