"""Game of Threads (Sanchez Vicarte et al., ASPLOS 2020): poisoning Hogwild training by scheduling alone.

The adversary is the OS. It never touches data, code or parameters; it only decides when each worker
runs, and learns each batch's label mix through a (simulated) side channel. It waits on the data order
the workers would use anyway: in the capture window it holds the N workers whose batches carry the
largest share (at least `bias`) of the target label; with `selection = "best"` it lets a held worker go
(it trains on as an ordinary late worker) when a more biased batch turns up elsewhere.

- Variant 1, stale optimiser state: the N workers are held before they read the parameters. The others
  train to the end. Released, each computes its gradient on the converged model with its biased batch
  and applies it with its own stale, large learning rate and old momentum; at its next trap it is
  stopped and killed.
- Variant 2, stale parameters: the N held workers read one snapshot together (the others frozen at their
  traps), their writes are held until the others have converged and then land together. Stages 2..S
  repeat it on the current model: the N read one snapshot, their writes land back to back. Then they
  are killed. Under the PyTorch example's per-worker lr clock the writes also carry the stale learning
  rate; with `[hogwild] lr_clock = "leader"` they carry the lr in force when released (pure variant 2).

`GameOfThreads` is a `SchedulePolicy`: under `os_signals` a hold is a real SIGSTOP, under `gated` a
withheld grant. `conditioned_share` is the oracle data order (an upper bound, never a natural result):
it plants batches of that target share into every worker's shuffle; `binomial_tail` says how rare they
are naturally. `status()` says in one line whether and how the attack fired.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from siegecraft.core.config import FieldError
from siegecraft.engines.hogwild.config import HogwildConfig
from siegecraft.engines.hogwild.data_order import PlantedRun, binomial_tail, steps_per_epoch
from siegecraft.engines.hogwild.extensions import HOGWILD_ATTACKS, AttackOptions, ThreadAdversary
from siegecraft.engines.hogwild.policy import GO, HOLD, Decision, SchedulePolicy, WorkerControl
from siegecraft.engines.hogwild.traps import READ_TRAP, WRITE_TRAP, TrapEvent

__all__ = ["GameOfThreads", "GameOfThreadsAttack", "GameOfThreadsConfig", "binomial_tail", "planted_runs"]


class GameOfThreadsConfig(AttackOptions):
    """The attacker's dials (the `[attack.options]` of a `game_of_threads` experiment)."""

    variant: Literal[1, 2] = 1
    target_label: int = Field(0, ge=0)
    bias: float = Field(0.2, gt=0, le=1, description="hold a batch with at least this share of the target")
    n_held: int = Field(1, ge=1, description="held workers (N); variant 2: their updates share one snapshot")
    stages: int = Field(1, ge=1, description="variant 2: how many times N held updates land together")
    selection: Literal["first", "best"] = Field(
        "best", description="first: hold the first N biased batches; best: keep the N most biased seen in the window"
    )
    capture_from: float = Field(0.1, ge=0, description="earliest capture, in the victim's epochs")
    capture_until: float | None = Field(None, gt=0, description="latest capture; default: first lr milestone")
    conditioned_share: float | None = Field(
        None, gt=0, le=1, description="oracle data order (upper bound): plant batches with this target share"
    )

    @model_validator(mode="after")
    def _variant_dials(self) -> GameOfThreadsConfig:
        if self.variant == 1 and self.stages != 1:
            raise ValueError("stages is a variant 2 dial; variant 1 gives each held worker one update")
        if self.capture_until is not None and self.capture_until <= self.capture_from:
            raise ValueError(f"capture_until={self.capture_until} must exceed capture_from={self.capture_from}")
        if self.conditioned_share is not None and self.conditioned_share < self.bias:
            raise ValueError(f"conditioned_share={self.conditioned_share} is below bias={self.bias}: "
                             "the planted batches would never be held")
        return self

    def check_against(self, hog: HogwildConfig, num_classes: int) -> None:
        """Cross-checks against the training configuration and the class count (FieldError)."""
        self.check_settings(hog)
        if self.target_label >= num_classes:
            raise FieldError(("attack", "options", "target_label"), self.target_label,
                             f"the dataset has {num_classes} classes (labels 0..{num_classes - 1})")

    def check_settings(self, hog: HogwildConfig) -> None:
        """Cross-checks that need only the training configuration (FieldError, paths from the experiment root)."""
        if self.n_held >= hog.workers:
            raise FieldError(("attack", "options", "n_held"), self.n_held,
                             f"at most hogwild.workers - 1 = {hog.workers - 1}: someone must keep training")
        start, end = self.window(hog)
        if start >= end:
            key = "capture_until" if self.capture_until is not None else "capture_from"
            raise FieldError(("attack", "options", key), getattr(self, key),
                             f"the capture window [{start}, {end}) epochs is empty (it ends at "
                             f"{'capture_until' if self.capture_until is not None else 'the first lr milestone'})")
        if hog.scheduler == "free":
            raise FieldError(("hogwild", "scheduler"), hog.scheduler,
                             "game_of_threads acts through the scheduler: use 'os_signals' or 'gated'")
        if not hog.uses_side_channel():
            raise FieldError(("hogwild", "side_channel"), hog.side_channel,
                             "game_of_threads needs the label side channel (true)")

    def window(self, hog: HogwildConfig) -> tuple[float, float]:
        """Capture window in epochs: [capture_from, capture_until or the first lr milestone)."""
        return self.capture_from, self.capture_until if self.capture_until is not None else hog.high_lr_until()


