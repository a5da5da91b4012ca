"""Same target accuracy by construction: every baseline follows SMLT's SGD trajectory exactly."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from siegecraft.core.models import build_model, flat_params
from siegecraft.engines.serverless.baselines.cirrus import run_cirrus
from siegecraft.engines.serverless.baselines.fixed_cluster import cluster_platform, run_fixed_cluster
from siegecraft.engines.serverless.baselines.lambdaml import run_lambdaml
from siegecraft.engines.serverless.baselines.parameter_server import ParameterServer
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.job import TrainingJob
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import Store, connect

from ..conftest import PRELOAD, TinyData, tiny_data

OPTIONS = {"width": 4, "hidden": 16}
WORKERS, BATCH, ITERATIONS = 3, 8, 4


def _init() -> np.ndarray:
    torch.manual_seed(0)
    return flat_params(build_model("cnn", in_channels=1, num_classes=4, image_size=12, **OPTIONS)).numpy()


def _spec(job: str, server: MemoryStoreServer, data: TinyData, size: int) -> JobSpec:
    return JobSpec(
        job, server.spec, "cnn", 1, 4, 12, len(data.y), size, lr=0.1, momentum=0.9, model_options=OPTIONS
    )


@pytest.fixture(scope="module")
def store_server() -> Iterator[MemoryStoreServer]:
    with MemoryStoreServer() as server:
        yield server


@pytest.fixture(scope="module")
def store(store_server: MemoryStoreServer) -> Iterator[Store]:
    with connect(store_server.spec) as client:
        yield client


@pytest.fixture(scope="module")
def smlt_weights(platform: EmulatedPlatform, store_server: MemoryStoreServer, store: Store) -> np.ndarray:
    """SMLT's scatter-reduce weights after ITERATIONS iterations of the tiny job."""
    data, init = tiny_data(), _init()
    job = TrainingJob(_spec("smlt", store_server, data, init.size), store, platform, sync_timeout_s=20)
    job.initialize(data.x, data.y, init)
    job.execute(Config(WORKERS, 1024, BATCH), epoch=0, epoch_offset=0, iterations=ITERATIONS, phase="train")
    weights = job.weights()
    job.cleanup()
    assert np.abs(weights - init).max() > 1e-3  # it trained
    return weights


def test_lambdaml_follows_smlt(
    platform: EmulatedPlatform, store_server: MemoryStoreServer, store: Store, smlt_weights: np.ndarray
) -> None:
    data, init = tiny_data(), _init()
    run = run_lambdaml(
        _spec("lml", store_server, data, init.size),
        store,
        platform,
        Config(WORKERS, 1024, BATCH),
        ITERATIONS,
        x=data.x,
        y=data.y,
        init_weights=init,
    )
    store.delete_prefix("lml/")
    assert np.abs(run.weights - smlt_weights).max() < 1e-6
    assert len(run.records) == WORKERS and run.iter_s > 0
    # the designated worker moves the other workers' gradients too: O(n) against 2 models for the others
    moved = sorted(r["bytes_sent"] + r["bytes_received"] for r in run.reports)
    assert moved[-1] > 1.5 * moved[0]


def test_cirrus_follows_smlt(
    platform: EmulatedPlatform, store_server: MemoryStoreServer, store: Store, smlt_weights: np.ndarray
) -> None:
    data, init = tiny_data(), _init()
    with ParameterServer(wait_s=20) as server:
        run = run_cirrus(
            _spec("cirrus", store_server, data, init.size),
            store,
            platform,
            server,
            Config(WORKERS, 1024, BATCH),
            ITERATIONS,
            x=data.x,
            y=data.y,
            init_weights=init,
        )
        pid = server.process.pid
    store.delete_prefix("cirrus/")
    assert not server.alive and server.process.exitcode == 0, f"server {pid} did not exit cleanly"
    assert np.abs(run.weights - smlt_weights).max() < 1e-6
    # every pull and push crossed the server: 2 models per worker and iteration
    assert run.server_bytes_per_iter == pytest.approx(2 * WORKERS * init.size * 4)


def test_fixed_cluster_follows_smlt(
    store_server: MemoryStoreServer, store: Store, smlt_weights: np.ndarray
) -> None:
    data, init = tiny_data(), _init()
    with cluster_platform(preload=PRELOAD) as cluster:
        run = run_fixed_cluster(
            _spec("cluster", store_server, data, init.size),
            store,
            cluster,
            WORKERS,
            BATCH,
            ITERATIONS - 1,
            x=data.x,
            y=data.y,
            init_weights=init,
            warm_up=1,
        )
    store.delete_prefix("cluster/")
    assert np.abs(run.weights - smlt_weights).max() < 1e-6
    assert run.config == Config(WORKERS, 1769, BATCH)
