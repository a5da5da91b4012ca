"""The worker process: lock-free SGD on the shared model, with side-channel reports, traps and defenses.

The hot loop is PyTorch's Hogwild `train_epoch` restated: draw a batch from this worker's own order,
forward, backward, step. Everything the framework adds (reports, traps, defense reviews, counters) is
a numpy flag check or a few microseconds when switched off, so free-running throughput matches the
bare example.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection

import torch
import torch.nn.functional as F
from torch import nn

from siegecraft.engines.hogwild.config import HogwildConfig
from siegecraft.engines.hogwild.data_order import DataOrder, PlantedRun
from siegecraft.engines.hogwild.extensions import AsyncDefense, PendingUpdate
from siegecraft.engines.hogwild.optimizer import build_optimizer, prospective_update_norm
from siegecraft.engines.hogwild.shared_state import READ, WRITE, SharedState, SharedViews
from siegecraft.engines.hogwild.side_channel import LabelSideChannel
from siegecraft.engines.hogwild.traps import READ_TRAP, WRITE_TRAP, WorkerLink

PR_SET_PDEATHSIG = 1


@dataclass
class WorkerSetup:
    """Everything one worker needs; handed over by fork, so nothing here is pickled."""

    rank: int
    cfg: HogwildConfig
    seed: int
    model: nn.Module  # parameters in shared memory
    images: torch.Tensor
    labels: torch.Tensor
    state: SharedState
    conn: Connection  # this worker's end of its trap pipe
    foreign_conns: list[Connection]  # every other pipe end inherited through fork (closed at start)
    channel: LabelSideChannel | None = None
    defenses: tuple[AsyncDefense, ...] = ()
    shared_buffers: list[torch.Tensor] | None = None
    planted: PlantedRun | None = None


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this worker if the main process dies, so no worker outlives a crashed run."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(4)


def worker_main(setup: WorkerSetup, parent_pid: int) -> None:
    """Process entry point."""
    _die_with_parent(parent_pid)
    # a Python SIGTERM handler inherited through fork (Ray installs one that exits with status 15) would turn
    # the pool's terminate into an ordinary-looking exit; the default action ends the worker at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for conn in setup.foreign_conns:
        conn.close()
    torch.set_num_threads(1)
    torch.manual_seed(setup.seed + 7919 * setup.rank)
    HogwildLoop(setup).run()


class HogwildLoop:
    """One worker's training loop."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.s = setup
        self.cfg = setup.cfg
        self.views: SharedViews = setup.state.views()
        self.link = WorkerLink(setup.conn)
        self.opt = build_optimizer(setup.model, self.cfg, setup.shared_buffers)
        self.order = DataOrder(setup.labels, self.cfg.batch_size, seed=setup.seed, rank=setup.rank,
                               planted=setup.planted)
        self.track_staleness = any(d.needs_staleness for d in setup.defenses)
        self.current_lr = self.cfg.lr

    def lr(self, step: int) -> float:
        """This worker's schedule (own step count), the leader's, or the global one under a shared optimiser."""
        spe = self.order.steps_per_epoch
        if self.cfg.shared_optimizer:
            return self.cfg.lr_at(self.views.version() / (spe * self.cfg.workers))
        if self.cfg.lr_clock == "leader":
            return self.cfg.lr_at(max(step, int(self.views.steps.max())) / spe)
        return self.cfg.lr_at(step / spe)

    def run(self) -> None:
        s, views, rank = self.s, self.views, self.s.rank
        model, opt = s.model, self.opt
        traps = views.traps
        model.train()
        step = 0
        for epoch in range(self.cfg.epochs):
            for idx in self.order.epoch(epoch):
                xb, yb = s.images[idx], s.labels[idx]
                if s.channel is not None:
                    s.channel.report(rank, yb)
                if traps[rank, READ]:
                    self.link.wait_for_grant(READ_TRAP, step, views.version())
                read_version = views.version() if self.track_staleness else 0
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                if traps[rank, WRITE]:
                    self.link.wait_for_grant(WRITE_TRAP, step, views.version())
                lr = self.lr(step)
                if s.defenses:
                    lr = self.review(read_version, lr)
                if lr > 0:
                    if lr != self.current_lr:
                        for group in opt.param_groups:
                            group["lr"] = lr
                        self.current_lr = lr
                    opt.step()
                    views.applied[rank] += 1
                step += 1
                views.steps[rank] = step
        views.done[rank] = 1
        self.link.finished(step, views.version())

    def review(self, read_version: int, lr: float) -> float:
        """Run the defenses in order; returns the learning rate to apply (0 = update dropped)."""
        views, rank = self.views, self.s.rank
        staleness = views.version() - read_version if self.track_staleness else -1
        views.max_staleness[rank] = max(views.max_staleness[rank], staleness)
        pending = PendingUpdate(rank, staleness, lambda at: prospective_update_norm(self.opt, at))
        for i, defense in enumerate(self.s.defenses):
            verdict = defense.review(pending, lr)
            if not verdict.accept:
                views.dropped[rank, i] += 1
                return 0.0
            lr *= verdict.lr_scale
        return lr