def planted_runs(attack: GameOfThreadsConfig, hog: HogwildConfig, n_train: int) -> dict[int, PlantedRun]:
    """Per-worker conditioned batches (empty unless `conditioned_share` is set), staggered by rank."""
    if attack.conditioned_share is None:
        return {}
    spe = steps_per_epoch(n_train, hog.batch_size)
    start = math.ceil(attack.capture_from * spe)
    count = attack.stages if attack.variant == 2 else 1
    return {r: PlantedRun(attack.target_label, attack.conditioned_share, start + r, count)
            for r in range(hog.workers)}


class GameOfThreads(SchedulePolicy):
    """The attack as a state machine over trap events and ticks."""

    traps = (True, True)

    def __init__(self, cfg: GameOfThreadsConfig, hog: HogwildConfig) -> None:
        self.cfg = cfg
        self.window = cfg.window(hog)
        self.n_wanted = cfg.n_held
        self.phase = "collect"
        self.victims: list[int] = []
        self.shares: dict[int, float] = {}
        self.frozen: set[int] = set()
        self.stage = 0
        self.stale_updates = 0
        self.before_release: dict[str, Any] | None = None
        self.snapshot_version: int | None = None
        self.seen_in_window = 0  # batches the side channel showed in the capture window
        self.best_seen = 0.0  # the largest target share among them
        self.swaps = 0

    # -- helpers ------------------------------------------------------------------------------------
    def _in_window(self, event: TrapEvent, ctl: WorkerControl) -> bool:
        epoch = event.step / ctl.steps_per_epoch
        return self.window[0] <= epoch < self.window[1]

    def _live_victims(self, ctl: WorkerControl) -> list[int]:
        return [v for v in self.victims if not ctl.finished(v)]

    def _all_victims_held_at(self, kind: str, ctl: WorkerControl) -> bool:
        return all(v in ctl.held and ctl.held[v].kind == kind for v in self._live_victims(ctl))

    def _held_victim_shares(self, ctl: WorkerControl) -> list[float]:
        assert ctl.channel is not None
        return [round(ctl.channel.share(v, self.cfg.target_label), 4) for v in self._live_victims(ctl)]

    # -- policy hooks -------------------------------------------------------------------------------
    def on_trap(self, event: TrapEvent, ctl: WorkerControl) -> Decision:
        is_victim = event.rank in self.victims
        if self.phase == "collect":
            if event.kind == READ_TRAP and not is_victim and self._in_window(event, ctl):
                assert ctl.channel is not None
                share = ctl.channel.share(event.rank, self.cfg.target_label)
                self.seen_in_window += 1
                self.best_seen = max(self.best_seen, share)
                if share >= self.cfg.bias and len(self.victims) < self.n_wanted:
                    self._hold(event, share, ctl)
                    if len(self.victims) == self.n_wanted and self.cfg.selection == "first":
                        self._after_collect(ctl)
                    return HOLD
                weakest = min(self.victims, key=lambda v: self.shares[v], default=None)
                if share >= self.cfg.bias and weakest is not None and share > self.shares[weakest]:
                    self.victims.remove(weakest)
                    ctl.release([weakest])  # it trains on as an ordinary (late) worker
                    ctl.mark("swap", released=weakest, share=round(self.shares.pop(weakest), 4))
                    self.swaps += 1
                    self._hold(event, share, ctl)
                    return HOLD
            return GO
        if self.phase == "freeze":
            if not is_victim:
                self.frozen.add(event.rank)
                return HOLD
            return GO
        if self.phase == "snapshot":
            return HOLD  # victims stop before writing; frozen workers cannot trap
        if self.phase == "landing" and is_victim:
            if self.cfg.variant == 1 and event.kind == WRITE_TRAP:
                self.stale_updates += 1
                ctl.mark("stale update", worker=event.rank, local_step=event.step)
                return GO
            return HOLD  # its next read: stop it (variant 1: to be killed; variant 2: next stage)
        if self.phase == "stage" and is_victim:
            return HOLD if event.kind == WRITE_TRAP else GO
        return GO

    def _hold(self, event: TrapEvent, share: float, ctl: WorkerControl) -> None:
        self.victims.append(event.rank)
        self.shares[event.rank] = share
        ctl.mark("hold", worker=event.rank, share=round(share, 4), local_step=event.step)

    def _window_closed(self, ctl: WorkerControl) -> bool:
        """No worker that is not held can still reach the capture window."""
        end = self.window[1] * ctl.steps_per_epoch
        return all(ctl.finished(r) or int(ctl.state.steps[r]) >= end
                   for r in range(ctl.workers) if r not in self.victims)

    def _after_collect(self, ctl: WorkerControl) -> None:
        if self.cfg.variant == 1:
            self.phase = "wait"
        else:
            self.phase = "freeze"
            ctl.mark("freeze", victims=list(self.victims))

    def on_tick(self, ctl: WorkerControl) -> None:
        if (self.phase == "collect" and len(self.victims) == self.n_wanted and self.cfg.selection == "best"
                and self._window_closed(ctl)):
            self._after_collect(ctl)
        if self.phase == "collect" and self.victims and ctl.others_finished(self.victims):
            ctl.mark("capture incomplete", have=len(self.victims), wanted=self.n_wanted)
            self._after_collect(ctl)
        if self.phase == "freeze":
            others = [r for r in range(ctl.workers) if r not in self.victims]
            if all(r in ctl.held or ctl.finished(r) for r in others):
                self.phase = "snapshot"
                self.snapshot_version = ctl.state.version()
                ctl.mark("snapshot read", victims=list(self.victims))
                ctl.release(self.victims)
        elif self.phase == "snapshot" and self._all_victims_held_at(WRITE_TRAP, ctl):
            ctl.release(sorted(self.frozen))
            self.frozen.clear()
            self.phase = "wait"
            ctl.mark("thaw")
        elif self.phase == "wait" and ctl.others_finished(self.victims):
            self.before_release = ctl.evaluate("before release")
            if self.snapshot_version is None:
                self.snapshot_version = ctl.state.version()
            self.stage = 1
            ctl.mark("release", victims=self._live_victims(ctl), stage=1)
            self.stale_updates += len(self._live_victims(ctl)) if self.cfg.variant == 2 else 0
            self.phase = "landing"
            ctl.release(self.victims)
        elif self.phase == "landing" and self._all_victims_held_at(READ_TRAP, ctl):
            if self.cfg.variant == 2 and self.stage < self.cfg.stages and self._live_victims(ctl):
                self.stage += 1
                self.phase = "stage"
                ctl.mark("snapshot read", stage=self.stage, shares=self._held_victim_shares(ctl))
                ctl.release(self.victims)
            else:
                self._finish(ctl)
        elif self.phase == "stage" and self._all_victims_held_at(WRITE_TRAP, ctl):
            self.phase = "landing"
            self.stale_updates += len(self._live_victims(ctl))
            ctl.mark("release", victims=self._live_victims(ctl), stage=self.stage)
            ctl.release(self.victims)

    def _finish(self, ctl: WorkerControl) -> None:
        for v in self._live_victims(ctl):
            ctl.kill(v)
        ctl.mark("kill", victims=list(self.victims))
        self.phase = "finished"

    def status(self) -> str:
        """One line for the printed summary: whether the attack fired, and if not, why."""
        label, bias = self.cfg.target_label, self.cfg.bias
        if not self.victims:
            if self.seen_in_window == 0:
                return "did not fire: no batch reached the capture window"
            return (f"did not fire: none of {self.seen_in_window} batches in the capture window had a "
                    f"label-{label} share >= {bias} (largest {self.best_seen:.3f})")
        if self.stale_updates == 0:
            return f"did not fire: {len(self.victims)} held, but no stale update landed (phase {self.phase})"
        fired = (f"fired: {len(self.victims)} held (label-{label} shares "
                 f"{', '.join(f'{self.shares[v]:.3f}' for v in self.victims)}), {self.stale_updates} stale updates")
        if len(self.victims) < self.n_wanted:
            fired += f"; capture incomplete: {len(self.victims)} of n_held = {self.n_wanted}"
        return fired

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status(),
            "variant": self.cfg.variant,
            "target_label": self.cfg.target_label,
            "oracle_data_order": self.cfg.conditioned_share is not None,
            "triggered": bool(self.victims),
            "fired": self.stale_updates > 0,
            "batches_seen_in_window": self.seen_in_window,
            "best_share_seen": round(self.best_seen, 4),
            "swaps": self.swaps,
            "victims": list(self.victims),
            "held_shares": [round(self.shares[v], 4) for v in self.victims],
            "stages_done": self.stage,
            "stale_updates": self.stale_updates,
            "phase": self.phase,
            "before_release": self.before_release,
        }


@HOGWILD_ATTACKS.register("game_of_threads")
class GameOfThreadsAttack(ThreadAdversary):
    """The registered adversary: builds the `GameOfThreads` policy and its conditioned data orders."""

    options_model = GameOfThreadsConfig
    options: GameOfThreadsConfig
    success_metric = "degradation_points"

    def check(self, cfg: HogwildConfig) -> None:
        self.options.check_settings(cfg)

    def check_data(self, cfg: HogwildConfig, num_classes: int) -> None:
        self.options.check_against(cfg, num_classes)

    def target_label(self) -> int:
        return self.options.target_label

    def policy(self, cfg: HogwildConfig) -> GameOfThreads:
        return GameOfThreads(self.options, cfg)

    def planted(self, cfg: HogwildConfig, n_train: int) -> dict[int, PlantedRun]:
        return planted_runs(self.options, cfg, n_train)
