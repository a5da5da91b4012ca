"""What the Hogwild engine accepts from add-ons: asynchronous defenses and scheduling adversaries.

- An `AsyncDefense` reviews each worker's update just before it is written (after any scheduler hold);
  register one with `@ASYNC_DEFENSES.register("name")`; `[defense] names` picks them.
- A `ThreadAdversary` acts only through the scheduler: it builds a `SchedulePolicy` and may condition
  the workers' data orders; register one with `@HOGWILD_ATTACKS.register("name")`; `[attack] name` picks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from siegecraft.core.config import FieldError
from siegecraft.core.registry import Registry
from siegecraft.engines.hogwild.config import HogwildConfig
from siegecraft.engines.hogwild.data_order import PlantedRun
from siegecraft.engines.hogwild.policy import SchedulePolicy


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
    name: str = "none"  # set to the registered name when built

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
            raise FieldError(("options", name), raw, "must be a table of that defense's options")
        try:
            defense = cls(cls.options_model.model_validate(dict(raw)))
        except ValidationError as err:
            allowed = ", ".join(sorted(cls.options_model.model_fields)) or "(none)"
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise FieldError(("options", name, where), first.get("input"),
                             f"{first['msg']}; allowed keys: {allowed}") from None
        defense.name = name
        out.append(defense)
    if len(set(names)) != len(names):
        raise FieldError(("names",), list(names), "each defense may be named once")
    return out


class AttackOptions(BaseModel):
    """Base of every scheduling adversary's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ThreadAdversary:
    """A Hogwild adversary: it decides when workers run (a `SchedulePolicy`), nothing else.

    `success_metric` names the summary key that measures the attack (its result contract).
    """

    options_model: ClassVar[type[AttackOptions]] = AttackOptions
    success_metric: ClassVar[str | None] = None

    def __init__(self, options: AttackOptions) -> None:
        self.options = options

    def check(self, cfg: HogwildConfig) -> None:
        """Raise FieldError (path from the experiment root) on settings the attack cannot run with."""
        del cfg

    def check_data(self, cfg: HogwildConfig, num_classes: int) -> None:
        """Checks that need the training data's class count; run before the run directory exists."""
        del cfg, num_classes

    def target_label(self) -> int:
        """The label whose prediction rate the run tracks (0 when the attack has none)."""
        return 0

    def policy(self, cfg: HogwildConfig) -> SchedulePolicy | None:
        """The scheduling policy that carries out the attack."""
        del cfg
        return None

    def planted(self, cfg: HogwildConfig, n_train: int) -> dict[int, PlantedRun]:
        """Per-worker conditioned data orders (empty: the workers' natural orders)."""
        del cfg, n_train
        return {}


HOGWILD_ATTACKS: Registry[type[ThreadAdversary]] = Registry("hogwild attack")


@HOGWILD_ATTACKS.register("none")
class NoThreadAttack(ThreadAdversary):
    """No adversary: the scheduler runs the workers as configured."""
