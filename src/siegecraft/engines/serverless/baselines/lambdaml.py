"""LambdaML-style all-reduce: serverless workers synchronise through the store via ONE designated worker.

Every iteration each worker reads the whole model, computes its gradient and writes it whole; worker 0
(a function like the others) also reads the other n-1 gradients, averages them, steps the model and writes
the whole model and momentum of the next iteration. Worker 0's link carries n + 1 models per
iteration, the others' two: the O(n) hot spot SMLT's scatter-reduce removes.

Keys: `{job}/lml/w/{it}`, `{job}/lml/m/{it}` (model and momentum at the start of `it`) and
`{job}/lml/g/{it}/{i}` (worker i's gradient). No re-invocation: a failed worker fails the run.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from siegecraft.engines.serverless import context, data_blob
from siegecraft.engines.serverless.baselines.common import (
    BaselineRun,
    BaselineTask,
    GradientSource,
    WorkerReport,
    average,
    invoke_all,
    iteration_seconds,
    plan_for,
)
from siegecraft.engines.serverless.layout import JobKeys, from_bytes, to_bytes
from siegecraft.engines.serverless.platform import FunctionPlatform
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import Store, connect
from siegecraft.engines.serverless.worker import sgd_step, wait_for


def _w(job: str, it: int) -> str:
    return f"{job}/lml/w/{it}"


def _m(job: str, it: int) -> str:
    return f"{job}/lml/m/{it}"


def _g(job: str, it: int, worker: int) -> str:
    return f"{job}/lml/g/{it}/{worker}"


def lambdaml_worker(task: BaselineTask) -> dict[str, Any]:
    """Deployable entry point: run role `task.role` (0 = the designated aggregator) for the whole plan."""
    job, plan, role = task.job, task.plan, task.role
    n = plan.config.workers
    report = WorkerReport(role=role)
    start = time.perf_counter()
    store = connect(job.store, network_mb_s=context.current().network_mb_s)
    try:
        grads = GradientSource(task, store)
        setup_bytes = store.traffic.received
        report.setup_s = time.perf_counter() - start
        weights = momentum = None
        for it in range(plan.start_it, plan.end_it):
            if report.iterations == 0:
                report.first_start = time.time()
            if weights is None or role != 0:
                weights = from_bytes(wait_for(store, [_w(job.job, it)], task.sync_timeout_s)[0])
            t0 = time.perf_counter()
            grad = grads(it, weights)
            report.compute_s += time.perf_counter() - t0
            if role != 0:
                store.put(_g(job.job, it, role), to_bytes(grad))
            else:
                if momentum is None:
                    momentum = from_bytes(wait_for(store, [_m(job.job, it)], task.sync_timeout_s)[0])
                others = wait_for(store, [_g(job.job, it, i) for i in range(1, n)], task.sync_timeout_s)
                avg = average([grad, *(from_bytes(raw) for raw in others)])
                weights, momentum = sgd_step(
                    weights, momentum, avg, lr=job.lr, momentum=job.momentum, weight_decay=job.weight_decay
                )
                store.put_many(
                    {_w(job.job, it + 1): to_bytes(weights), _m(job.job, it + 1): to_bytes(momentum)}
                )
                # every worker read w/it before writing g/it, so nobody needs iteration it any more
                store.delete([_w(job.job, it), _m(job.job, it), *(_g(job.job, it, i) for i in range(1, n))])
            report.iterations += 1
            report.last_end = time.time()
        report.bytes_sent = store.traffic.sent
        report.bytes_received = store.traffic.received - setup_bytes
    finally:
        store.close()
    return report.to_dict()


def run_lambdaml(
    spec: JobSpec,
    store: Store,
    platform: FunctionPlatform,
    config: Config,
    iterations: int,
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    init_weights: np.ndarray,
    sync_timeout_s: float = 60.0,
    timeout_s: float = 900.0,
) -> BaselineRun:
    """Run `iterations` synchronous SGD iterations LambdaML-style from `init_weights` (zero momentum)."""
    data_blob.upload(store, JobKeys(spec.job), x, y)
    store.put_many(
        {_w(spec.job, 0): to_bytes(init_weights), _m(spec.job, 0): to_bytes(np.zeros_like(init_weights))}
    )
    plan = plan_for(config, iterations)
    tasks = [BaselineTask(spec, plan, role, sync_timeout_s) for role in range(config.workers)]
    t0 = time.perf_counter()
    records, reports = invoke_all(
        platform, lambdaml_worker, tasks, memory_mb=config.memory_mb, timeout_s=timeout_s
    )
    wall = time.perf_counter() - t0
    weights = from_bytes(wait_for(store, [_w(spec.job, iterations)], 5.0)[0]).copy()
    store.delete_prefix(f"{spec.job}/lml/")
    return BaselineRun(
        "lambdaml",
        config,
        iterations,
        iteration_seconds(reports, iterations),
        wall,
        weights,
        records,
        reports,
    )
