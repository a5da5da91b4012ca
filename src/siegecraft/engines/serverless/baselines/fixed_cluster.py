"""A fixed cluster: n long-running VM workers running SMLT's own scatter-reduce through the store.

The workers are long-lived processes started once (the emulated platform's containers, kept warm for the
whole job, so there are no cold starts after boot and no per-invocation limit that bites), without the
fractional-vCPU throttle or the memory-tier watchdog of a function, and with the VM's network link
instead of the function's. They run the unchanged SMLT worker (`TrainingJob`, scatter-reduce), so the
trajectory is SMLT's by construction; what differs is the link, start-up (VM boot) and billing (per
VM-second from boot to the end, see `costing`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from siegecraft.engines.serverless.baselines.common import BaselineRun
from siegecraft.engines.serverless.baselines.vm_prices import C5_LARGE, VmType
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.job import TrainingJob
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import Store

# the function tier whose compute a worker VM matches (one compute thread, as on the 1,769 MB function)
WORKER_TIER_MB = 1769


def cluster_platform(vm: VmType = C5_LARGE, *, preload: tuple[str, ...] = ("torch",)) -> EmulatedPlatform:
    """Long-running worker processes with the VM's link and no function limits (throttle, watchdog)."""
    return EmulatedPlatform(
        preload=preload,
        network_mb_s=vm.network_mb_s,
        throttle_cpu=False,
        address_limit_from_mb=None,
        keep_alive_s=1e9,
        concurrency=256,
    )


def run_fixed_cluster(
    spec: JobSpec,
    store: Store,
    cluster: EmulatedPlatform,
    workers: int,
    batch_size: int,
    iterations: int,
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    init_weights: np.ndarray,
    warm_up: int = 1,
    sync_timeout_s: float = 60.0,
) -> BaselineRun:
    """Boot the workers (a `warm_up`-iteration plan, untimed), then time `iterations` warm iterations."""
    config = Config(workers, WORKER_TIER_MB, batch_size)
    job = TrainingJob(spec, store, cluster, sync_timeout_s=sync_timeout_s)
    job.initialize(x, y, init_weights)
    offset = 0
    if warm_up:
        job.execute(config, epoch=0, epoch_offset=0, iterations=warm_up, phase="boot")
        offset = warm_up * workers * batch_size
    t0 = time.perf_counter()
    m = job.execute(config, epoch=0, epoch_offset=offset, iterations=iterations, phase="train")
    wall = time.perf_counter() - t0
    busiest = {
        "role": -1,
        "iterations": iterations,
        "bytes_sent": m.busiest_role_bytes * iterations,
        "bytes_received": 0,
    }  # the scatter-reduce's busiest worker, as the job measured it
    return BaselineRun(
        "fixed_cluster",
        config,
        iterations,
        m.iter_s,
        wall,
        job.weights(),
        [r for _, r in job.ledger.entries],
        [busiest],
    )
