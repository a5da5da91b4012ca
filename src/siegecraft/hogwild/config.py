"""`HogwildConfig`: the `[hogwild]` section of an experiment (asynchronous shared-memory training).

Semantics follow PyTorch's Hogwild example: every worker process runs `epochs` passes over the whole
training set in its own order, with its own optimiser state and learning-rate schedule, writing
lock-free into one shared model. `shared_optimizer = true` replaces the per-worker state by one global
step counter, one schedule and one set of momentum buffers in shared memory.
"""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class HogwildConfig(BaseModel):
    """Workers, optimiser, learning-rate schedule, scheduler and evaluation cadence of a Hogwild run."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(4, ge=1, le=64)
    epochs: int = Field(1, ge=1, description="passes over the training set, per worker")
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.5, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    lr_milestones: list[float] = Field(
        default_factory=list, description="epochs (fractions allowed) at which lr is multiplied by lr_gamma"
    )
    lr_gamma: float = Field(0.1, gt=0)
    shared_optimizer: bool = Field(False, description="one global step counter, schedule and momentum")
    scheduler: str = Field("free", description="who decides when workers run: free, os-signals, gated")
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    side_channel: bool | None = Field(
        None, description="workers report batch label histograms; default: on unless scheduler is free"
    )
    eval_every_s: float | None = Field(1.0, gt=0, description="seconds between evaluations; null: none")
    eval_every_steps: int | None = Field(None, ge=1, description="global steps between evaluations")
    checkpoint_every_s: float | None = Field(None, gt=0)
    seed: int | None = Field(None, description="default: the experiment's seed")
    timeout_s: float = Field(3600.0, gt=0, description="abort (and clean up) a run that takes longer")

    @field_validator("lr_milestones")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(m <= 0 for m in v) or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"lr_milestones must be positive and strictly increasing, got {v}")
        return v

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        from siegecraft.hogwild.schedulers import SCHEDULERS

        SCHEDULERS.get(v)
        return v

    @model_validator(mode="after")
    def _one_eval_cadence(self) -> HogwildConfig:
        if self.eval_every_steps is not None and self.eval_every_s is not None:
            if "eval_every_s" in self.model_fields_set:
                raise ValueError("set hogwild.eval_every_s or hogwild.eval_every_steps, not both")
            self.eval_every_s = None  # the default time cadence yields to an explicit step cadence
        return self

    def uses_side_channel(self) -> bool:
        """Whether workers publish their batch's label histogram (the simulated side channel)."""
        return self.side_channel if self.side_channel is not None else self.scheduler != "free"

    def lr_at(self, epoch: float) -> float:
        """Learning rate after `epoch` epochs of progress (multi-step decay at the milestones)."""
        passed = sum(1 for m in self.lr_milestones if epoch >= m)
        return self.lr * self.lr_gamma**passed

    def high_lr_until(self) -> float:
        """End of the initial (highest) learning-rate phase, in epochs."""
        return self.lr_milestones[0] if self.lr_milestones else float(self.epochs)
