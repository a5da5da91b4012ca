"""A client's local work: start from the global weights, train, return the weight delta.

One `ClientTrainer` holds one model replica and the shared training set; clients are just
index arrays into it, so idle clients cost their indices, never a model copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel, flat_params, load_flat_params
from siegecraft.core.training import TrainConfig, local_train
from siegecraft.engines.federated.sampling import client_seed


@dataclass
class ClientUpdate:
    """What a client uploads: its weight delta and how many samples produced it."""

    client_id: int
    update: torch.Tensor
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)


class ClientTrainer:
    """Runs benign local training for any client on a single resident model replica."""

    def __init__(
        self,
        model_factory: Callable[[], SiegeModel],
        train_set: ImageDataset,
        partitions: list,
        train_cfg: TrainConfig,
        seed: int,
    ) -> None:
        self.model = model_factory()
        self.train_set = train_set
        self.partitions = partitions
        self.train_cfg = train_cfg
        self.seed = seed

    def client_data(self, client_id: int) -> ImageDataset:
        return self.train_set.subset(self.partitions[client_id])

    def train(
        self, client_id: int, rnd: int, global_weights: torch.Tensor, data: ImageDataset | None = None
    ) -> ClientUpdate:
        """Benign update of `client_id` in round `rnd` (optionally on substitute `data`)."""
        data = data if data is not None else self.client_data(client_id)
        load_flat_params(self.model, global_weights)
        cfg = self.train_cfg.for_round(rnd)
        stats = local_train(self.model, data, cfg, seed=client_seed(self.seed, rnd, client_id))
        update = flat_params(self.model) - global_weights
        return ClientUpdate(client_id, update, len(data), {"loss": stats["loss"]})
