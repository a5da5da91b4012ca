"""The `[serverless]` section (`topology = "serverless"`) and `ServerlessConfig`, what a job resolves to.

Epochs, batch size (fixed mode) and the optimiser come from `[train]`. Example:

    [train]
    epochs = 3
    lr = 0.05
    momentum = 0.9

    [serverless]
    platform = "emulated"      # or "lithops" (localhost, AWS Lambda, GCP, Kubernetes via [serverless.lithops])
    store = "redis"            # or "memory"
    deadline_s = 600           # or budget_usd = 0.05; neither: the fixed workers, memory_mb and train.batch_size
    on_infeasible = "refuse"   # or "best-effort": run the fastest/cheapest even when the prior says unreachable
    on_miss = "abort"          # or "continue" (the default under best-effort): when a refit finds it out of reach
    sync = "scatter_reduce"    # or "hierarchical" (group_size = "auto" or a divisor of every worker count), "central"
    platform_profile = "benchmarks/results/serverless_platform_profile.json"   # optional calibrated prior
    [serverless.planner]
    workers = [1, 2, 4]
    memory_mb = [1024, 1769, 3538]
    batch_size = [16, 32, 64]
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator, model_validator

from siegecraft.core.config import FieldError
from siegecraft.core.training import TrainConfig
from siegecraft.engines.serverless.billing import PriceTable
from siegecraft.engines.serverless.planner import SearchSpace
from siegecraft.engines.serverless.platform_profile import PlatformProfile, ProfileError


def _group_size(value: object) -> int | Literal["auto"]:
    """'auto' or an integer (one message for both, not one per member of the union)."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
        return value  # type: ignore[return-value]
    raise ValueError("must be 'auto' or an integer >= 2")


GroupSize = Annotated[int | Literal["auto"], PlainValidator(_group_size, json_schema_input_type=int | Literal["auto"])]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlannerOptions(_Section):
    """Search space and knobs of the Bayesian planner."""

    workers: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    memory_mb: list[int] = Field(default_factory=lambda: [1024, 1769, 3538], min_length=1)
    batch_size: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    trials: int = Field(60, ge=5, description="optuna trials per decision (model evaluations, not real runs)")
    safety: float = Field(0.05, ge=0, description="extra relative margin on projected time or cost")
    profile_iterations: int = Field(3, ge=1, description="iterations per profiling probe (their cost counts)")
    parallel_efficiency: float = Field(0.7, gt=0, le=1, description="speed-up per extra thread above 1 vCPU")

    @model_validator(mode="after")
    def _positive(self) -> PlannerOptions:
        for key in ("workers", "memory_mb", "batch_size"):
            values = getattr(self, key)
            if any(v < 1 for v in values):
                raise FieldError((key,), values, "must hold positive integers")
            setattr(self, key, sorted(set(values)))
        return self

    def space(self) -> SearchSpace:
        return SearchSpace(tuple(self.workers), tuple(self.memory_mb), tuple(self.batch_size))


class EmulatedOptions(_Section):
    """Options of the emulated platform (see `siegecraft.engines.serverless.emulated`)."""

    concurrency: int = Field(64, ge=1)
    keep_alive_s: float = Field(600.0, gt=0)
    start_method: Literal["forkserver", "spawn"] = "forkserver"
    network_mb_s: float | None = Field(
        None, gt=0, description="per-function store bandwidth (None: loopback)"
    )
    throttle_cpu: bool = True
    preload: list[str] = Field(
        default_factory=lambda: ["torch", "siegecraft.engines.serverless.worker"],
        description="modules the forkserver imports once, so cold starts fork an initialised runtime",
    )


class FaultOptions(_Section):
    """Fault injection: kill this fraction of invocations at a random moment (emulated platform)."""

    rate: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


