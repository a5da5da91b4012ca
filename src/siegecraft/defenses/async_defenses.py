"""Defenses for asynchronous (Hogwild) training, registered by name in `ASYNC_DEFENSES`.

Each defense reviews a worker's update just before it is written (after any scheduler hold), so a
delayed update is judged with the staleness it really has. Defenses run inside the worker processes;
state they share across workers (the norm filter's history) lives in shared memory, created by
`prepare()` before the workers fork.

- `shared-optimizer`: one global step counter, schedule and momentum (kills stale optimiser state).
- `bounded-staleness`: drop an update computed on parameters more than `max_staleness` global steps old.
- `staleness-aware-lr`: scale the learning rate by 1 / (1 + staleness).
- `update-norm-filter`: drop an update whose norm exceeds `k` times the running median of recent ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from siegecraft.registry import Registry

if TYPE_CHECKING:  # not at run time: the hogwild package imports this module
    from siegecraft.hogwild.config import HogwildConfig


@dataclass
class PendingUpdate:
    """An update about to be written: who computed it, how stale it is, and its norm on demand."""

    rank: int
    staleness: int  # global steps applied since this worker read the parameters (-1: not tracked)
    norm_at: Callable[[float], float]  # lr -> L2 norm of the parameter change at that lr
    _norms: dict[float, float] = field(default_factory=dict)

    def update_norm(self, lr: float) -> float:
        if lr not in self._norms:
            self._norms[lr] = self.norm_at(lr)
        return self._norms[lr]


@dataclass(frozen=True)
class Verdict:
    """Accept (possibly at a scaled learning rate) or drop an update."""

    accept: bool = True
    lr_scale: float = 1.0


ACCEPT = Verdict()
DROP = Verdict(accept=False)


class DefenseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AsyncDefense:
    """Base defense: accepts everything; subclasses override what they change."""

    options_model: ClassVar[type[DefenseOptions]] = DefenseOptions
    needs_staleness: ClassVar[bool] = False
    name: ClassVar[str] = "none"

    def __init__(self, options: DefenseOptions | None = None) -> None:
        self.options = options or self.options_model()

    def configure(self, cfg: HogwildConfig) -> HogwildConfig:
        """Adjust the training configuration before the run starts."""
        return cfg

    def prepare(self, workers: int) -> None:
        """Allocate shared state in the main process, before the workers fork."""

    def review(self, update: PendingUpdate, lr: float) -> Verdict:
        del update, lr
        return ACCEPT


ASYNC_DEFENSES: Registry[type[AsyncDefense]] = Registry("async defense")


def _register(name: str) -> Callable[[type[AsyncDefense]], type[AsyncDefense]]:
    """Register a defense class under `name` and record the name on the class."""

    def deco(cls: type[AsyncDefense]) -> type[AsyncDefense]:
        cls.name = name
        return ASYNC_DEFENSES.register(name)(cls)

    return deco


@_register("shared-optimizer")
class SharedOptimizerState(AsyncDefense):
    """One global step counter, learning-rate schedule and momentum for all workers.

    A worker released after a long stall then uses the current (decayed) learning rate and current
    momentum, so its single update is an ordinary small step (Game of Threads Variant 1 loses its lever).
    """

    def configure(self, cfg: HogwildConfig) -> HogwildConfig:
        return cfg.model_copy(update={"shared_optimizer": True})


class BoundedStalenessOptions(DefenseOptions):
    max_staleness: int = Field(16, ge=0, description="drop updates older than this many global steps")


@_register("bounded-staleness")
class BoundedStaleness(AsyncDefense):
    """Drop an update computed on parameters more than `max_staleness` global steps old."""

    options_model = BoundedStalenessOptions
    needs_staleness = True
    options: BoundedStalenessOptions

    def review(self, update: PendingUpdate, lr: float) -> Verdict:
        return DROP if update.staleness > self.options.max_staleness else ACCEPT


class StalenessLROptions(DefenseOptions):
    tolerance: int = Field(0, ge=0, description="staleness that is not penalised (e.g. workers - 1)")


@_register("staleness-aware-lr")
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


@_register("update-norm-filter")
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


def build_async_defenses(
    names: Sequence[str], options: Mapping[str, Any] | None = None
) -> list[AsyncDefense]:
    """Instantiate defenses by name; `options[name]` (a mapping) holds each one's options."""
    options = options or {}
    out = []
    for name in names:
        cls = ASYNC_DEFENSES.get(name)
        raw = options.get(name, {})
        if not isinstance(raw, Mapping):
            raise TypeError(f"defense.options.{name} must be a table of options, got {raw!r}")
        try:
            out.append(cls(cls.options_model.model_validate(dict(raw))))
        except ValidationError as err:
            allowed = ", ".join(sorted(cls.options_model.model_fields)) or "(none)"
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(
                f"defense.options.{name}.{where}: {first['msg']}; allowed keys: {allowed}"
            ) from None
    if len(set(names)) != len(names):
        raise ValueError(f"defense names repeat: {list(names)}")
    return out
