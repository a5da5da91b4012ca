"""Fixtures: a private Redis on a free loopback port, the embedded store, an emulated platform, tiny data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import siegecraft.engines.serverless  # noqa: F401  (registers platforms and stores)
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.redis_server import RedisHandle, start_redis, stop_redis

PRELOAD = ("torch", "siegecraft.engines.serverless.worker")


@dataclass
class TinyData:
    """A seeded synthetic 4-class image set shaped like a small MNIST (enough for exact SGD checks)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int = 4


def tiny_data(n: int = 384, size: int = 12, seed: int = 0) -> TinyData:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g).float() / 255.0
    x[:, :, : size // 2, : size // 2] += (y.view(-1, 1, 1, 1) == 0) * 0.2  # a weak learnable signal
    return TinyData(x.clamp(0, 1), y)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHandle]:
    handle = start_redis(dir=tmp_path_factory.mktemp("redis"))
    try:
        yield handle
    finally:
        stop_redis(handle)


@pytest.fixture(scope="session")
def memory_server() -> Iterator[MemoryStoreServer]:
    with MemoryStoreServer() as server:
        yield server


@pytest.fixture(scope="module")
def platform() -> Iterator[EmulatedPlatform]:
    with EmulatedPlatform(preload=PRELOAD, concurrency=16) as p:
        yield p


@pytest.fixture
def redis_dir(tmp_path: Path) -> Path:
    return tmp_path / "redis"
