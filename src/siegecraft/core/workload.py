"""The dataset pair and model factory an experiment describes, shared by every topology."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from siegecraft.core.config import ExperimentBase
from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel, build_model


@dataclass
class Workload:
    """Train/test sets already adapted to the model's input, and a seeded model factory."""

    train: ImageDataset
    test: ImageDataset
    model_factory: Callable[[], SiegeModel]
    channels: int
    image_size: int


def _first(ds: ImageDataset, n: int | None) -> ImageDataset:
    return ds if n is None or n >= len(ds) else ds.subset(torch.arange(n))


def _seeded_model(name: str, seed: int, **kwargs: object) -> SiegeModel:
    torch.manual_seed(seed)
    return build_model(name, **kwargs)


def load_splits(exp: ExperimentBase) -> tuple[ImageDataset, ImageDataset]:
    """The (train, test) sets of `[data]`, limited but not yet adapted to the model."""
    d = exp.data
    train = _first(load_dataset(d.dataset, "train", data_dir=d.data_dir, **d.options), d.train_limit)
    test = _first(load_dataset(d.dataset, "test", data_dir=d.data_dir, **d.options), d.test_limit)
    return train, test


def build_workload(exp: ExperimentBase) -> Workload:
    """Load and adapt the data, fix the model's input shape, and seed the initial weights."""
    m = exp.model
    train, test = load_splits(exp)
    c, h, _ = train.shape
    channels, size = m.channels or c, m.image_size or h
    if (channels, size) != (c, h):
        train, test = train.adapt(channels, size), test.adapt(channels, size)
    factory = partial(
        _seeded_model, m.name, exp.seed,
        in_channels=channels, num_classes=train.num_classes, image_size=size, **m.options,
    )
    return Workload(train, test, factory, channels, size)
