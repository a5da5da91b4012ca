"""Small Fashion-MNIST subsets and a tiny CNN, so every Hogwild test runs in a few seconds on 2 cores."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel, build_model
from siegecraft.engines.hogwild.config import HogwildConfig


@pytest.fixture(scope="session")
def fmnist_small() -> tuple[ImageDataset, ImageDataset]:
    train = load_dataset("fashion_mnist", "train").subset(torch.arange(1600))
    val = load_dataset("fashion_mnist", "test").subset(torch.arange(500))
    return train, val


@pytest.fixture
def tiny_model() -> Callable[[], SiegeModel]:
    def make() -> SiegeModel:
        torch.manual_seed(0)
        return build_model("cnn", in_channels=1, num_classes=10, image_size=28, width=8, hidden=32)

    return make


@pytest.fixture
def quick_cfg() -> Callable[..., HogwildConfig]:
    def make(**overrides: object) -> HogwildConfig:
        base: dict[str, object] = {"workers": 2, "epochs": 1, "lr": 0.05, "momentum": 0.5, "batch_size": 32,
                                   "eval_every_s": None, "timeout_s": 120}
        base.update(overrides)
        return HogwildConfig.model_validate(base)

    return make
