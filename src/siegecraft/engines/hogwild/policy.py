"""What a scheduling policy (an attack, or a test probe) sees and may do: `WorkerControl` and `SchedulePolicy`.

A policy decides at every trap whether the worker may pass (`GO`) or is held there (`HOLD`), and acts
on periodic ticks (release held workers together, kill a worker, evaluate the model). The same policy
runs under `os_signals` (HOLD = a real SIGSTOP) and under `gated` (HOLD = the grant is withheld).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from enum import Enum
from typing import Any

from siegecraft.engines.hogwild.shared_state import SharedState
from siegecraft.engines.hogwild.side_channel import LabelSideChannel
from siegecraft.engines.hogwild.traps import TrapEvent


class Decision(Enum):
    GO = "go"
    HOLD = "hold"


GO, HOLD = Decision.GO, Decision.HOLD


class WorkerControl(ABC):
    """The scheduler's face towards a policy; every method is called from the scheduler thread."""

    workers: int
    steps_per_epoch: int
    state: SharedState
    channel: LabelSideChannel | None
    held: dict[int, TrapEvent]

    @abstractmethod
    def release(self, ranks: Iterable[int]) -> None:
        """Let held workers pass their traps, all at once."""

    @abstractmethod
    def kill(self, rank: int) -> None:
        """End a worker for good."""

    @abstractmethod
    def pause(self, rank: int) -> None:
        """Stop a worker wherever it is (os-signals) or at its next trap (gated)."""

    @abstractmethod
    def resume(self, rank: int) -> None:
        """Undo `pause`."""

    @abstractmethod
    def finished(self, rank: int) -> bool:
        """True once a worker completed its epochs, was killed or exited."""

    @abstractmethod
    def evaluate(self, tag: str) -> dict[str, Any] | None:
        """Evaluate the shared model now; the record joins the run's timeline."""

    @abstractmethod
    def mark(self, label: str, **info: Any) -> None:
        """Record an event (time, global step) for the metrics log and the figure."""

    def others_finished(self, ranks: Iterable[int]) -> bool:
        """True when every worker not in `ranks` has finished."""
        excluded = set(ranks)
        return all(self.finished(r) for r in range(self.workers) if r not in excluded)


class SchedulePolicy:
    """Base policy: lets everything pass."""

    #: which traps (read, write) the policy needs switched on under os_signals
    traps: tuple[bool, bool] = (True, True)

    def setup(self, ctl: WorkerControl) -> None:
        """Called once the workers run, before the first trap."""

    def on_trap(self, event: TrapEvent, ctl: WorkerControl) -> Decision:
        del event, ctl
        return GO

    def on_tick(self, ctl: WorkerControl) -> None:
        """Called after every trap and every few milliseconds."""

    def summary(self) -> dict[str, Any]:
        return {}
