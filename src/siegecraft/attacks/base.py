"""The adversary interface the federated engine calls, and the attack registry.

An attack is a client-side role (what its clients upload), plus optional round hooks and a
final inference-time step. The default of every hook is benign, so an attack overrides only
what it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict

from siegecraft.registry import Registry

if TYPE_CHECKING:
    from siegecraft.config import Experiment
    from siegecraft.data import ImageDataset
    from siegecraft.federated.client import ClientTrainer, ClientUpdate
    from siegecraft.models import SiegeModel


class AttackOptions(BaseModel):
    """Base of every attack's options model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class FederationContext:
    """What an adversary may see of the federation: its own clients' data and the global model."""

    exp: Experiment
    train_set: ImageDataset
    test_set: ImageDataset
    partitions: list
    model_factory: Callable[[], SiegeModel]
    trainer: ClientTrainer
    figures_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)


class Adversary:
    """Base adversary: behaves exactly like a benign client unless a hook is overridden."""

    options_model: type[AttackOptions] = AttackOptions

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
