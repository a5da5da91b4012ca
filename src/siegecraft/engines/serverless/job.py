"""The driver of a serverless training job: plans, re-sharding, invocation, re-invocation, resume.

The driver holds no training state of its own: weights, momentum, the iteration counters and the driver's
progress (`JobState`) all live in the store, so a new driver for the same job id continues where a killed
one stopped. Failed invocations (crash, timeout, kill, stall) are found by their outcome or by the
`done` key they did not advance, and their role is invoked again.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from siegecraft.core.config import RunFailed
from siegecraft.core.models import build_model, load_flat_params
from siegecraft.engines.serverless import data_blob
from siegecraft.engines.serverless.billing import BillingRecord, CostLedger
from siegecraft.engines.serverless.layout import JobKeys, from_bytes, split, to_bytes
from siegecraft.engines.serverless.observations import Measurement
from siegecraft.engines.serverless.platform import FunctionPlatform
from siegecraft.engines.serverless.specs import Config, JobSpec, PlanSpec, WorkerTask
from siegecraft.engines.serverless.store import Store
from siegecraft.engines.serverless.worker import train_worker, wait_for

log = logging.getLogger(__name__)

# Failure kinds that repeat on an identical re-invocation (same function, payload and memory tier): one
# retry (in case the cause was transient after all), then the plan fails instead of spending its allowance.
DETERMINISTIC_KINDS = ("memory",)


class JobFailed(RunFailed):
    """A plan could not finish within its retry allowance (the message is one line)."""


@dataclass
class Head:
    """Where the current weights are: plan name, iteration and shard count."""

    plan: str = "init"
    it: int = 0
    shards: int = 1


@dataclass
class JobState:
    """The driver's persistent progress (JSON in the store under `{job}/state`)."""

    head: Head = field(default_factory=Head)
    plans: list[dict[str, Any]] = field(default_factory=list)
    runner: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> JobState:
        data = json.loads(raw)
        return cls(head=Head(**data["head"]), plans=data["plans"], runner=data.get("runner", {}))


