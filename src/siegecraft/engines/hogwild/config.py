"""The `[hogwild]` section (engine-only keys) and `HogwildConfig`, the settings a Hogwild run resolves to.

Semantics follow PyTorch's Hogwild example: every worker process runs `train.epochs` passes over the
whole training set in its own order, with its own optimiser state and learning-rate schedule, writing
lock-free into one shared model. `shared_optimizer = true` replaces the per-worker state by one global
step counter, one schedule and one set of momentum buffers in shared memory. The optimiser, batch size,
epochs and schedule come from the experiment's `[train]` section; `HogwildConfig.resolve` joins them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from siegecraft.core.config import FieldError, check_options, registered
from siegecraft.core.training import TrainConfig, increasing_milestones, scheduled_lr
from siegecraft.engines.hogwild.schedulers import SCHEDULERS

SchedulerName = registered(SCHEDULERS)


class HogwildSection(BaseModel):
    """`[hogwild]`: workers, scheduler and evaluation cadence (the optimiser lives in `[train]`)."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(4, ge=1, le=64)
    shared_optimizer: bool = Field(False, description="one global step counter, schedule and momentum")
    lr_clock: Literal["own", "leader"] = Field(
        "own", description="own: each worker's schedule follows its own steps (PyTorch's example); "
        "leader: every worker uses the schedule of the most advanced worker"
    )
    scheduler: SchedulerName = Field("free", description="who decides when workers run: free, os_signals, gated")
    scheduler_options: dict[str, Any] = Field(default_factory=dict, description="the scheduler's own options")
    side_channel: bool | None = Field(
        None, description="workers report batch label histograms; default: on unless scheduler is free"
    )
    eval_every_s: float | None = Field(1.0, gt=0, description="seconds between evaluations; null: none")
    eval_every_steps: int | None = Field(None, ge=1, description="global steps between evaluations")
    checkpoint_every_s: float | None = Field(None, gt=0)
    timeout_s: float = Field(3600.0, gt=0, description="abort (and clean up) a run that takes longer")


    @model_validator(mode="after")
    def _scheduler_options(self) -> HogwildSection:
        check_options(self.scheduler_options, SCHEDULERS.get(self.scheduler).options_model, ("scheduler_options",))
        return self

    @model_validator(mode="after")
    def _one_eval_cadence(self) -> HogwildSection:
        if self.eval_every_steps is not None and self.eval_every_s is not None:
            if "eval_every_s" in self.model_fields_set:
                raise FieldError(("eval_every_s",), self.eval_every_s, "set eval_every_s or eval_every_steps, not both")
            self.eval_every_s = None  # the default time cadence yields to an explicit step cadence
        return self


class HogwildConfig(HogwildSection):
    """Everything a Hogwild run uses: the `[hogwild]` keys plus the optimiser, batch, epochs and schedule."""

    epochs: int = Field(1, ge=1, description="passes over the training set, per worker")
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.5, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    lr_decay: float = Field(1.0, gt=0, le=1, description="lr is multiplied by this per epoch")
    lr_milestones: list[float] = Field(
        default_factory=list, description="epochs (fractions allowed) at which lr is multiplied by lr_gamma"
    )
    lr_gamma: float = Field(0.1, gt=0)
    seed: int | None = Field(None, description="default: the experiment's seed")

    @classmethod
    def resolve(cls, section: HogwildSection, train: TrainConfig, seed: int) -> HogwildConfig:
        """The run's settings from `[hogwild]`, `[train]` and the experiment's seed."""
        keys = ("epochs", "lr", "momentum", "weight_decay", "batch_size", "lr_decay", "lr_milestones", "lr_gamma")
        return cls(**section.model_dump(exclude_unset=True), **{k: getattr(train, k) for k in keys}, seed=seed)

    _increasing = field_validator("lr_milestones")(increasing_milestones)

    def uses_side_channel(self) -> bool:
        """Whether workers publish their batch's label histogram (the simulated side channel)."""
        return self.side_channel if self.side_channel is not None else self.scheduler != "free"

    def lr_at(self, epoch: float) -> float:
        """Learning rate after `epoch` epochs of progress (the `[train]` schedule)."""
        return scheduled_lr(self.lr, epoch, self.lr_decay, self.lr_milestones, self.lr_gamma)

    def high_lr_until(self) -> float:
        """End of the initial (highest) learning-rate phase, in epochs."""
        return self.lr_milestones[0] if self.lr_milestones else float(self.epochs)
