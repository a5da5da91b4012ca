"""`HogwildTrainer`: shared model, worker processes, scheduler thread, periodic evaluation and checkpoints.

The main process never trains: it forks the workers, lets the scheduler answer their traps, evaluates
a snapshot of the shared parameters every `eval_every_s` seconds (or `eval_every_steps` global steps),
checkpoints, and on the way out - normal or not - stops the scheduler and cleans up every child.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.engines.hogwild.config import HogwildConfig
from siegecraft.engines.hogwild.data_order import PlantedRun, steps_per_epoch
from siegecraft.engines.hogwild.extensions import AsyncDefense
from siegecraft.engines.hogwild.metrics import SnapshotEvaluator
from siegecraft.engines.hogwild.optimizer import shared_momentum_buffers, warm_up_optimizer
from siegecraft.engines.hogwild.policy import SchedulePolicy
from siegecraft.engines.hogwild.schedulers import Scheduler, build_scheduler
from siegecraft.engines.hogwild.shared_state import SharedState
from siegecraft.engines.hogwild.side_channel import LabelSideChannel
from siegecraft.engines.hogwild.worker import WorkerSetup, worker_main
from siegecraft.engines.hogwild.worker_pool import WorkerPool

POLL_S = 0.02  # progress polling when evaluating every N global steps
MAX_WAIT_S = 0.25  # otherwise: wake at least this often (finished flags, crashes, the timeout)


@dataclass
class HogwildResult:
    """What a run produced: the timeline, the attack's events, counters and timings."""

    records: list[dict[str, Any]]
    events: list[dict[str, Any]]
    final: dict[str, Any]
    steps: list[int]
    applied: list[int]
    dropped: dict[str, list[int]]
    max_staleness: list[int]
    train_seconds: float
    samples: int
    grants: list[tuple[int, str, int]] = field(default_factory=list)
    exitcodes: list[int | None] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


