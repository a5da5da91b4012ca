"""Asynchronous (Hogwild) training on a shared-memory model, and the schedulers that decide when workers run.

`train_hogwild(cfg, attack, defenses, out_dir, progress, train=..., val=..., model=...)` runs one
experiment from plain objects; `run_hogwild(exp, run)` is the `topology = "hogwild"` runner.
"""

from siegecraft.hogwild.config import HogwildConfig
from siegecraft.hogwild.data_order import DataOrder, PlantedRun, binomial_tail
from siegecraft.hogwild.policy import GO, HOLD, Decision, SchedulePolicy, WorkerControl
from siegecraft.hogwild.processes import WorkerPool, process_state
from siegecraft.hogwild.schedulers import SCHEDULERS, Scheduler, build_scheduler
from siegecraft.hogwild.side_channel import LabelSideChannel
from siegecraft.hogwild.trainer import HogwildResult, HogwildTrainer
from siegecraft.hogwild.traps import TrapEvent

__all__ = [
    "GO",
    "HOLD",
    "SCHEDULERS",
    "DataOrder",
    "Decision",
    "HogwildConfig",
    "HogwildResult",
    "HogwildTrainer",
    "LabelSideChannel",
    "PlantedRun",
    "SchedulePolicy",
    "Scheduler",
    "TrapEvent",
    "WorkerControl",
    "WorkerPool",
    "binomial_tail",
    "build_scheduler",
    "process_state",
    "run_hogwild",
    "train_hogwild",
]


def __getattr__(name: str) -> object:
    """`run_hogwild` / `train_hogwild` load lazily: they import the attack and defense packages."""
    if name in ("run_hogwild", "train_hogwild"):
        from siegecraft.hogwild import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'siegecraft.hogwild' has no attribute {name!r}")
