"""The Executor interface: train a batch of benign clients against one set of global weights.

Executors differ only in where `ClientTrainer.train` runs; each must give the same updates as
inline for the same seed, because the seed of a client's training is fixed by (seed, round, id).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch

from siegecraft.core.registry import Registry

if TYPE_CHECKING:
    from siegecraft.engines.federated.client import ClientTrainer, ClientUpdate


class Executor(ABC):
    """Runs benign client training for a round."""

    def start(self, trainer: ClientTrainer) -> None:
        """Called once with the trainer whose data and model spec the workers should hold."""
        self.trainer = trainer

    @abstractmethod
    def run(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> list[ClientUpdate]:
        """Updates of `clients` for round `rnd`, in the order given."""

    def close(self) -> None:
        """Release workers."""


EXECUTORS: Registry[type[Executor]] = Registry("executor")


@EXECUTORS.register("inline")
class InlineExecutor(Executor):
    """Runs clients one after another in this process on the trainer's single model replica."""

    def run(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> list[ClientUpdate]:
        return [self.trainer.train(c, rnd, global_weights) for c in clients]


def build_executor(name: str, **options: Any) -> Executor:
    return EXECUTORS.get(name)(**options)
