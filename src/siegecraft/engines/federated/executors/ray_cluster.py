"""The `ray` executor: Ray actors holding the partitions and one model replica each.

The training set goes into Ray's object store once, as numpy arrays every actor on a node maps
without copying; each round the global weights are put there once and every task names them. Actors
run `ClientTrainer.train`, so updates match inline for the same seed. `address=None` starts a private
local Ray instance (never someone else's); "auto" or "host:port" / "ray://host:port" joins a cluster,
whose nodes need siegecraft installed.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel
from siegecraft.core.training import TrainConfig
from siegecraft.engines.federated.client import ClientTrainer, ClientUpdate
from siegecraft.engines.federated.executors.base import EXECUTORS, Executor


def import_ray() -> Any:
    """The `ray` module, or an ImportError saying which extra provides it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("the ray executor needs Ray: pip install 'siegecraft[ray]'") from err
    return ray


def connect_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Join `address` (or start a private local instance when None); True when this call started Ray."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "configure_logging": False}
    with warnings.catch_warnings():  # Ray's notice about a future change to GPU env vars; irrelevant here
        warnings.filterwarnings("ignore", message=".*accelerator visible devices.*", category=FutureWarning)
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, **options)
        else:
            ray.init(address=address, **options)
    return True


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over a (read-only, object-store) array without copying; nothing here writes into it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class TrainerActor:
    """A ClientTrainer-equivalent living in one Ray worker: data mapped from the object store, one replica."""

    def __init__(
        self, model: SiegeModel, data: dict[str, Any], partitions: list, train_cfg: TrainConfig, seed: int
    ) -> None:
        torch.set_num_threads(1)
        train_set = ImageDataset(
            _tensor(data["x"]), _tensor(data["y"]), data["num_classes"], data["name"], data["classes"]
        )
        self.trainer = ClientTrainer(lambda: model, train_set, partitions, train_cfg, seed)

    def train(self, rnd: int, client_id: int, weights: np.ndarray) -> tuple[int, np.ndarray, int, dict]:
        upd = self.trainer.train(client_id, rnd, _tensor(weights))
        return client_id, upd.update.numpy(), upd.num_samples, upd.metrics


def dataset_payload(ds: ImageDataset) -> dict[str, Any]:
    """The training set as numpy arrays (zero-copy in Ray's object store) plus its metadata."""
    return {"x": ds.x.numpy(), "y": ds.y.numpy(), "num_classes": ds.num_classes, "name": ds.name,
            "classes": ds.classes}


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """`workers` Ray actors (1 CPU each), fed one client at a time so uneven clients balance out."""

    def __init__(self, workers: int = 2, address: str | None = None) -> None:
        if workers < 1:
            raise ValueError(f"ray executor: workers must be >= 1, got {workers}")
        self.workers = workers
        self.address = address
        self.actors: list[Any] = []
        self.owns_ray = False

    def start(self, trainer: ClientTrainer) -> None:
        super().start(trainer)
        ray = import_ray()
        self.owns_ray = connect_ray(self.address, num_cpus=self.workers)
        data = ray.put(dataset_payload(trainer.train_set))
        parts = ray.put(trainer.partitions)
        actor_cls = ray.remote(num_cpus=1)(TrainerActor)
        self.actors = [
            actor_cls.remote(trainer.model, data, parts, trainer.train_cfg, trainer.seed) for _ in range(self.workers)
        ]

    def run(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> list[ClientUpdate]:
        if not self.actors:
            raise RuntimeError("ray executor: call start(trainer) before run()")
        ray = import_ray()
        weights = ray.put(global_weights.numpy())
        todo, idle = list(clients), list(self.actors)
        pending: dict[Any, Any] = {}
        by_id: dict[int, ClientUpdate] = {}
        while todo or pending:
            while todo and idle:
                actor = idle.pop()
                pending[actor.train.remote(rnd, todo.pop(0), weights)] = actor
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                idle.append(pending.pop(ref))
                client_id, update, num_samples, metrics = ray.get(ref)
                by_id[client_id] = ClientUpdate(client_id, torch.from_numpy(update.copy()), num_samples, metrics)
        return [by_id[c] for c in clients]

    def close(self) -> None:
        """Kill our actors; shut Ray down only if this executor started it."""
        if not self.actors and not self.owns_ray:
            return
        ray = import_ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.owns_ray:
            ray.shutdown()
            self.owns_ray = False
