"""What the baseline designs share: the invocation payload, a worker's report, the gradient step that is
bit-for-bit SMLT's, and the driver's invoke-and-collect with timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from siegecraft.engines.serverless import data_blob
from siegecraft.engines.serverless.billing import BillingRecord
from siegecraft.engines.serverless.layout import JobKeys
from siegecraft.engines.serverless.platform import FunctionPlatform
from siegecraft.engines.serverless.specs import Config, JobSpec, PlanSpec
from siegecraft.engines.serverless.store import Store
from siegecraft.engines.serverless.worker import batch_indices, gradient, model_for


class BaselineFailed(RuntimeError):
    """A baseline run could not finish (a worker failed; the baselines do not re-invoke)."""


@dataclass(frozen=True)
class BaselineTask:
    """Payload of one baseline worker invocation: role `role` of iterations [plan.start_it, plan.end_it)."""

    job: JobSpec
    plan: PlanSpec
    role: int
    sync_timeout_s: float = 60.0
    server: tuple[str, int] | None = None  # Cirrus: the parameter server's loopback address
    authkey: bytes = b""


@dataclass
class WorkerReport:
    """What one worker invocation did: iterations, when they ran, its compute time and its traffic."""

    role: int
    iterations: int = 0
    first_start: float = 0.0
    last_end: float = 0.0
    setup_s: float = 0.0
    compute_s: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BaselineRun:
    """One measured run of a design: per-iteration time (warm, like SMLT's `iter_s`), bills, final weights."""

    design: str
    config: Config
    iterations: int
    iter_s: float
    wall_s: float
    weights: np.ndarray
    records: list[BillingRecord] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    server_bytes_per_iter: float = 0.0

    @property
    def busiest_worker_bytes_per_iter(self) -> float:
        return max((r["bytes_sent"] + r["bytes_received"]) for r in self.reports) / max(self.iterations, 1)

    def summary(self) -> dict[str, Any]:
        return {
            "design": self.design,
            "config": self.config.label(),
            "iterations": self.iterations,
            "iter_s": self.iter_s,
            "wall_s": self.wall_s,
            "busiest_worker_bytes_per_iter": self.busiest_worker_bytes_per_iter,
            "server_bytes_per_iter": self.server_bytes_per_iter,
        }


class GradientSource:
    """A worker's gradients: real ones on its slice of the global batch (exactly as SMLT's worker computes
    them), or the synthetic g = 1e-3 * w of SMLT's synchronisation benchmarks."""

    def __init__(self, task: BaselineTask, store: Store) -> None:
        self.task = task
        self.model: nn.Module | None = None
        self.x = self.y = None
        if not task.job.synthetic_gradients:
            self.x, self.y = data_blob.fetch(store, JobKeys(task.job.job))
            self.model = model_for(task.job)
            torch.manual_seed(task.job.seed)

    def __call__(self, it: int, weights: np.ndarray) -> np.ndarray:
        if self.model is None:
            return (weights * np.float32(1e-3)).astype(np.float32)
        idx = torch.from_numpy(batch_indices(self.task.job, self.task.plan, it, self.task.role))
        grad, _ = gradient(self.model, weights, self.x[idx], self.y[idx])  # type: ignore[index]
        return grad


def average(grads: list[np.ndarray]) -> np.ndarray:
    """Mean of the workers' gradients summed in worker order, with SMLT's exact float32 arithmetic."""
    total = grads[0].copy()
    for g in grads[1:]:
        total = total + g
    return (total / np.float32(len(grads))).astype(np.float32)


def plan_for(
    config: Config, iterations: int, *, start_it: int = 0, epoch: int = 0, offset: int = 0
) -> PlanSpec:
    """The plan (iterations and sample slice) a baseline runs: the same data order as SMLT's plan."""
    return PlanSpec(0, epoch, config, start_it, start_it + iterations, offset)


def invoke_all(
    platform: FunctionPlatform,
    fn: Callable[[BaselineTask], dict[str, Any]],
    tasks: list[BaselineTask],
    *,
    memory_mb: int,
    timeout_s: float,
    on_failure: Callable[[], None] | None = None,
) -> tuple[list[BillingRecord], list[dict[str, Any]]]:
    """Invoke one function per task concurrently; the bills and reports, or `BaselineFailed` naming the
    first failure (after `on_failure`, which must unblock the other workers, and after all returned)."""
    futures: list[Future] = [platform.submit(fn, t, memory_mb=memory_mb, timeout_s=timeout_s) for t in tasks]
    pending, failed = set(futures), ""
    while pending:
        done, pending = wait(pending, return_when="FIRST_COMPLETED")
        for fut in done:
            inv = fut.result()
            if not inv.ok and not failed:
                failed = f"{inv.function} failed ({inv.kind}): {inv.error.strip().splitlines()[-1:] or ''}"
                if on_failure is not None:
                    on_failure()
    invocations = [f.result() for f in futures]
    if failed:
        raise BaselineFailed(failed)
    return [inv.billing for inv in invocations], [inv.result for inv in invocations]


def iteration_seconds(reports: list[dict[str, Any]], iterations: int) -> float:
    """Warm seconds per iteration: from the last worker's first iteration to the last worker's end (the
    same definition as SMLT's `Measurement.iter_s`, so start-up is excluded alike)."""
    starts = [r["first_start"] for r in reports if r["iterations"] > 0]
    ends = [r["last_end"] for r in reports if r["iterations"] > 0]
    if not starts or not ends:
        return 0.0
    return (max(ends) - max(starts)) / max(iterations, 1)


def now() -> float:
    return time.time()