class HogwildTrainer:
    """One asynchronous training run on a shared-memory model."""

    def __init__(
        self,
        model: nn.Module,
        train: ImageDataset,
        val: ImageDataset,
        cfg: HogwildConfig,
        *,
        seed: int = 0,
        policy: SchedulePolicy | None = None,
        defenses: Sequence[AsyncDefense] = (),
        planted: dict[int, PlantedRun] | None = None,
        target_label: int = 0,
        out_dir: str | Path | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
        final_eval: bool = True,
    ) -> None:
        for d in defenses:
            cfg = d.configure(cfg)
        self.cfg, self.seed = cfg, cfg.seed if cfg.seed is not None else seed
        self.model, self.train, self.val = model, train, val
        self.policy, self.defenses = policy, tuple(defenses)
        self.planted = planted or {}
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.final_eval = final_eval
        self.spe = steps_per_epoch(len(train), cfg.batch_size)
        self.records: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.scheduler: Scheduler = build_scheduler(cfg.scheduler, cfg.scheduler_options)
        self.state = SharedState.create(cfg.workers, len(self.defenses))
        self.evaluator = SnapshotEvaluator(model, val, target_label)
        self._log_lock = threading.Lock()
        self._t0 = time.monotonic()
        self.pool: WorkerPool | None = None

    # -- timeline ----------------------------------------------------------------------------------
    def now(self) -> float:
        return round(time.monotonic() - self._t0, 4)

    def evaluate(self, tag: str = "periodic") -> dict[str, Any]:
        record = {"t": self.now(), "global_step": self.state.version(), "tag": tag, **self.evaluator()}
        with self._log_lock:
            self.records.append(record)
        if self.progress is not None:
            self.progress(record)
        return record

    def mark(self, label: str, **info: Any) -> None:
        event = {"t": self.now(), "global_step": self.state.version(), "event": label, **info}
        with self._log_lock:
            self.events.append(event)

    def checkpoint(self, name: str) -> Path | None:
        if self.out_dir is None:
            return None
        path = self.out_dir / "checkpoints" / f"hogwild-{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        torch.save({"global_step": self.state.version(), "model": state}, path)
        return path

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> HogwildResult:
        cfg = self.cfg
        warm_up_optimizer()
        self.model.share_memory()
        channel = LabelSideChannel(cfg.workers, self.train.num_classes) if cfg.uses_side_channel() else None
        buffers = shared_momentum_buffers(self.model) if cfg.shared_optimizer else None
        for d in self.defenses:
            d.prepare(cfg.workers)
        pipes = [multiprocessing.Pipe(duplex=True) for _ in range(cfg.workers)]
        parent_ends, worker_ends = [p[0] for p in pipes], [p[1] for p in pipes]
        pool = self.pool = WorkerPool()
        self._t0 = time.monotonic()
        t_start = time.perf_counter()
        try:
            self.scheduler.attach(
                pool, self.state, parent_ends, self.spe, channel=channel, policy=self.policy,
                evaluator=self.evaluate, marker=self.mark,
            )
            setups = [
                WorkerSetup(
                    rank=r, cfg=cfg, seed=self.seed, model=self.model, images=self.train.x, labels=self.train.y,
                    state=self.state, conn=worker_ends[r],
                    foreign_conns=parent_ends + [c for i, c in enumerate(worker_ends) if i != r],
                    channel=channel, defenses=self.defenses, shared_buffers=buffers, planted=self.planted.get(r),
                )
                for r in range(cfg.workers)
            ]
            pool.start(worker_main, [(s, os.getpid()) for s in setups])
            for conn in worker_ends:
                conn.close()  # the workers hold their ends now; ours would mask a worker's exit
            self.scheduler.start()
            self._monitor(pool)
            pool.join()
            train_seconds = time.perf_counter() - t_start
        finally:
            self.scheduler.stop()
            pool.cleanup()
            for conn in parent_ends + worker_ends:
                conn.close()
        self.scheduler.check()
        crashed = [r for r, code in enumerate(pool.exitcodes) if code not in (0, None) and r not in pool.killed]
        if crashed:
            raise RuntimeError(f"hogwild workers {crashed} failed (exit codes "
                               f"{[pool.exitcodes[r] for r in crashed]}); see their traceback above")
        final = self.evaluate("final") if self.final_eval else {}
        self.checkpoint("final")
        return self._result(final, train_seconds, pool)

    def _monitor(self, pool: WorkerPool) -> None:
        """Sleep on the workers' exit sentinels until the next evaluation or checkpoint is due."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.timeout_s
        next_eval_t = time.monotonic() + (cfg.eval_every_s or float("inf"))
        next_eval_step = cfg.eval_every_steps or 0
        next_ckpt = time.monotonic() + (cfg.checkpoint_every_s or float("inf"))
        poll = POLL_S if next_eval_step else MAX_WAIT_S
        while not all(self.scheduler.finished(r) or not pool.is_alive(r) for r in range(cfg.workers)):
            now = time.monotonic()
            timeout = max(0.0, min(poll, next_eval_t - now, next_ckpt - now, deadline - now))
            wait([p.sentinel for p in pool.procs if p.is_alive()], timeout=timeout)
            self.scheduler.check()
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"hogwild run exceeded timeout_s={cfg.timeout_s}")
            crashed = [r for r in range(cfg.workers)
                       if not pool.is_alive(r) and pool.exitcode(r) not in (0, None) and r not in pool.killed]
            if crashed:
                raise RuntimeError(f"hogwild worker(s) {crashed} exited with codes "
                                   f"{[pool.exitcode(r) for r in crashed]}")
            if now >= next_eval_t:
                self.evaluate()
                next_eval_t = now + cfg.eval_every_s  # type: ignore[operator]
            elif next_eval_step and self.state.version() >= next_eval_step:
                self.evaluate()
                next_eval_step = self.state.version() + cfg.eval_every_steps  # type: ignore[operator]
            if now >= next_ckpt:
                self.checkpoint(f"step-{self.state.version():07d}")
                next_ckpt = now + cfg.checkpoint_every_s  # type: ignore[operator]

    def _result(self, final: dict[str, Any], train_seconds: float, pool: WorkerPool) -> HogwildResult:
        names = [d.name for d in self.defenses]
        steps = [int(v) for v in self.state.steps]
        samples = sum(s // self.spe * len(self.train) + s % self.spe * self.cfg.batch_size for s in steps)
        return HogwildResult(
            records=self.records, events=self.events, final=final, steps=steps,
            applied=[int(v) for v in self.state.applied],
            dropped={n: [int(v) for v in self.state.dropped[:, i]] for i, n in enumerate(names)},
            max_staleness=[int(v) for v in self.state.max_staleness],
            train_seconds=train_seconds, samples=samples,
            grants=list(self.scheduler.grants), exitcodes=list(pool.exitcodes),
        )