class ServerlessSection(_Section):
    """`[serverless]`: platform, store, synchronisation, deadline or budget (the optimiser lives in `[train]`)."""

    platform: Literal["emulated", "lithops"] = "emulated"
    store: Literal["memory", "redis"] = "memory"
    redis_url: str | None = Field(None, description="use this Redis instead of starting a private one")
    sync: Literal["scatter_reduce", "hierarchical", "central"] = "scatter_reduce"
    group_size: GroupSize = Field(
        "auto", description="hierarchical sync: workers per group; auto = the divisor of n nearest sqrt(n)"
    )
    workers: int = Field(2, ge=1, description="fixed mode: concurrent workers")
    memory_mb: int = Field(1769, ge=128, description="fixed mode: memory per function")
    deadline_s: float | None = Field(None, gt=0)
    budget_usd: float | None = Field(None, gt=0)
    on_infeasible: Literal["refuse", "best-effort"] = Field(
        "refuse", description="a target the prior model cannot reach: refuse before any invocation, or run anyway"
    )
    on_miss: Literal["abort", "continue"] | None = Field(
        None, description="a refit finds the target out of reach: stop (exit 3) or go on; "
        "default: abort, or continue with on_infeasible = 'best-effort'",
    )  # fmt: skip
    planner: PlannerOptions = Field(default_factory=PlannerOptions)
    platform_profile: str | None = Field(
        None, description="calibrated prior for the planner (a JSON file from the calibration step): the preflight "
        "then refuses within the measured spread; None: the generic prior, refused only 10x below it",
    )  # fmt: skip
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
    def _checks(self) -> ServerlessSection:
        if self.deadline_s is not None and self.budget_usd is not None:
            raise FieldError(("budget_usd",), self.budget_usd, "set deadline_s or budget_usd, not both")
        lo, hi = self.prices.min_memory_mb, self.prices.max_memory_mb
        if self.adaptive:
            bad = [m for m in self.planner.memory_mb if not lo <= m <= hi]
            if bad:
                raise FieldError(("planner", "memory_mb"), self.planner.memory_mb,
                                 f"every tier must lie in the platform's [{lo}, {hi}] MB")
        if not lo <= self.memory_mb <= hi:  # checked in every mode: a value out of range is never silently kept
            raise FieldError(("memory_mb",), self.memory_mb, f"must lie in the platform's [{lo}, {hi}] MB")
        if self.faults.rate > 0 and self.platform != "emulated":
            raise FieldError(("faults", "rate"), self.faults.rate, "fault injection needs platform = 'emulated'")
        most = max(self.planner.workers) if self.adaptive else self.workers
        roles = most + (1 if self.sync == "central" else 0)
        if self.platform == "emulated" and roles > self.emulated.concurrency:
            raise FieldError(("emulated", "concurrency"), self.emulated.concurrency,
                             f"{roles} functions must run at once (synchronous workers); raise it to {roles}")
        if self.redis_url is not None and self.store != "redis":
            raise FieldError(("redis_url",), self.redis_url,
                             "needs store = 'redis' (the memory store lives in the driver and ignores it)")
        if self.platform == "lithops":
            self._check_lithops()
        self._check_group_size()
        return self

    def _check_group_size(self) -> None:
        """An explicit group size is an int >= 2 dividing every worker count the job may run with."""
        g = self.group_size
        if g == "auto":
            return
        if self.sync != "hierarchical":
            raise FieldError(("group_size",), g, f"only applies to sync = 'hierarchical' (sync is {self.sync!r})")
        counts = self.planner.workers if self.adaptive else [self.workers]
        where = "planner.workers" if self.adaptive else "workers"
        if isinstance(g, bool) or g < 2:
            raise FieldError(("group_size",), g, "must be 'auto' or an integer >= 2")
        bad = [n for n in counts if n % g]
        if bad:
            raise FieldError(("group_size",), g, f"must divide the number of workers ({where} = {counts}), "
                             f"which {bad} do not; use 'auto' or a common divisor")  # fmt: skip

    @property
    def hierarchy_group_size(self) -> int | None:
        """The group size a plan gets: None for 'auto' (chosen per plan from its worker count)."""
        return None if self.group_size == "auto" else int(self.group_size)

    def _check_lithops(self) -> None:
        """The Lithops config is sections of keys (passed through unchanged), and a backend off this machine
        needs a store its functions can reach: a Redis at `redis_url`, not one on the driver's loopback."""
        if importlib.util.find_spec("lithops") is None:
            raise FieldError(("platform",), self.platform,
                             "needs the lithops package: pip install 'siegecraft[serverless]' (or use 'emulated')")
        flat = sorted(k for k, v in self.lithops.items() if not isinstance(v, dict))
        if flat:
            raise FieldError(("lithops", flat[0]), self.lithops[flat[0]],
                             "Lithops' config is made of sections; the compute backend is "
                             f"[serverless.lithops.lithops] {flat[0]} = {self.lithops[flat[0]]!r}")
        backend = self.lithops_backend
        if backend != "localhost" and (self.store != "redis" or self.redis_url is None):
            raise FieldError(("redis_url",), self.redis_url,
                             f"Lithops backend {backend!r} runs functions off this machine: they need "
                             "store = 'redis' and a redis_url they can reach")

    @field_validator("platform_profile")
    @classmethod
    def _profile_loads(cls, path: str | None) -> str | None:
        """The profile file exists and holds a valid profile (checked again when the job reads it)."""
        if path is not None:
            try:
                PlatformProfile.load(path)
            except ProfileError as err:
                raise FieldError((), path, str(err)) from None
        return path

    def platform_prior(self) -> PlatformProfile | None:
        """The calibrated prior named by `platform_profile`, or None (the generic prior)."""
        return None if self.platform_profile is None else PlatformProfile.load(self.platform_profile)

    @property
    def lithops_backend(self) -> str:
        """The Lithops compute backend named in `[serverless.lithops.lithops] backend` (default localhost)."""
        return str(self.lithops.get("lithops", {}).get("backend", "localhost"))

    @property
    def adaptive(self) -> bool:
        """Whether the Bayesian planner chooses configurations (a deadline or a budget is set)."""
        return self.deadline_s is not None or self.budget_usd is not None

    @property
    def miss_policy(self) -> Literal["abort", "continue"]:
        """`on_miss`, or its default: abort, except under best-effort, which keeps running to the end."""
        if self.on_miss is not None:
            return self.on_miss
        return "continue" if self.on_infeasible == "best-effort" else "abort"


class ServerlessConfig(ServerlessSection):
    """Everything a serverless job uses: the `[serverless]` keys plus epochs, batch size and the optimiser."""

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1, description="fixed mode: per-worker batch size")
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)

    @classmethod
    def resolve(cls, section: ServerlessSection, train: TrainConfig) -> ServerlessConfig:
        """The job's settings from `[serverless]` and `[train]`."""
        keys = ("epochs", "batch_size", "lr", "momentum", "weight_decay")
        return cls(**section.model_dump(exclude_unset=True), **{k: getattr(train, k) for k in keys})
