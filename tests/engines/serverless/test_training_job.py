"""Serverless SGD equals local SGD; faults and a dying driver change nothing but time and money."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from siegecraft.core.models import build_model, flat_params
from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.job import TrainingJob
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.redis_server import RedisHandle
from siegecraft.engines.serverless.runner import train_serverless
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import connect
from siegecraft.engines.serverless.worker import permutation

from .conftest import PRELOAD, TinyData, run_out_of_memory_plan, tiny_data

OPTIONS = {"width": 4, "hidden": 16}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", in_channels=1, num_classes=4, image_size=12, **OPTIONS)


def _local_sgd(data: TinyData, plans: list[tuple[int, int, int]]) -> np.ndarray:
    """Plain torch SGD over the same sample order: (workers, batch, iterations) per plan, one epoch."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    order, offset = permutation(0, 0, len(data.y)), 0
    for workers, batch, iterations in plans:
        for _ in range(iterations):
            idx = order[offset : offset + workers * batch]
            offset += workers * batch
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
            opt.step()
    return flat_params(model).numpy()


def _serverless_sgd(
    data: TinyData, plans: list[tuple[int, int, int]], platform: EmulatedPlatform, sync: str, **job_kw: object
) -> tuple[np.ndarray, TrainingJob]:
    init = flat_params(_model()).numpy()
    with MemoryStoreServer() as server, connect(server.spec) as store:
        spec = JobSpec("eq", server.spec, "cnn", 1, 4, 12, len(data.y), init.size, lr=0.1, momentum=0.9,
                       model_options=OPTIONS)  # fmt: skip
        job = TrainingJob(spec, store, platform, sync=sync, sync_timeout_s=20, **job_kw)  # type: ignore[arg-type]
        job.initialize(data.x, data.y, init)
        offset = 0
        for workers, batch, iterations in plans:
            job.execute(
                Config(workers, 1024, batch),
                epoch=0,
                epoch_offset=offset,
                iterations=iterations,
                phase="train",
            )
            offset += workers * batch * iterations
        weights = job.weights()
        assert job.cleanup() > 0 and store.scan("eq/") == []
    return weights, job


@pytest.mark.parametrize("sync", ["scatter_reduce", "central"])
def test_serverless_sgd_equals_local_sgd_across_a_reshard(platform: EmulatedPlatform, sync: str) -> None:
    data = tiny_data()
    plans = [(3, 16, 4), (2, 8, 3)]  # the second plan re-shards the state from 3 to 2 workers
    weights, job = _serverless_sgd(data, plans, platform, sync)
    reference = _local_sgd(data, plans)
    assert np.abs(weights - reference).max() < 1e-5
    assert np.abs(weights - flat_params(_model()).numpy()).max() > 1e-3  # it did train
    measured = [p["measurement"] for p in job.state.plans]
    assert [m["iterations"] for m in measured] == [4, 3]
    assert all(m["compute_s"] > 0 and m["iter_s"] > 0 and m["cost_usd"] > 0 for m in measured)


def test_killing_ten_percent_of_invocations_gives_the_fault_free_weights(platform: EmulatedPlatform) -> None:
    data = tiny_data()
    plans = [(3, 8, 12)]
    clean, _ = _serverless_sgd(data, plans, platform, "scatter_reduce", iterations_per_invocation=2)
    with EmulatedPlatform(preload=PRELOAD, fault_rate=0.1, fault_seed=4) as faulty:
        weights, job = _serverless_sgd(data, plans, faulty, "scatter_reduce", iterations_per_invocation=2)
        assert faulty.stats.injected_faults >= 1
    measurement = job.state.plans[-1]["measurement"]
    assert measurement["failures"] == faulty.stats.injected_faults and measurement["retries"] >= 1
    assert np.array_equal(weights, clean)


@pytest.mark.slow  # wall-clock dependent: whether a step outlives the margin depends on machine speed
def test_workers_checkpoint_before_their_time_limit_and_are_invoked_again(platform: EmulatedPlatform) -> None:
    data = tiny_data()
    plans = [(2, 8, 24)]
    clean, _ = _serverless_sgd(data, plans, platform, "scatter_reduce")
    weights, job = _serverless_sgd(
        data, plans, platform, "scatter_reduce", timeout_s=1.5, checkpoint_margin_s=1.3
    )
    measurement = job.state.plans[-1]["measurement"]
    assert measurement["invocations"] > 2 and measurement["failures"] == 0  # checkpoints, not timeouts
    assert np.array_equal(weights, clean)


