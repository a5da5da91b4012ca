"""Fixtures: a private Redis on a free loopback port, the embedded store, an emulated platform, tiny data,
and a plan that runs out of memory (the retry rule on every platform)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import siegecraft.engines.serverless  # noqa: F401  (registers platforms and stores)
from siegecraft.core.models import build_model, flat_params
from siegecraft.engines.serverless.billing import BillingRecord
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.job import JobFailed, TrainingJob
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.platform import FunctionPlatform
from siegecraft.engines.serverless.redis_server import RedisHandle, start_redis, stop_redis
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import connect

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


def run_out_of_memory_plan(platform: FunctionPlatform, job_id: str) -> tuple[str, list[BillingRecord]]:
    """Run a one-worker plan at the 128 MB tier, which the torch worker cannot fit (a deterministic
    out-of-memory failure); returns the `JobFailed` message and the bills of its invocations."""
    torch.manual_seed(0)
    data = tiny_data(64)
    init = flat_params(build_model("cnn", in_channels=1, num_classes=4, image_size=12, width=4, hidden=16))
    with MemoryStoreServer() as server, connect(server.spec) as store:
        spec = JobSpec(job_id, server.spec, "cnn", 1, 4, 12, len(data.y), init.numel(),
                       model_options={"width": 4, "hidden": 16})  # fmt: skip
        job = TrainingJob(spec, store, platform, sync_timeout_s=5, timeout_s=60)
        job.initialize(data.x, data.y, init.numpy())
        with pytest.raises(JobFailed) as failed:
            job.execute(Config(1, 128, 8), epoch=0, epoch_offset=0, iterations=1, phase="train")
    return str(failed.value), [r for _, r in job.ledger.entries]
