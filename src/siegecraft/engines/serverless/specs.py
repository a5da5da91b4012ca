"""Plain, picklable descriptions that travel in invocation payloads: the job and one plan of it.

A plan is a run of iterations with one configuration (workers, memory, batch size); the planner may
change the configuration between plans (every epoch), and the driver re-shards the state in between.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from siegecraft.engines.serverless.layout import Hierarchy, auto_group_size
from siegecraft.engines.serverless.store import StoreSpec

SYNC_MODES = ("scatter_reduce", "hierarchical", "central")


@dataclass(frozen=True)
class Config:
    """One point of the planner's search space."""

    workers: int
    memory_mb: int
    batch_size: int

    def label(self) -> str:
        return f"{self.workers}x{self.memory_mb}MB/b{self.batch_size}"


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to rebuild the model and find the job's keys."""

    job: str
    store: StoreSpec
    model: str
    in_channels: int
    num_classes: int
    image_size: int
    num_samples: int
    num_params: int
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    model_options: dict[str, Any] = field(default_factory=dict)
    synthetic_gradients: bool = False  # benchmarks of synchronisation alone: g = 1e-3 * w, no data, no model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobSpec:
        return cls(**{**raw, "store": StoreSpec(**raw["store"])})


@dataclass(frozen=True)
class PlanSpec:
    """Iterations [start_it, end_it) of one epoch, run with one configuration and sync mode.

    `group_size` (hierarchical sync only) is g, None for `auto_group_size`; `gather_weights` makes one
    worker per level-1 shard assemble it from the G final shards, so every worker reads g weight keys
    instead of n.
    """

    plan_id: int
    epoch: int
    config: Config
    start_it: int
    end_it: int
    epoch_offset: int
    sync: str = "scatter_reduce"
    phase: str = "train"
    group_size: int | None = None
    gather_weights: bool = True

    def __post_init__(self) -> None:
        if self.sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, got {self.sync!r}")
        if self.sync == "hierarchical":
            self.hierarchy  # noqa: B018  (raises if the group size does not divide the workers)

    @property
    def name(self) -> str:
        return f"p{self.plan_id}"

    @property
    def iterations(self) -> int:
        return self.end_it - self.start_it

    @property
    def shards(self) -> int:
        """Shards of weights and momentum: one per worker (both scatter-reduces) or one (central)."""
        return 1 if self.sync == "central" else self.config.workers

    @property
    def hierarchy(self) -> Hierarchy:
        """The groups of hierarchical sync (n workers, g = `group_size` or `auto_group_size(n)`)."""
        n = self.config.workers
        return Hierarchy(n, self.group_size if self.group_size is not None else auto_group_size(n))

    @property
    def reads_level1(self) -> bool:
        """Whether workers read the g level-1 weight shards (after the first iteration) instead of the n
        final shards: hierarchical with `gather_weights` and a real hierarchy (1 < g < n)."""
        if self.sync != "hierarchical" or not self.gather_weights:
            return False
        return 1 < self.hierarchy.group_size < self.config.workers

    @property
    def roles(self) -> list[int]:
        """Invocations of the plan: workers 0..n-1, plus aggregator n in central mode."""
        n = self.config.workers
        return list(range(n + 1)) if self.sync == "central" else list(range(n))

    def computes(self, role: int) -> bool:
        return role < self.config.workers

    def aggregates(self, role: int) -> int | None:
        """Shard index the role reduces, or None."""
        if self.sync == "scatter_reduce":
            return role
        if self.sync == "hierarchical":
            return self.hierarchy.owned(role)
        return 0 if role == self.config.workers else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PlanSpec:
        return cls(**{**raw, "config": Config(**raw["config"])})


@dataclass(frozen=True)
class WorkerTask:
    """Payload of one worker invocation."""

    job: JobSpec
    plan: PlanSpec
    role: int
    sync_timeout_s: float = 60.0
    checkpoint_margin_s: float = 2.0
    max_iterations: int | None = None
