"""Schedulers decide when workers run; registered by name in `SCHEDULERS`.

- `free`: the OS decides; no traps (plain Hogwild).
- `os_signals`: real SIGSTOP / SIGCONT on the worker processes. A held worker is a stopped process;
  `max_running` optionally time-slices the workers with signals alone.
- `gated`: every worker waits for a grant before reading and before writing; one worker runs at a
  time in a fixed order, so the interleaving (and, with one torch thread, the result) is deterministic.

A scheduler runs one thread in the main process that answers the workers' traps and drives the policy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from siegecraft.core.registry import Registry
from siegecraft.engines.hogwild.policy import GO, HOLD, SchedulePolicy, WorkerControl
from siegecraft.engines.hogwild.shared_state import SharedState
from siegecraft.engines.hogwild.side_channel import LabelSideChannel
from siegecraft.engines.hogwild.traps import DONE, WRITE_TRAP, TrapEvent, decode
from siegecraft.engines.hogwild.worker_pool import WorkerPool

TICK_S = 0.005


class SchedulerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stall_timeout_s: float = Field(30.0, gt=0, description="release everything if all live workers are held")


class Scheduler(WorkerControl):
    """Common machinery: the trap-answering thread, held workers, kills, events and evaluations."""

    options_model: type[SchedulerOptions] = SchedulerOptions
    name = "base"
    supports_policy = True

    def __init__(self, options: SchedulerOptions | None = None) -> None:
        self.options = options or self.options_model()
        self.held: dict[int, TrapEvent] = {}
        self.grants: list[tuple[int, str, int]] = []  # (rank, kind, step) in grant order
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done: set[int] = set()
        self._error: BaseException | None = None
        self._held_since: float | None = None

    # -- wiring ------------------------------------------------------------------------------------
    def attach(
        self, pool: WorkerPool, state: SharedState, conns: list[Connection], steps_per_epoch: int, *,
        channel: LabelSideChannel | None, policy: SchedulePolicy | None,
        evaluator: Callable[[str], dict[str, Any] | None], marker: Callable[..., None],
    ) -> None:
        if policy is not None and not self.supports_policy:
            raise ValueError(f"scheduler {self.name!r} cannot run a scheduling policy (attack); "
                             "use 'os_signals' or 'gated'")
        self.pool, self.state, self.conns = pool, state, list(conns)
        self.workers, self.steps_per_epoch = len(conns), steps_per_epoch
        self.channel, self.policy = channel, policy
        self._evaluator, self._marker = evaluator, marker
        self.t0 = time.monotonic()
        self.configure_traps()

    def configure_traps(self) -> None:
        """Switch the workers' traps on as this scheduler (and its policy) needs; before they start."""
        read, write = self.policy.traps if self.policy is not None else (False, False)
        self.state.set_traps(range(self.workers), read=read, write=write)

    def start(self) -> None:
        if self.policy is not None:
            with self._lock:
                self.policy.setup(self)
        if self.needs_thread():
            self._thread = threading.Thread(target=self._loop, name=f"hogwild-{self.name}", daemon=True)
            self._thread.start()

    def needs_thread(self) -> bool:
        """Whether anything must answer traps or act on ticks (plain Hogwild needs nothing running)."""
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def check(self) -> None:
        """Re-raise an error from the scheduler thread in the caller."""
        if self._error is not None:
            raise RuntimeError(f"hogwild scheduler {self.name!r} failed: {self._error!r}") from self._error

    # -- the thread --------------------------------------------------------------------------------
    def _loop(self) -> None:
        open_conns = {conn: rank for rank, conn in enumerate(self.conns)}
        try:
            while not self._stop.is_set():
                ready = wait(list(open_conns), timeout=TICK_S) if open_conns else []
                if not open_conns:
                    time.sleep(TICK_S)
                with self._lock:
                    for conn in ready:
                        rank = open_conns[conn]
                        try:
                            message = conn.recv()
                        except (EOFError, OSError):
                            del open_conns[conn]
                            self._done.add(rank)
                            continue
                        event = decode(rank, message)
                        if event.kind == DONE:
                            self._done.add(rank)
                        else:
                            self.arrived(event)
                    self.tick()
        except BaseException as err:  # noqa: BLE001 - surfaced to the main thread by check()
            self._error = err

    def tick(self) -> None:
        if self.policy is not None:
            self.policy.on_tick(self)
        self._watchdog()
        self.after_tick()

    def _watchdog(self) -> None:
        live = [r for r in range(self.workers) if not self.finished(r)]
        if live and all(r in self.held for r in live):
            now = time.monotonic()
            self._held_since = self._held_since or now
            if now - self._held_since > self.options.stall_timeout_s:
                self.mark("watchdog release", held=sorted(self.held))
                self.release(list(self.held))
                self._held_since = None
        else:
            self._held_since = None

    # -- to implement --------------------------------------------------------------------------------
    def arrived(self, event: TrapEvent) -> None:
        """A worker is waiting at a trap."""
        self.grant(event)

    def after_tick(self) -> None:
        """Scheduler-specific work after each tick."""

    def grant(self, event: TrapEvent) -> None:
        self.grants.append((event.rank, event.kind, event.step))
        try:
            self.conns[event.rank].send(True)
        except (BrokenPipeError, OSError):
            self._done.add(event.rank)

    # -- WorkerControl -----------------------------------------------------------------------------------
    def decide(self, event: TrapEvent) -> Any:
        return self.policy.on_trap(event, self) if self.policy is not None else GO

    def finished(self, rank: int) -> bool:
        return rank in self._done or rank in self.pool.killed or bool(self.state.done[rank])

    def kill(self, rank: int) -> None:
        with self._lock:
            self.held.pop(rank, None)
            self.pool.kill(rank)
            self._done.add(rank)

    def evaluate(self, tag: str) -> dict[str, Any] | None:
        return self._evaluator(tag)

    def mark(self, label: str, **info: Any) -> None:
        self._marker(label, **info)

    def now(self) -> float:
        return time.monotonic() - self.t0


