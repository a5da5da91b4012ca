"""`ServerlessConfig`: the `[serverless]` section of an experiment (`topology = "serverless"`).

Example:

    [serverless]
    platform = "emulated"      # or "lithops" (localhost, AWS Lambda, GCP, Kubernetes via [serverless.lithops])
    store = "redis"            # or "memory"
    epochs = 3
    deadline_s = 600           # or budget_usd = 0.05; neither: the fixed workers/memory_mb/batch_size
    [serverless.scheduler]
    workers = [1, 2, 4]
    memory_mb = [1024, 1769, 3538]
    batch_size = [16, 32, 64]
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from siegecraft.serverless.billing import PriceTable
from siegecraft.serverless.scheduler import SearchSpace


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SchedulerOptions(_Section):
    """Search space and knobs of the Bayesian scheduler."""

    workers: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    memory_mb: list[int] = Field(default_factory=lambda: [1024, 1769, 3538], min_length=1)
    batch_size: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    trials: int = Field(60, ge=5, description="optuna trials per decision (model evaluations, not real runs)")
    safety: float = Field(0.05, ge=0, description="extra relative margin on projected time or cost")
    profile_iterations: int = Field(3, ge=1, description="iterations per profiling probe (their cost counts)")
    parallel_efficiency: float = Field(0.7, gt=0, le=1, description="speed-up per extra thread above 1 vCPU")

    @model_validator(mode="after")
    def _positive(self) -> SchedulerOptions:
        for key in ("workers", "memory_mb", "batch_size"):
            values = getattr(self, key)
            if any(v < 1 for v in values):
                raise ValueError(f"scheduler.{key} must hold positive integers, got {values}")
            setattr(self, key, sorted(set(values)))
        return self

    def space(self) -> SearchSpace:
        return SearchSpace(tuple(self.workers), tuple(self.memory_mb), tuple(self.batch_size))


class EmulatedOptions(_Section):
    """Options of the emulated platform (see `siegecraft.serverless.emulated`)."""

    concurrency: int = Field(64, ge=1)
    keep_alive_s: float = Field(600.0, gt=0)
    start_method: Literal["forkserver", "spawn"] = "forkserver"
    network_mb_s: float | None = Field(
        None, gt=0, description="per-function store bandwidth (None: loopback)"
    )
    throttle_cpu: bool = True
    preload: list[str] = Field(
        default_factory=lambda: ["torch", "siegecraft.serverless.worker"],
        description="modules the forkserver imports once, so cold starts fork an initialised runtime",
    )


class FaultOptions(_Section):
    """Fault injection: kill this fraction of invocations at a random moment (emulated platform)."""

    rate: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


class ServerlessConfig(_Section):
    """SMLT training on functions: platform, store, job, and deadline or budget."""

    platform: Literal["emulated", "lithops"] = "emulated"
    store: Literal["memory", "redis"] = "memory"
    redis_url: str | None = Field(None, description="use this Redis instead of starting a private one")
    sync: Literal["scatter_reduce", "central"] = "scatter_reduce"
    epochs: int = Field(3, ge=1)
    workers: int = Field(2, ge=1)
    memory_mb: int = Field(1769, ge=128)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    deadline_s: float | None = Field(None, gt=0)
    budget_usd: float | None = Field(None, gt=0)
    scheduler: SchedulerOptions = Field(default_factory=SchedulerOptions)
    timeout_s: float = Field(900.0, gt=0, le=900, description="per-invocation limit (Lambda: 15 minutes)")
    sync_timeout_s: float = Field(60.0, gt=0, description="how long a worker waits for a peer's shard")
    checkpoint_margin_s: float = Field(2.0, ge=0)
    iterations_per_invocation: int | None = Field(None, ge=1, description="bound the work of one invocation")
    emulated: EmulatedOptions = Field(default_factory=EmulatedOptions)
    faults: FaultOptions = Field(default_factory=FaultOptions)
    prices: PriceTable = Field(default_factory=PriceTable)
    lithops: dict[str, Any] = Field(default_factory=dict, description="Lithops config dict, passed through")
    job_id: str | None = Field(None, description="store key prefix; reuse it to resume a job")

    @model_validator(mode="after")
    def _checks(self) -> ServerlessConfig:
        if self.deadline_s is not None and self.budget_usd is not None:
            raise ValueError("set serverless.deadline_s or serverless.budget_usd, not both")
        lo, hi = self.prices.min_memory_mb, self.prices.max_memory_mb
        tiers = [self.memory_mb, *self.scheduler.memory_mb] if self.adaptive else [self.memory_mb]
        bad = [m for m in tiers if not lo <= m <= hi]
        if bad:
            raise ValueError(f"memory tiers {bad} outside the platform's [{lo}, {hi}] MB")
        if self.faults.rate > 0 and self.platform != "emulated":
            raise ValueError("serverless.faults.rate needs platform = 'emulated'")
        most = max(self.scheduler.workers) if self.adaptive else self.workers
        roles = most + (1 if self.sync == "central" else 0)
        if self.platform == "emulated" and roles > self.emulated.concurrency:
            raise ValueError(
                f"{roles} concurrent functions needed but emulated.concurrency={self.emulated.concurrency}; "
                "synchronous workers must all run at once"
            )
        return self

    @property
    def adaptive(self) -> bool:
        """Whether the Bayesian scheduler chooses configurations (a deadline or a budget is set)."""
        return self.deadline_s is not None or self.budget_usd is not None
