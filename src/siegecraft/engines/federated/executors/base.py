"""The Executor interface: train a batch of benign clients against one set of global weights.

Executors differ only in where `ClientTrainer.train` runs; each must give the same updates as
inline for the same seed, because the seed of a client's training is fixed by (seed, round, id).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from siegecraft.core.registry import Registry

if TYPE_CHECKING:
    from siegecraft.engines.federated.client import ClientTrainer, ClientUpdate


class Executor(ABC):
    """Runs benign client training for a round.

    Life cycle: `prepare()` (optional warm-up), `start(trainer)`, `run(...)` per round, `close()`.
    """

    #: True when `prepare()` does slow work worth overlapping with loading the workload (the engine
    #: then loads the data on another thread while `prepare()` runs on the calling one).
    prepares: ClassVar[bool] = False

    def prepare(self) -> None:
        """Warm up before the workload exists (e.g. start a cluster and its workers); called at most once,
        before `start`. `close()` must release whatever it started, even if `start` is never called."""

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