SCHEDULERS: Registry[type[Scheduler]] = Registry("hogwild scheduler")


@SCHEDULERS.register("free")
class FreeScheduler(Scheduler):
    """Plain Hogwild: no traps, the OS alone decides who runs."""

    name = "free"
    supports_policy = False

    def needs_thread(self) -> bool:
        return False

    def release(self, ranks: Iterable[int]) -> None:
        for r in list(ranks):
            ev = self.held.pop(r, None)
            if ev is not None:
                self.grant(ev)

    def pause(self, rank: int) -> None:
        raise ValueError("the free scheduler cannot pause workers; use 'os_signals' or 'gated'")

    def resume(self, rank: int) -> None:
        raise ValueError("the free scheduler cannot resume workers; use 'os_signals' or 'gated'")


class OsSignalOptions(SchedulerOptions):
    max_running: int | None = Field(None, ge=1, description="time-slice: at most this many workers run")
    slice_s: float = Field(0.05, gt=0, description="time slice length when max_running is set")


@SCHEDULERS.register("os_signals")
class OsSignalScheduler(Scheduler):
    """Real signals: HOLD stops the process (SIGSTOP, confirmed by /proc) before its trap is answered."""

    name = "os_signals"
    options_model = OsSignalOptions
    options: OsSignalOptions

    def __init__(self, options: SchedulerOptions | None = None) -> None:
        super().__init__(options)
        self.paused: set[int] = set()
        self._slice_start = 0.0
        self._slice_offset = 0

    def attach(self, *args: Any, **kwargs: Any) -> None:
        super().attach(*args, **kwargs)
        if self.options.max_running is not None and self.policy is not None:
            raise ValueError("os_signals: max_running (time slicing) cannot be combined with an attack policy")

    def arrived(self, event: TrapEvent) -> None:
        if self.decide(event) is HOLD and self.pool.stop(event.rank):
            self.held[event.rank] = event
        self.grant(event)  # a held worker is stopped: the grant waits in its pipe until SIGCONT

    def release(self, ranks: Iterable[int]) -> None:
        with self._lock:
            chosen = [r for r in ranks if r in self.held]
            for r in chosen:
                del self.held[r]
            for r in chosen:
                if r not in self.paused:
                    self.pool.cont(r)

    def pause(self, rank: int) -> None:
        with self._lock:
            self.paused.add(rank)
            self.pool.stop(rank)

    def resume(self, rank: int) -> None:
        with self._lock:
            self.paused.discard(rank)
            if rank not in self.held:
                self.pool.cont(rank)

    def after_tick(self) -> None:
        k = self.options.max_running
        if k is None or k >= self.workers:
            return
        now = time.monotonic()
        for r in [r for r in self.paused if self.finished(r)]:
            self.resume(r)  # it finished just as it was paused: let it exit, or the run waits on a stopped worker
        if now - self._slice_start < self.options.slice_s:
            return
        self._slice_start = now
        live = [r for r in range(self.workers) if not self.finished(r)]
        if not live:
            return
        self._slice_offset = (self._slice_offset + k) % len(live)
        running = {live[(self._slice_offset + i) % len(live)] for i in range(min(k, len(live)))}
        for r in live:
            if r in running:
                self.resume(r)
            else:
                self.pause(r)


