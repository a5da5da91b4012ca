"""The attacker's snapshot: the global model it received at its attack round.

Every attack computation (mapping, anchors, cloaks) uses this frozen copy; only inference queries go
to the final global model, so what the attack learns must transfer across the remaining rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from siegecraft.core.models import SiegeModel, load_flat_params

__all__ = ["Snapshot", "frozen_model"]


def frozen_model(factory: Callable[[], SiegeModel], weights: torch.Tensor) -> SiegeModel:
    """A fresh eval-mode replica holding `weights`, with gradients off for its parameters.

    The factory re-seeds torch's global generator, so it runs inside `fork_rng`: building a replica
    never changes what the federation draws afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        model = factory()
    load_flat_params(model, weights)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class Snapshot:
    """The global weights received at `round` (a copy: later rounds never change it)."""

    round: int
    weights: torch.Tensor

    @classmethod
    def capture(cls, rnd: int, weights: torch.Tensor) -> Snapshot:
        return cls(rnd, weights.detach().clone())

    def model(self, factory: Callable[[], SiegeModel]) -> SiegeModel:
        return frozen_model(factory, self.weights)