class TrainingJob:
    """Run plans of synchronous data-parallel SGD on a `FunctionPlatform`, state in a `Store`."""

    def __init__(
        self,
        spec: JobSpec,
        store: Store,
        platform: FunctionPlatform,
        *,
        timeout_s: float = 900.0,
        sync_timeout_s: float = 60.0,
        checkpoint_margin_s: float = 2.0,
        iterations_per_invocation: int | None = None,
        sync: str = "scatter_reduce",
        group_size: int | None = None,
        max_retries: int | None = None,
        ledger: CostLedger | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.platform = platform
        self.keys = JobKeys(spec.job)
        self.timeout_s = timeout_s
        self.sync_timeout_s = sync_timeout_s
        self.checkpoint_margin_s = checkpoint_margin_s
        self.iterations_per_invocation = iterations_per_invocation
        self.sync = sync
        self.group_size = group_size  # hierarchical sync: None picks the divisor of n nearest sqrt(n)
        self.max_retries = max_retries
        self.ledger = ledger or CostLedger()
        self.state = JobState()

    # -- set-up and resume ------------------------------------------------------------------------------
    def initialize(self, x: torch.Tensor, y: torch.Tensor, init_weights: np.ndarray) -> bool:
        """Upload data and initial weights, or load the saved state; True when resuming."""
        saved = self.store.get(self.keys.state)
        if saved is not None:
            stored_spec = json.loads(self.store.get(self.keys.spec) or b"{}")
            if stored_spec and JobSpec.from_dict(stored_spec) != self.spec:
                raise ValueError(f"job {self.spec.job!r} exists in the store with a different spec")
            self.state = JobState.from_json(saved)
            return True
        if init_weights.size != self.spec.num_params:
            raise ValueError(
                f"initial weights have {init_weights.size} values, the model {self.spec.num_params}"
            )
        self.store.put(self.keys.spec, json.dumps(self.spec.to_dict()).encode())
        data_blob.upload(self.store, self.keys, x, y)
        zeros = np.zeros_like(init_weights, dtype=np.float32)
        self.store.put_many(
            {
                self.keys.weights("init", 0, 0): to_bytes(init_weights),
                self.keys.momentum("init", 0, 0): to_bytes(zeros),
            }
        )
        self.save_state()
        return False

    def save_state(self) -> None:
        self.store.put(self.keys.state, self.state.to_json())

    def cleanup(self) -> int:
        """Delete every key of the job."""
        return self.store.delete_prefix(self.keys.job + "/")

    # -- plans ------------------------------------------------------------------------------------------
    def next_plan(
        self, config: Config, *, epoch: int, epoch_offset: int, iterations: int, **kw: Any
    ) -> PlanSpec:
        """The plan that continues from the head for `iterations` iterations."""
        plan_id = len(self.state.plans)
        start = self.state.head.it
        return PlanSpec(
            plan_id,
            epoch,
            config,
            start,
            start + iterations,
            epoch_offset,
            **{"sync": self.sync, "group_size": self.group_size, **kw},
        )

    def pending_plan(self) -> PlanSpec | None:
        """A plan a previous driver started but did not finish."""
        if self.state.plans and self.state.plans[-1]["status"] != "done":
            return PlanSpec.from_dict(self.state.plans[-1]["plan"])
        return None

    def prepare(self, plan: PlanSpec) -> None:
        """Re-shard the head's weights and momentum into the plan's layout (idempotent)."""
        head, keys = self.state.head, self.keys
        names = [(keys.weights, "w"), (keys.momentum, "m")]
        vectors = []
        for key_fn, _ in names:
            raw = wait_for(self.store, [key_fn(head.plan, head.it, k) for k in range(head.shards)], 30.0)
            vectors.append(np.concatenate([from_bytes(r) for r in raw]))
        items = {}
        for (key_fn, _), vector in zip(names, vectors):
            for k, part in enumerate(split(vector, plan.shards)):
                items[key_fn(plan.name, plan.start_it, k)] = to_bytes(part)
        self.store.put_many(items)

    def run_plan(self, plan: PlanSpec) -> Measurement:
        """Execute one plan to completion, re-invoking failed roles; returns its measurement."""
        t0 = time.perf_counter()
        concurrency = getattr(self.platform, "concurrency", None)
        if concurrency is not None and len(plan.roles) > concurrency:
            raise ValueError(
                f"plan needs {len(plan.roles)} concurrent functions; the platform allows {concurrency}"
            )
        resumed = self.pending_plan() == plan
        if not resumed:
            self.prepare(plan)
            old_plan = self.state.head.plan
            self.state.plans.append({"plan": plan.to_dict(), "status": "running"})
            self.save_state()
            self.store.delete_prefix(self.keys.plan_prefix(old_plan))
        records, outcomes, retries = self._invoke_until_done(plan)
        self._check_done(plan)
        wall = time.perf_counter() - t0
        prev = self.state.plans[-2]["plan"]["config"] if len(self.state.plans) > 1 else None
        measurement = summarize(plan, outcomes, records, wall, retries, switched=prev != asdict(plan.config))
        self.state.head = Head(plan.name, plan.end_it, plan.shards)
        self.state.plans[-1].update(status="done", measurement=measurement.to_dict())
        self.save_state()
        return measurement

    def _task(self, plan: PlanSpec, role: int) -> WorkerTask:
        return WorkerTask(
            self.spec,
            plan,
            role,
            self.sync_timeout_s,
            self.checkpoint_margin_s,
            self.iterations_per_invocation,
        )

    def _submit(self, plan: PlanSpec, role: int) -> Future:
        return self.platform.submit(
            train_worker, self._task(plan, role), memory_mb=plan.config.memory_mb, timeout_s=self.timeout_s
        )

    def _invoke_until_done(self, plan: PlanSpec) -> tuple[list[BillingRecord], dict[int, list[dict]], int]:
        allowance = self.max_retries if self.max_retries is not None else 10 + 2 * len(plan.roles)
        futures = {self._submit(plan, role): role for role in plan.roles}
        records: list[BillingRecord] = []
        outcomes: dict[int, list[dict]] = {role: [] for role in plan.roles}
        deterministic: dict[int, int] = {role: 0 for role in plan.roles}
        retries = 0
        while futures:
            finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
            for fut in finished:
                role = futures.pop(fut)
                inv = fut.result()
                records.append(inv.billing)
                self.ledger.bill(
                    inv.billing, phase=plan.phase, plan=plan.name, role=role
                )  # durable before use
                if inv.ok:
                    outcomes[role].append(inv.result)
                    if inv.result["status"] == "done":
                        continue
                    if inv.result["status"] == "checkpoint":
                        futures[self._submit(plan, role)] = role
                        continue
                    why = inv.result["status"]
                else:
                    why = f"{inv.kind}: {inv.error.strip().splitlines()[-1] if inv.error else ''}"
                    if inv.kind in DETERMINISTIC_KINDS:
                        deterministic[role] += 1
                        if deterministic[role] > 1:
                            for other in futures:
                                other.cancel()
                            raise JobFailed(
                                f"plan {plan.name} role {role}: {why}; not retried: a deterministic failure "
                                f"({deterministic[role]} attempts at {plan.config.memory_mb} MB failed alike); give the functions "
                                f"more memory (serverless.memory_mb, or the tiers in serverless.planner.memory_mb)"
                            )
                retries += 1
                log.info("plan %s role %d: %s; invoking again (%d)", plan.name, role, why, retries)
                if retries > allowance:
                    for other in futures:
                        other.cancel()
                    raise JobFailed(f"plan {plan.name}: more than {allowance} re-invocations (last: {why})")
                futures[self._submit(plan, role)] = role
        return records, outcomes, retries

    def _check_done(self, plan: PlanSpec) -> None:
        raw = self.store.get_many([self.keys.done(plan.name, r) for r in plan.roles])
        behind = [r for r, v in zip(plan.roles, raw) if v is None or int(v) != plan.end_it - 1]
        if plan.iterations > 0 and behind:
            raise JobFailed(f"plan {plan.name}: roles {behind} did not reach iteration {plan.end_it - 1}")

    @property
    def samples_per_epoch(self) -> int:
        return self.spec.num_samples

    def execute(
        self, config: Config, *, epoch: int, epoch_offset: int, iterations: int, phase: str
    ) -> Measurement:
        """`PlanExecutor`: run the next plan (or finish the identical plan a killed driver left running)."""
        pending = self.pending_plan()
        wanted = (config, epoch, epoch_offset, iterations)
        if pending is not None and _identity(pending) == wanted:
            return self.run_plan(pending)
        if pending is None and self.state.plans:  # finished, but the driver died before recording it
            last = PlanSpec.from_dict(self.state.plans[-1]["plan"])
            if _identity(last) == wanted:
                return Measurement.from_dict(self.state.plans[-1]["measurement"])
        if pending is not None:
            raise JobFailed(f"plan {pending.name} is unfinished but the driver asked for a different plan")
        plan = self.next_plan(
            config, epoch=epoch, epoch_offset=epoch_offset, iterations=iterations, phase=phase
        )
        return self.run_plan(plan)

    # -- results ----------------------------------------------------------------------------------------
    def weights(self) -> np.ndarray:
        """The current (head) weights as one flat float32 vector."""
        head = self.state.head
        raw = wait_for(
            self.store, [self.keys.weights(head.plan, head.it, k) for k in range(head.shards)], 30.0
        )
        return np.concatenate([from_bytes(r) for r in raw]).copy()

    def model(self) -> torch.nn.Module:
        """A local model loaded with the current weights (for evaluation by the driver)."""
        s = self.spec
        model = build_model(
            s.model,
            in_channels=s.in_channels,
            num_classes=s.num_classes,
            image_size=s.image_size,
            **s.model_options,
        )
        load_flat_params(model, torch.from_numpy(self.weights()))
        return model


def _identity(plan: PlanSpec) -> tuple[Config, int, int, int]:
    """What makes a plan request the same plan: configuration, epoch, offset in the epoch, length."""
    return plan.config, plan.epoch, plan.epoch_offset, plan.iterations


def summarize(
    plan: PlanSpec,
    outcomes: dict[int, list[dict]],
    records: list[BillingRecord],
    wall_s: float,
    retries: int,
    *,
    switched: bool,
) -> Measurement:
    """Turn the roles' reports and the bills of one plan into a `Measurement`."""
    compute_roles = [r for r in plan.roles if plan.computes(r)]
    reports = [rep for r in plan.roles for rep in outcomes[r] if rep["iterations"] > 0]
    its = max(plan.iterations, 1)
    starts = []
    for r in plan.roles:
        firsts = [rep["first_start"] for rep in outcomes[r] if rep["iterations"] > 0]
        if firsts:
            starts.append(min(firsts))
    ends = [rep["last_end"] for rep in reports]
    iter_s = (max(ends) - max(starts)) / its if starts and ends else 0.0
    worker_reports = [rep for r in compute_roles for rep in outcomes[r]]
    worker_its = max(sum(rep["iterations"] for rep in worker_reports), 1)
    compute_s = sum(rep["compute_s"] for rep in worker_reports) / worker_its
    moved = sum(rep["bytes_sent"] + rep["bytes_received"] for rep in outcomes_of(plan, outcomes)) / max(
        plan.config.workers * its, 1
    )
    requests, values = (
        sum(rep.get(key, 0) for rep in outcomes_of(plan, outcomes)) / max(plan.config.workers * its, 1)
        for key in ("requests", "values")
    )
    busiest = max(
        (sum(rep["bytes_sent"] + rep["bytes_received"] for rep in outcomes[r]) / its for r in plan.roles),
        default=0.0,
    )
    return Measurement(
        config=plan.config,
        phase=plan.phase,
        iterations=plan.iterations,
        samples=plan.iterations * plan.config.workers * plan.config.batch_size,
        wall_s=wall_s,
        startup_s=max(0.0, wall_s - its * iter_s),
        iter_s=iter_s,
        compute_s=compute_s,
        comm_s=max(0.0, iter_s - compute_s),
        cost_usd=sum(r.cost_usd for r in records),
        invocations=len(records),
        cold_starts=sum(r.cold for r in records),
        failures=sum(r.status != "ok" for r in records),
        retries=retries,
        bytes_per_worker=moved,
        busiest_role_bytes=busiest,
        requests_per_worker=requests,
        values_per_worker=values,
        train_loss=sum(rep["loss_sum"] for rep in worker_reports) / worker_its,
        switched=switched,
    )


def outcomes_of(plan: PlanSpec, outcomes: dict[int, list[dict]]) -> list[dict]:
    """Reports of the compute roles (bytes per worker count the workers, not the central aggregator)."""
    return [rep for r in plan.roles if plan.computes(r) for rep in outcomes[r]]