@pytest.mark.parametrize(("sync", "workers"), [("scatter_reduce", 2), ("hierarchical", 4)])
def test_a_driver_that_dies_after_an_epoch_is_resumed_from_redis(
    platform: EmulatedPlatform, redis_server: RedisHandle, sync: str, workers: int
) -> None:
    data = tiny_data(n=64 * workers)
    cfg = ServerlessConfig(sync=sync, workers=workers, memory_mb=1024, batch_size=16, epochs=3, lr=0.1)
    kw = {"model_options": OPTIONS, "platform": platform}

    with connect(redis_server.spec) as store:
        reference = train_serverless(cfg, data, job_id="ref", store=store, **kw)  # type: ignore[arg-type]

        class DriverKilled(RuntimeError):
            pass

        def die_after_first_epoch(record: dict) -> None:
            if record["phase"] == "train" and record["epoch"] == 0:
                raise DriverKilled

        with pytest.raises(DriverKilled):
            train_serverless(cfg, data, job_id="crash", store=store, on_record=die_after_first_epoch, **kw)  # type: ignore[arg-type]
        assert store.get("crash/state") is not None
        resumed = train_serverless(cfg, data, job_id="crash", store=store, **kw)  # type: ignore[arg-type]
        assert store.scan("crash/") == []
    assert np.array_equal(resumed.weights, reference.weights)
    assert [r["epoch"] for r in resumed.records] == [0, 1, 2]
    assert resumed.summary["epochs"] == 3


def test_a_plan_finished_but_unrecorded_by_a_dead_driver_is_not_trained_twice(
    platform: EmulatedPlatform,
) -> None:
    from siegecraft.engines.serverless import loop
    from siegecraft.engines.serverless.perf_model import PerformanceModel
    from siegecraft.engines.serverless.planner import FixedPlanner

    data = tiny_data(n=192)
    init = flat_params(_model()).numpy()
    cfg = Config(2, 1024, 16)

    def fresh_job(store, server) -> TrainingJob:
        spec = JobSpec("replay", server.spec, "cnn", 1, 4, 12, 192, init.size, lr=0.1, model_options=OPTIONS)
        job = TrainingJob(spec, store, platform)
        job.initialize(data.x, data.y, init)
        return job

    def planner() -> FixedPlanner:
        return FixedPlanner(cfg, PerformanceModel(num_params=init.size, samples_per_epoch=192))

    with MemoryStoreServer() as server, connect(server.spec) as store:
        job = fresh_job(store, server)
        loop.drive(
            job, planner(), epochs=2, state=job.state.runner or loop.new_state(), save=lambda st: None
        )
        reference = job.weights()
        job.cleanup()

        job = fresh_job(store, server)

        class Died(RuntimeError):
            pass

        def save_then_die(st: dict) -> None:
            if st["inflight"] is None and st["records"]:
                raise Died  # the plan finished in the store, but its record never reached it
            job.state.runner = st
            job.save_state()

        with pytest.raises(Died):
            loop.drive(job, planner(), epochs=2, state=loop.new_state(), save=save_then_die)

        job = fresh_job(store, server)  # a new driver: resumes from the store
        assert job.state.plans[-1]["status"] == "done" and job.state.runner["inflight"] is not None
        runs = len(job.state.plans)
        final = loop.drive(job, planner(), epochs=2, state=job.state.runner, save=lambda st: None)
        assert len(job.state.plans) == runs + 1  # only epoch 1 ran; epoch 0 was not trained again
        assert [r["epoch"] for r in final["records"]] == [0, 1]
        assert np.array_equal(job.weights(), reference)


def test_an_out_of_memory_role_is_attempted_twice_and_fails_naming_why(platform: EmulatedPlatform) -> None:
    message, bills = run_out_of_memory_plan(platform, "oom-emulated")
    assert len(bills) == 2 and all(b.status == "memory" for b in bills)  # before: 13 attempts (12 retries)
    assert re.search(r"out of memory: peak \d+ MB > 128 MB tier.*; not retried: a deterministic failure", message)
