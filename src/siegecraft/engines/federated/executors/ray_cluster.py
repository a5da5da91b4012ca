"""The `ray` executor: Ray actors holding the partitions and one model replica each.

The training set goes into Ray's object store once, as numpy arrays every actor on a node maps
without copying; each round the global weights are put there once and every task names them. Actors
run `ClientTrainer.train`, so updates match inline for the same seed. `address=None` starts a private
local Ray instance (never someone else's); "auto" or "host:port" / "ray://host:port" joins a cluster,
whose nodes need siegecraft installed.

Fault tolerance: an actor that dies (killed, its node lost) has its client retried on a new actor, at
most `retries` times per client; the update is the same as a fault-free run's. A client that raises
is a bug, not a fault: its `RayTaskError`, with the remote traceback, fails the run at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
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


def stop_autoscaler_monitor(ray: Any) -> None:
    """SIGKILL the autoscaler monitor of the private local instance this process started, before shutdown.

    Why: `ray.shutdown()` stops GCS first, then sends the monitor SIGTERM; the monitor's handler tries to
    report to the dead GCS and is SIGKILLed after a 1 s grace period (Ray 2.60), so a shutdown takes
    1.1-1.4 s instead of 0.3 s. A private single-node instance has nothing to autoscale and the monitor keeps
    no state. Uses Ray's private node handle; when that is absent (another Ray version), does nothing.
    """
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    for info in getattr(node, "all_processes", {}).get("monitor", []):
        proc = getattr(info, "process", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over a (read-only, object-store) array without copying; nothing here writes into it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class TrainerActor:
    """A ClientTrainer-equivalent living in one Ray worker: data mapped from the object store, one replica.

    It is created empty, so that it boots (a fresh interpreter importing torch and siegecraft) while the
    driver is still loading the data, and receives its data with `load`; Ray runs one caller's calls to
    an actor in order, so every `train` follows the `load`.
    """

    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.trainer: ClientTrainer | None = None

    def load(
        self, model: SiegeModel, data: dict[str, Any], partitions: list, train_cfg: TrainConfig, seed: int
    ) -> None:
        train_set = ImageDataset(
            _tensor(data["x"]), _tensor(data["y"]), data["num_classes"], data["name"], data["classes"]
        )
        self.trainer = ClientTrainer(lambda: model, train_set, partitions, train_cfg, seed)

    def train(self, rnd: int, client_id: int, weights: np.ndarray) -> tuple[int, np.ndarray, int, dict]:
        if self.trainer is None:
            raise RuntimeError("TrainerActor: train() before load()")
        upd = self.trainer.train(client_id, rnd, _tensor(weights))
        return client_id, upd.update.numpy(), upd.num_samples, upd.metrics

    def node_id(self) -> str:
        """The Ray node this actor runs on (hex id), so a caller can see where its clients trained."""
        return import_ray().get_runtime_context().get_node_id()


def dataset_payload(ds: ImageDataset) -> dict[str, Any]:
    """The training set as numpy arrays (zero-copy in Ray's object store) plus its metadata."""
    return {"x": ds.x.numpy(), "y": ds.y.numpy(), "num_classes": ds.num_classes, "name": ds.name,
            "classes": ds.classes}


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """`workers` Ray actors (1 CPU each), fed one client at a time so uneven clients balance out."""

    def __init__(self, workers: int = 2, address: str | None = None, *, retries: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"ray executor: workers must be >= 1, got {workers}")
        if retries < 0:
            raise ValueError(f"ray executor: retries must be >= 0, got {retries}")
        self.workers = workers
        self.address = address
        self.retries = retries
        self.actors: list[Any] = []
        self.owns_ray = False
        self.restarts = 0  # actors started to replace dead ones, over the whole run
        self.on_dispatch: Callable[[RayExecutor], None] | None = None  # test hook: after clients go out

    prepares = True  # ray.init and the actors' boot overlap the engine's data loading

    def prepare(self) -> None:
        """Start (or join) Ray and create the actors empty: they boot while the caller loads the data."""
        ray = import_ray()
        self.owns_ray = connect_ray(self.address, num_cpus=self.workers)
        self._actor_cls = ray.remote(num_cpus=1)(TrainerActor)
        self.actors = [self._actor_cls.remote() for _ in range(self.workers)]

    def start(self, trainer: ClientTrainer) -> None:
        super().start(trainer)
        if not self.actors:
            self.prepare()
        ray = import_ray()
        # each put once: the actors map the arrays, and the model is pickled once, not per actor
        self._actor_args = (ray.put(trainer.model), ray.put(dataset_payload(trainer.train_set)),
                            ray.put(trainer.partitions), trainer.train_cfg, trainer.seed)
        for actor in self.actors:
            actor.load.remote(*self._actor_args)

    def run(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> list[ClientUpdate]:
        if not self.actors:
            raise RuntimeError("ray executor: call start(trainer) before run()")
        ray = import_ray()
        weights = ray.put(global_weights.numpy())
        todo, idle = list(clients), list(range(len(self.actors)))
        lost = dict.fromkeys(clients, 0)
        pending: dict[Any, tuple[int, int]] = {}  # task -> (actor slot, client)
        by_id: dict[int, ClientUpdate] = {}
        while todo or pending:
            sent = bool(todo and idle)
            while todo and idle:
                slot, client = idle.pop(), todo.pop(0)
                pending[self.actors[slot].train.remote(rnd, client, weights)] = (slot, client)
            if sent and self.on_dispatch is not None:
                self.on_dispatch(self)
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                slot, client = pending.pop(ref)
                try:
                    client_id, update, num_samples, metrics = ray.get(ref)
                except ray.exceptions.RayActorError as err:  # the actor died; a RayTaskError (a bug) propagates
                    self._replace(slot, client, rnd, lost, err)
                    todo.insert(0, client)
                else:
                    by_id[client_id] = ClientUpdate(client_id, torch.from_numpy(update.copy()), num_samples, metrics)
                idle.append(slot)
        return [by_id[c] for c in clients]

    def _replace(self, slot: int, client: int, rnd: int, lost: dict[int, int], err: Exception) -> None:
        """Start a new actor in `slot`, or fail once `client` has used its retries."""
        lost[client] += 1
        if lost[client] > self.retries:
            raise RuntimeError(
                f"ray executor: client {client} lost its actor {lost[client]} times in round {rnd}; giving up "
                f"after retries = {self.retries} (last: {type(err).__name__})") from err
        self.actors[slot] = self._actor_cls.remote()
        self.actors[slot].load.remote(*self._actor_args)
        self.restarts += 1

    def close(self) -> None:
        """Kill our actors; shut Ray down only if this executor started it."""
        if not self.actors and not self.owns_ray:
            return
        ray = import_ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.owns_ray:
            stop_autoscaler_monitor(ray)
            ray.shutdown()
            self.owns_ray = False
