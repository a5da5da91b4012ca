"""Defenses for asynchronous (Hogwild) training, registered in the Hogwild engine's `ASYNC_DEFENSES`.

Each defense reviews a worker's update just before it is written (after any scheduler hold), so a
delayed update is judged with the staleness it really has. Defenses run inside the worker processes;
state they share across workers (the norm filter's history) lives in shared memory, created by
`prepare()` before the workers fork.

- `shared_optimizer`: one global step counter, schedule and momentum (kills stale optimiser state).
- `bounded_staleness`: drop an update computed on parameters more than `max_staleness` global steps old.
- `staleness_aware_lr`: scale the learning rate by 1 / (1 + staleness).
- `update_norm_filter`: drop an update whose norm exceeds `k` times the running median of recent ones.
"""

from __future__ import annotations

import torch
from pydantic import Field

from siegecraft.engines.hogwild.config import HogwildConfig
from siegecraft.engines.hogwild.extensions import (
    ACCEPT,
    ASYNC_DEFENSES,
    DROP,
    AsyncDefense,
    DefenseOptions,
    PendingUpdate,
    Verdict,
)


@ASYNC_DEFENSES.register("shared_optimizer")
class SharedOptimizerState(AsyncDefense):
    """One global step counter, learning-rate schedule and momentum for all workers.

    A worker released after a long stall then uses the current (decayed) learning rate and current
    momentum, so its single update is an ordinary small step (Game of Threads Variant 1 loses its lever).
    """

    def configure(self, cfg: HogwildConfig) -> HogwildConfig:
        return cfg.model_copy(update={"shared_optimizer": True})


class BoundedStalenessOptions(DefenseOptions):
    max_staleness: int = Field(16, ge=0, description="drop updates older than this many global steps")


@ASYNC_DEFENSES.register("bounded_staleness")
class BoundedStaleness(AsyncDefense):
    """Drop an update computed on parameters more than `max_staleness` global steps old."""

    options_model = BoundedStalenessOptions
    needs_staleness = True
    options: BoundedStalenessOptions

    def review(self, update: PendingUpdate, lr: float) -> Verdict:
        return DROP if update.staleness > self.options.max_staleness else ACCEPT


class StalenessLROptions(DefenseOptions):
    tolerance: int = Field(0, ge=0, description="staleness that is not penalised (e.g. workers - 1)")


@ASYNC_DEFENSES.register("staleness_aware_lr")
class StalenessAwareLR(AsyncDefense):
    """Scale the learning rate by 1 / (1 + staleness) (staleness beyond `tolerance`)."""

    options_model = StalenessLROptions
    needs_staleness = True
    options: StalenessLROptions

    def review(self, update: PendingUpdate, lr: float) -> Verdict:
        excess = max(0, update.staleness - self.options.tolerance)
        return Verdict(True, 1.0 / (1.0 + excess))


class NormFilterOptions(DefenseOptions):
    k: float = Field(3.0, gt=1, description="drop updates whose norm exceeds k x the running median")
    window: int = Field(64, ge=3, description="recent update norms the median is taken over")
    warmup: int = Field(64, ge=1, description="updates accepted unconditionally (momentum warm-up, seeding)")


@ASYNC_DEFENSES.register("update_norm_filter")
class UpdateNormFilter(AsyncDefense):
    """Drop an update whose norm exceeds `k` x the running median of recent update norms (Kardam-like).

    The history is shared by all workers, so a worker released with a stale large learning rate is
    compared with what the others write now, not with its own past. Every reviewed norm enters the
    history, dropped ones too: otherwise a legitimate sustained growth (momentum warming up) would
    freeze the median and every later update would be dropped; one outlier barely moves a median.
    """

    options_model = NormFilterOptions
    options: NormFilterOptions

    def __init__(self, options: DefenseOptions | None = None) -> None:
        super().__init__(options)
        self.history = torch.zeros(0)
        self.count = torch.zeros(1, dtype=torch.int64)

    def prepare(self, workers: int) -> None:
        self.history = torch.zeros(self.options.window, dtype=torch.float64).share_memory_()
        self.count = torch.zeros(1, dtype=torch.int64).share_memory_()

    def review(self, update: PendingUpdate, lr: float) -> Verdict:
        norm = update.update_norm(lr)
        n = int(self.count[0])
        median = float(self.history[: min(n, self.options.window)].median()) if n else 0.0
        self.history[n % self.options.window] = norm
        self.count[0] = n + 1
        if n >= self.options.warmup and norm > self.options.k * median:
            return DROP
        return ACCEPT