class GatedOptions(SchedulerOptions):
    interleave: Literal["step", "phase"] = Field(
        "step", description="step: each read is followed by its write; phase: round-robin over all traps"
    )


@SCHEDULERS.register("gated")
class GatedScheduler(Scheduler):
    """Deterministic: one worker runs at a time; grants go round-robin in rank order.

    A grant is given only when every live, unheld, unpaused worker waits at a trap, so arrival timing
    cannot change the order. `step` interleaving completes each worker's step before the next one reads;
    `phase` lets every worker read before any writes (a deterministic staleness of up to workers - 1).
    """

    name = "gated"
    options_model = GatedOptions
    options: GatedOptions

    def __init__(self, options: SchedulerOptions | None = None) -> None:
        super().__init__(options)
        self.pending: dict[int, tuple[TrapEvent, bool]] = {}  # rank -> (event, already decided)
        self.paused: set[int] = set()
        self.active: int | None = None
        self._next = 0

    def configure_traps(self) -> None:
        self.state.set_traps(range(self.workers), read=True, write=True)

    def arrived(self, event: TrapEvent) -> None:
        if self.active == event.rank:
            self.active = None
        self.pending[event.rank] = (event, False)
        self.dispatch()

    def after_tick(self) -> None:
        if self.active is not None and self.finished(self.active):
            self.active = None
        self.dispatch()

    def _candidates(self) -> list[int]:
        return [r for r in range(self.workers)
                if not self.finished(r) and r not in self.held and r not in self.paused]

    def _pick(self, ready: list[int]) -> int:
        order = [(self._next + i) % self.workers for i in range(self.workers)]
        if self.options.interleave == "step":
            writers = [r for r in order if r in ready and self.pending[r][0].kind == WRITE_TRAP]
            if writers:
                return writers[0]
        return next(r for r in order if r in ready)

    def dispatch(self) -> None:
        """Grant the next trap if the system is quiescent (no worker running)."""
        while self.active is None:
            candidates = self._candidates()
            if not candidates or any(r not in self.pending for r in candidates):
                return
            rank = self._pick(candidates)
            event, decided = self.pending.pop(rank)
            if not decided and self.decide(event) is HOLD:
                self.held[rank] = event
                continue
            self._next = (rank + 1) % self.workers
            self.active = rank
            self.grant(event)

    def release(self, ranks: Iterable[int]) -> None:
        with self._lock:
            for r in list(ranks):
                event = self.held.pop(r, None)
                if event is not None:
                    self.pending[r] = (event, True)

    def pause(self, rank: int) -> None:
        with self._lock:
            self.paused.add(rank)

    def resume(self, rank: int) -> None:
        with self._lock:
            self.paused.discard(rank)

    def kill(self, rank: int) -> None:
        with self._lock:
            self.pending.pop(rank, None)
            if self.active == rank:
                self.active = None
            super().kill(rank)


def build_scheduler(name: str, options: dict[str, Any] | None = None) -> Scheduler:
    """Instantiate a registered scheduler with validated options."""
    cls = SCHEDULERS.get(name)
    return cls(cls.options_model.model_validate(options or {}))
