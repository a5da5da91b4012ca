"""Hierarchical scatter-reduce: the same SGD as flat scatter-reduce, fewer store values per worker, and the
same fault tolerance, re-sharding and resume (the flat checks of test_training_job, run hierarchically)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from siegecraft.core.models import flat_params
from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.job import TrainingJob
from siegecraft.engines.serverless.layout import Hierarchy, auto_group_size, shard_bounds
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.specs import Config, JobSpec, PlanSpec
from siegecraft.engines.serverless.store import connect

from .conftest import PRELOAD, tiny_data
from .test_training_job import OPTIONS, _local_sgd, _model, _serverless_sgd


@pytest.mark.parametrize(("n", "g"), [(4, 2), (6, 2), (6, 3), (8, 2), (12, 3), (16, 4), (64, 8), (7, 7)])
def test_every_final_shard_has_one_owner_and_level1_shards_tile_the_vector(n: int, g: int) -> None:
    h = Hierarchy(n, g)
    owned = sorted(h.owned(r) for r in range(n))
    assert owned == list(range(n)) and all(h.owner(h.owned(r)) == r for r in range(n))
    final = shard_bounds(1001, n)
    level1 = h.level1_bounds(1001)
    assert level1[0][0] == 0 and level1[-1][1] == 1001
    assert all(a[1] == b[0] for a, b in itertools.pairwise(level1))
    for j in range(g):  # level-1 shard j is exactly final shards j*G .. j*G+G-1; its owners are the (b, j)
        assert (final[h.finals(j)[0]][0], final[h.finals(j)[-1]][1]) == level1[j]
        assert {h.position(h.owner(k)) for k in h.finals(j)} == {(b, j) for b in range(h.groups)}


def test_auto_group_size_is_the_divisor_nearest_the_square_root() -> None:
    assert [auto_group_size(n) for n in (1, 2, 4, 6, 9, 12, 16, 32, 64, 7)] == [1, 1, 2, 2, 3, 3, 4, 4, 8, 1]


def test_a_plan_refuses_a_group_size_that_does_not_divide_its_workers() -> None:
    with pytest.raises(ValueError, match="does not divide 6 workers"):
        PlanSpec(0, 0, Config(6, 1024, 8), 0, 1, 0, sync="hierarchical", group_size=4)
    assert PlanSpec(0, 0, Config(6, 1024, 8), 0, 1, 0, sync="hierarchical").hierarchy.group_size == 2


def test_auto_group_size_accepts_every_worker_count_of_the_planner_grid() -> None:
    cfg = ServerlessConfig(sync="hierarchical", deadline_s=60, planner={"workers": [1, 2, 3, 5, 6, 16]})
    assert cfg.hierarchy_group_size is None
    assert ServerlessConfig(sync="hierarchical", workers=6, group_size=3).hierarchy_group_size == 3


def test_hierarchical_sgd_equals_local_and_flat_sgd_across_reshards(platform: EmulatedPlatform) -> None:
    data = tiny_data()
    plans = [(4, 8, 3), (6, 8, 3), (2, 8, 2)]  # g = 2 of 4, g = 2 of 6 (G = 3), then g = 1 of 2 (degenerate)
    weights, job = _serverless_sgd(data, plans, platform, "hierarchical")
    flat, _ = _serverless_sgd(data, plans, platform, "scatter_reduce")
    reference = _local_sgd(data, plans)
    assert np.abs(weights - reference).max() < 1e-5
    assert np.abs(weights - flat).max() < 1e-6  # only the summation order differs (float32 rounding)
    assert [p["plan"]["sync"] for p in job.state.plans] == ["hierarchical"] * 3
    assert [m["measurement"]["iterations"] for m in job.state.plans] == [3, 3, 2]


def test_plans_switching_between_flat_hierarchical_and_central_sync_give_local_sgd(
    platform: EmulatedPlatform,
) -> None:
    """The final weight/momentum layout is the flat one, so the state moves between sync modes unchanged."""
    data = tiny_data()
    steps = [("scatter_reduce", 4, 2), ("hierarchical", 6, 2), ("central", 2, 2), ("hierarchical", 4, 2)]
    init_flat = flat_params(_model()).numpy()
    with MemoryStoreServer() as server, connect(server.spec) as store:
        spec = JobSpec("mix", server.spec, "cnn", 1, 4, 12, len(data.y), init_flat.size, lr=0.1, momentum=0.9,
                       model_options=OPTIONS)  # fmt: skip
        job = TrainingJob(spec, store, platform, sync_timeout_s=20)
        job.initialize(data.x, data.y, init_flat)
        offset = 0
        for sync, workers, iterations in steps:
            plan = job.next_plan(Config(workers, 1024, 8), epoch=0, epoch_offset=offset, iterations=iterations,
                                 sync=sync)  # fmt: skip
            job.run_plan(plan)
            offset += workers * 8 * iterations
        weights = job.weights()
        job.cleanup()
    assert [p["plan"]["sync"] for p in job.state.plans] == [s for s, _, _ in steps]
    assert np.abs(weights - _local_sgd(data, [(n, 8, its) for _, n, its in steps])).max() < 1e-5


def test_an_explicit_group_size_gives_the_same_sgd(platform: EmulatedPlatform) -> None:
    data = tiny_data()
    plans = [(6, 8, 3)]
    weights, job = _serverless_sgd(data, plans, platform, "hierarchical", group_size=3)
    assert job.state.plans[0]["plan"]["group_size"] == 3
    assert np.abs(weights - _local_sgd(data, plans)).max() < 1e-5


def test_killing_ten_percent_of_invocations_gives_the_fault_free_weights(platform: EmulatedPlatform) -> None:
    data = tiny_data()
    plans = [(4, 8, 10)]
    clean, _ = _serverless_sgd(data, plans, platform, "hierarchical", iterations_per_invocation=2)
    with EmulatedPlatform(preload=PRELOAD, fault_rate=0.1, fault_seed=4) as faulty:
        weights, job = _serverless_sgd(data, plans, faulty, "hierarchical", iterations_per_invocation=2)
        assert faulty.stats.injected_faults >= 1
    measurement = job.state.plans[-1]["measurement"]
    assert measurement["failures"] == faulty.stats.injected_faults and measurement["retries"] >= 1
    assert np.array_equal(weights, clean)


# a driver that dies after an epoch and is resumed: tests/engines/serverless/test_training_job.py (both syncs)


def _synthetic_job(store, server, platform: EmulatedPlatform, sync: str) -> TrainingJob:  # type: ignore[no-untyped-def]
    p = 4000
    spec = JobSpec(f"syn-{sync}", server.spec, "cnn", 1, 4, 12, 1, p, synthetic_gradients=True)
    job = TrainingJob(spec, store, platform, sync=sync, sync_timeout_s=20)
    job.initialize(torch.zeros(1, 1, 12, 12), torch.zeros(1, dtype=torch.int64), np.ones(p, dtype=np.float32))
    return job


def test_hierarchy_moves_fewer_values_per_worker_and_leaves_two_iterations_of_keys(
    platform: EmulatedPlatform,
) -> None:
    measured, weights = {}, {}
    with MemoryStoreServer() as server, connect(server.spec) as store:
        for sync in ("scatter_reduce", "hierarchical"):
            job = _synthetic_job(store, server, platform, sync)
            plan = job.next_plan(Config(16, 1024, 1), epoch=0, epoch_offset=0, iterations=5)
            measured[sync] = job.run_plan(plan)
            if sync == "hierarchical":  # garbage collection: only the last iterations' keys remain
                its = {int(key.split("/")[3]) for key in store.scan(job.keys.plan_prefix(plan.name) + "h")}
                assert its and min(its) >= plan.end_it - 2
            weights[sync] = job.weights()
            job.cleanup()
    # flat: n weight shards + 2(n-1) gradient shards + 2 state shards + done; hierarchical (g = 4, G = 4):
    # g level-1 weight shards + 2(g-1) + 2(G-1) gradient pieces + 2 state shards + done (+ the gatherers)
    assert measured["hierarchical"].values_per_worker < 0.6 * measured["scatter_reduce"].values_per_worker
    assert np.abs(weights["hierarchical"] - weights["scatter_reduce"]).max() < 1e-6
    assert weights["hierarchical"].max() < 1.0  # it stepped: synthetic g = 1e-3 w shrinks the weights
