"""The `processes` executor: worker processes holding the data, the partitions and one model replica.

Workers start once and stay resident across rounds. Each round the parent writes the global weights
once into a shared-memory buffer and hands each idle worker one client id over the worker's own pipe;
a worker runs `ClientTrainer.train` (seeded by `client_seed`, so its updates match inline) and sends
back the flat update as a numpy array. Idle clients cost only their partition indices: there is one
model replica per worker, never per client.

Fault tolerance: the parent knows which client each worker holds (one pipe per worker, no shared
queue whose lock a killed worker could leave taken). A worker that dies has its client retried on a
freshly started worker, at most `retries` times per client; the update is the same as a fault-free
run's because it depends only on (seed, round, client). A client that raises is a bug, not a fault:
the run fails at once with the worker's traceback.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from siegecraft.core.models import flat_params
from siegecraft.engines.federated.client import ClientTrainer, ClientUpdate
from siegecraft.engines.federated.executors.base import EXECUTORS, Executor

PARENT_CHECK_S = 0.5  # how often an idle worker checks that its parent still lives
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a no-op."""
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return


def _worker_loop(trainer: ClientTrainer, weights: torch.Tensor, conn: Any) -> None:
    """Train the clients named on `conn` against the shared `weights`; reply ("ok" | "error", ...) on it.

    Exits when the parent is gone (SIGKILLed server): a forked worker holds inherited copies of the parent's
    pipe ends, so it would never see EOF; it checks every PARENT_CHECK_S whether it has been re-parented, and
    on Linux the kernel also kills it then (a worker blocked sending a large update never gets to check).
    """
    torch.set_num_threads(1)
    parent = os.getppid()
    _die_with_parent()
    while True:
        if not conn.poll(PARENT_CHECK_S):
            if os.getppid() != parent:
                return
            continue
        task = conn.recv()
        if task is None:
            return
        rnd, client_id = task
        try:
            upd = trainer.train(client_id, rnd, weights.clone())
            conn.send(("ok", client_id, upd.update.numpy(), upd.num_samples, upd.metrics))
        except Exception:  # noqa: BLE001 - any failure is reported to the parent, which raises it
            conn.send(("error", client_id, traceback.format_exc(), 0, {}))


@dataclass
class _Worker:
    proc: Any
    conn: Any
    client: int | None = None  # the client it is training now


@EXECUTORS.register("processes")
class ProcessExecutor(Executor):
    """`workers` resident processes; the training set reaches them by fork (or shared memory under spawn)."""

    def __init__(self, workers: int = 2, *, start_method: str = "fork", retries: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"processes executor: workers must be >= 1, got {workers}")
        if retries < 0:
            raise ValueError(f"processes executor: retries must be >= 0, got {retries}")
        self.workers = workers
        self.start_method = start_method
        self.retries = retries
        self.pool: list[_Worker] = []
        self.restarts = 0  # workers started to replace dead ones, over the whole run
        self.on_dispatch: Callable[[ProcessExecutor], None] | None = None  # test hook: after clients go out

    @property
    def procs(self) -> list[Any]:
        return [w.proc for w in self.pool]

    def start(self, trainer: ClientTrainer) -> None:
        super().start(trainer)
        self.ctx = mp.get_context(self.start_method)
        self.weights = torch.zeros_like(flat_params(trainer.model)).share_memory_()
        self.pool = [self._spawn() for _ in range(self.workers)]

    def _spawn(self) -> _Worker:
        parent_end, child_end = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_loop, args=(self.trainer, self.weights, child_end), daemon=True)
        proc.start()
        child_end.close()
        return _Worker(proc, parent_end)

    def run(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> list[ClientUpdate]:
        if not self.pool:
            raise RuntimeError("processes executor: call start(trainer) before run()")
        self.weights.copy_(global_weights)  # no worker holds a client of an earlier round, so nobody reads it now
        todo, lost = deque(clients), dict.fromkeys(clients, 0)
        by_id: dict[int, ClientUpdate] = {}
        while len(by_id) < len(clients):
            self._dispatch(rnd, todo)
            for i in self._ready():
                reply = self._receive(self.pool[i])
                if reply is None:
                    self._replace(i, rnd, todo, lost)
                    continue
                if not reply:
                    continue
                status, client_id, payload, num_samples, metrics = reply
                if status == "error":
                    self.close()
                    raise RuntimeError(f"processes executor: client {client_id} failed in round {rnd}:\n{payload}")
                by_id[client_id] = ClientUpdate(client_id, torch.from_numpy(np.asarray(payload)), num_samples, metrics)
        return [by_id[c] for c in clients]

    def _dispatch(self, rnd: int, todo: deque[int]) -> None:
        sent = False
        for w in self.pool:
            if todo and w.client is None:
                w.client = todo.popleft()
                try:
                    w.conn.send((rnd, w.client))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker is dead; _ready sees its sentinel and retries the client
                sent = True
        if sent and self.on_dispatch is not None:
            self.on_dispatch(self)

    def _ready(self) -> list[int]:
        """Indices of busy workers that replied or died (blocks until there is at least one)."""
        busy = [i for i, w in enumerate(self.pool) if w.client is not None]
        handles = {w.conn: i for i, w in enumerate(self.pool) if w.client is not None}
        handles.update({self.pool[i].proc.sentinel: i for i in busy})
        return sorted({handles[h] for h in wait(list(handles))})

    @staticmethod
    def _receive(w: _Worker) -> tuple[Any, ...] | None:
        """The worker's reply; None when it died without one; () when it has not replied yet."""
        try:
            if w.conn.poll():
                reply = w.conn.recv()
                w.client = None
                return reply
        except (EOFError, OSError):
            w.proc.join(timeout=5.0)  # its end of the pipe closed: it is exiting
            return None
        return () if w.proc.is_alive() else None

    def _replace(self, i: int, rnd: int, todo: deque[int], lost: dict[int, int]) -> None:
        """Retry the dead worker's client on a fresh worker, or fail once the client has used its retries."""
        dead = self.pool[i]
        dead.proc.join(timeout=5.0)
        client = dead.client
        dead.conn.close()
        assert client is not None
        lost[client] += 1
        if lost[client] > self.retries:
            self.close()
            raise RuntimeError(
                f"processes executor: client {client} lost its worker {lost[client]} times in round {rnd} "
                f"(last: pid {dead.proc.pid}, exit code {dead.proc.exitcode}); giving up after "
                f"retries = {self.retries}")
        todo.appendleft(client)
        self.pool[i] = self._spawn()
        self.restarts += 1

    def close(self) -> None:
        """Ask each worker to stop, then terminate any that do not (only our own processes, by handle)."""
        if not self.pool:
            return
        for w in self.pool:
            try:
                w.conn.send(None)
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
        for w in self.pool:
            w.proc.join(timeout=5.0)
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(timeout=5.0)
            w.conn.close()
        self.pool = []
