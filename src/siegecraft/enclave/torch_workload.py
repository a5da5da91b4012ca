"""The model owner's trainer for real models: `siegecraft.core.training.local_train` inside a training enclave.

Bundle parameters: model name and options (for `build_model`), TrainConfig fields, the experiment
seed and a reference to the training function. The per-client seed is the one every executor uses
(`client_seed`: seed * 1_000_003 + rnd * 1_009 + client_id), so an enclave's update is bit-identical
to the one an in-process client computes from the same weights and data.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import build_model, flat_params, load_flat_params
from siegecraft.core.training import TrainConfig
from siegecraft.engines.federated.sampling import client_seed

TORCH_ENTRYPOINT = "siegecraft.enclave.torch_workload:local_sgd_trainer"
DEFAULT_TRAIN_FN = "siegecraft.core.training:local_train"


def resolve(reference: str) -> Callable[..., Any]:
    """'package.module:function' -> the function."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def load_partition(data: dict[str, Any]) -> ImageDataset:
    """This data owner's samples: the train split of the dataset, restricted to its indices."""
    full = load_dataset(data["dataset"], "train", data_dir=data.get("data_dir"), **data.get("options", {}))
    return full.subset(np.asarray(data["indices"], dtype=np.int64))


class LocalSGDTrainer:
    """Holds one model replica and this owner's data; `update` trains from the given global weights."""

    def __init__(self, params: dict[str, Any], data: dict[str, Any], client_id: int) -> None:
        torch.set_num_threads(1)
        self.data = load_partition(data)
        self.num_samples = len(self.data)
        self.model = build_model(params["model"], **params["model_options"])
        self.cfg = TrainConfig(**params["train"])
        self.seed = int(params["seed"])
        self.client_id = client_id
        self.train_fn = resolve(params.get("train_fn", DEFAULT_TRAIN_FN))
        self._warm_up()

    def _warm_up(self) -> None:
        """One throw-away step at load time, so round 1 does not pay torch's lazy initialisation.

        `update` reloads the global weights before training, so this leaves no trace in any update.
        """
        if self.num_samples:
            cfg = self.cfg.model_copy(update={"steps": 1, "epochs": 1})
            self.train_fn(self.model, self.data.subset(np.arange(min(2, self.num_samples))), cfg, seed=0)

    def update(self, rnd: int, global_weights: np.ndarray) -> np.ndarray:
        start = torch.from_numpy(np.ascontiguousarray(global_weights, dtype=np.float32))
        load_flat_params(self.model, start)
        cfg = self.cfg.for_round(rnd)
        self.train_fn(self.model, self.data, cfg, seed=client_seed(self.seed, rnd, self.client_id))
        return (flat_params(self.model) - start).numpy()


def local_sgd_trainer(*, params: dict[str, Any], data: dict[str, Any], client_id: int) -> LocalSGDTrainer:
    """Bundle entrypoint."""
    return LocalSGDTrainer(params, data, client_id)


def tensor_layout(model: torch.nn.Module) -> list[int]:
    """Sizes of the tensors `flat_params` concatenates, in its order (mask domains are per tensor)."""
    return [t.numel() for t in model.state_dict().values() if t.is_floating_point()]
