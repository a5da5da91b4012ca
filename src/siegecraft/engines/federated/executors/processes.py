"""The `processes` executor: worker processes holding the data, the partitions and one model replica.

Workers start once and stay resident across rounds. Each round the parent writes the global weights
once into a shared-memory buffer and queues client ids; a worker runs `ClientTrainer.train` (seeded by
`client_seed`, so its updates match inline) and sends back the flat update as a numpy array. Idle
clients cost only their partition indices: there is one model replica per worker, never per client.
"""

from __future__ import annotations

import queue
import traceback
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from siegecraft.core.models import flat_params
from siegecraft.engines.federated.client import ClientTrainer, ClientUpdate
from siegecraft.engines.federated.executors.base import EXECUTORS, Executor

POLL_S = 1.0  # how often a waiting parent checks that its workers are still alive


def _worker_loop(trainer: ClientTrainer, weights: torch.Tensor, tasks: Any, results: Any) -> None:
    """Train clients named on `tasks` against the shared `weights`; reply ("ok" | "error", ...) on `results`."""
    torch.set_num_threads(1)
    while True:
        task = tasks.get()
        if task is None:
            return
        rnd, client_id = task
        try:
            upd = trainer.train(client_id, rnd, weights.clone())
            results.put(("ok", client_id, upd.update.numpy(), upd.num_samples, upd.metrics))
        except Exception:  # noqa: BLE001 - any failure is reported to the parent, which raises it
            results.put(("error", client_id, traceback.format_exc(), 0, {}))


@EXECUTORS.register("processes")
class ProcessExecutor(Executor):
    """`workers` resident processes; the training set reaches them by fork (or shared memory under spawn)."""

    def __init__(self, workers: int = 2, *, start_method: str = "fork") -> None:
        if workers < 1:
            raise ValueError(f"processes executor: workers must be >= 1, got {workers}")
        self.workers = workers
        self.start_method = start_method
        self.procs: list[Any] = []

    def start(self, trainer: ClientTrainer) -> None:
        super().start(trainer)
        ctx = mp.get_context(self.start_method)
        self.weights = torch.zeros_like(flat_params(trainer.model)).share_memory_()
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        for _ in range(self.workers):
            proc = ctx.Process(target=_worker_loop, args=(trainer, self.weights, self.tasks, self.results), daemon=True)
            proc.start()
            self.procs.append(proc)

    def run(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> list[ClientUpdate]:
        if not self.procs:
            raise RuntimeError("processes executor: call start(trainer) before run()")
        self.weights.copy_(global_weights)  # no task of an earlier round is pending, so nobody reads it now
        for c in clients:
            self.tasks.put((rnd, c))
        by_id: dict[int, ClientUpdate] = {}
        while len(by_id) < len(clients):
            status, client_id, payload, num_samples, metrics = self._next_result()
            if status == "error":
                self.close()
                raise RuntimeError(f"processes executor: client {client_id} failed in round {rnd}:\n{payload}")
            by_id[client_id] = ClientUpdate(client_id, torch.from_numpy(np.asarray(payload)), num_samples, metrics)
        return [by_id[c] for c in clients]

    def _next_result(self) -> tuple[Any, ...]:
        """The next worker reply, raising instead of hanging when a worker has died."""
        while True:
            try:
                return self.results.get(timeout=POLL_S)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    codes = ", ".join(f"pid {p.pid} exit code {p.exitcode}" for p in dead)
                    self.close()
                    raise RuntimeError(f"processes executor: a worker died ({codes})") from None

    def close(self) -> None:
        """Ask each worker to stop, then terminate any that do not (only our own processes, by handle)."""
        if not self.procs:
            return
        for _ in self.procs:
            self.tasks.put(None)
        for proc in self.procs:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5.0)
        for q in (self.tasks, self.results):
            q.close()
            q.cancel_join_thread()
        self.procs = []
