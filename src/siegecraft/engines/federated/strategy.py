"""Server strategies: how client updates are combined and how the global model moves.

A strategy holds an aggregator (composition, not flags): FedAvg with a robust rule is just
FedAvg(aggregator=median). `combine` sees individual updates; `apply` only the combined one,
which is all a zero-sum secure aggregation reveals - so both topologies share `apply`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from siegecraft.core.registry import Registry
from siegecraft.engines.federated.aggregation import Aggregator, weighted_mean


class Strategy(ABC):
    """Combine client updates into one, then apply it to the global weights."""

    def __init__(self, *, aggregator: Aggregator = weighted_mean, server_lr: float = 1.0) -> None:
        self.aggregator = aggregator
        self.server_lr = server_lr

    def begin_round(self, rnd: int, global_weights: torch.Tensor) -> None:
        """Called before `combine` with the weights the clients started from (defense wrappers use it)."""
        del rnd, global_weights

    def combine(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """One update from the [n_clients, n_params] stack."""
        return self.aggregator(updates, weights)

    def round_metrics(self) -> dict[str, Any]:
        """What the last `combine` wants logged in the round's record (defense wrappers fill it)."""
        return {}

    @abstractmethod
    def apply(self, global_weights: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """New global weights from the old ones and the combined update."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


@STRATEGIES.register("fedavg")
class FedAvg(Strategy):
    """w <- w + server_lr * mean update."""

    def apply(self, global_weights: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return global_weights + self.server_lr * update


@STRATEGIES.register("fedavgm")
class FedAvgM(Strategy):
    """FedAvg with server momentum: v <- m v + update; w <- w + server_lr * v."""

    def __init__(self, *, momentum: float = 0.9, **kw: Any) -> None:
        super().__init__(**kw)
        self.momentum = momentum
        self.velocity: torch.Tensor | None = None

    def apply(self, global_weights: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        self.velocity = update.clone() if self.velocity is None else self.momentum * self.velocity + update
        return global_weights + self.server_lr * self.velocity

    def state_dict(self) -> dict[str, Any]:
        return {"velocity": self.velocity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.velocity = state.get("velocity")
