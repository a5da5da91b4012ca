"""Cirrus-style training: serverless workers and a dedicated parameter-server process (not a function).

Each iteration a worker pulls the whole model from the server, computes its gradient and pushes it; the
server (see `parameter_server`) averages the n pushes and steps. The worker side keeps the emulated
per-function link: every exchange lasts at least bytes / `network_mb_s`, as the store clients do. The data
still comes from the store (the object store's role). Billing: workers as functions, the server as a VM
for the whole job (see `costing`). No re-invocation: a failed worker fails the run, and the driver stops
the server so the other workers stop waiting.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Client, Connection
from typing import Any

import numpy as np
import torch

from siegecraft.engines.serverless import context, data_blob
from siegecraft.engines.serverless.baselines.common import (
    BaselineRun,
    BaselineTask,
    GradientSource,
    WorkerReport,
    invoke_all,
    iteration_seconds,
    plan_for,
)
from siegecraft.engines.serverless.baselines.parameter_server import ParameterServer
from siegecraft.engines.serverless.layout import JobKeys, from_bytes, to_bytes
from siegecraft.engines.serverless.platform import FunctionPlatform
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import Store, connect


class ServerError(RuntimeError):
    """The parameter server refused a request or did not answer in time."""


class _Link:
    """A worker's capped link to the server: an exchange of b bytes takes at least b / bandwidth."""

    def __init__(self, conn: Connection, network_mb_s: float | None, wait_s: float) -> None:
        self.conn = conn
        self.network_mb_s = network_mb_s
        self.wait_s = wait_s
        self.sent = self.received = 0

    def _pace(self, nbytes: int, started: float) -> None:
        if self.network_mb_s:
            wait = nbytes / (self.network_mb_s * 1e6) - (time.perf_counter() - started)
            if wait > 0:
                time.sleep(wait)

    def _reply(self) -> None:
        if not self.conn.poll(self.wait_s):
            raise ServerError(f"no answer from the parameter server within {self.wait_s} s")
        status, message = self.conn.recv()
        if status != "ok":
            raise ServerError(message)

    def pull(self, it: int, role: int) -> np.ndarray:
        t0 = time.perf_counter()
        self.conn.send(("pull", it, role))
        self._reply()
        body = self.conn.recv_bytes()
        self.received += len(body)
        self._pace(len(body), t0)
        return from_bytes(body)

    def push(self, it: int, role: int, grad: np.ndarray) -> None:
        t0 = time.perf_counter()
        body = to_bytes(grad)
        self.conn.send(("push", it, role))
        self.conn.send_bytes(body)
        self._reply()
        self.sent += len(body)
        self._pace(len(body), t0)


def cirrus_worker(task: BaselineTask) -> dict[str, Any]:
    """Deployable entry point: run worker `task.role` of the plan against the parameter server."""
    job, plan, role = task.job, task.plan, task.role
    if task.server is None:
        raise ValueError("cirrus worker needs the parameter server's address")
    report = WorkerReport(role=role)
    start = time.perf_counter()
    network = context.current().network_mb_s
    with connect(job.store, network_mb_s=network) as store:
        grads = GradientSource(task, store)
    conn = Client(task.server, authkey=task.authkey)
    link = _Link(conn, network, 2 * task.sync_timeout_s)  # the server answers a pull within sync_timeout_s
    report.setup_s = time.perf_counter() - start
    try:
        for it in range(plan.start_it, plan.end_it):
            if report.iterations == 0:
                report.first_start = time.time()
            weights = link.pull(it, role)
            t0 = time.perf_counter()
            grad = grads(it, weights)
            report.compute_s += time.perf_counter() - t0
            link.push(it, role, grad)
            report.iterations += 1
            report.last_end = time.time()
    finally:
        conn.close()
    report.bytes_sent, report.bytes_received = link.sent, link.received
    return report.to_dict()


def run_cirrus(
    spec: JobSpec,
    store: Store,
    platform: FunctionPlatform,
    server: ParameterServer,
    config: Config,
    iterations: int,
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    init_weights: np.ndarray,
    sync_timeout_s: float = 60.0,
    timeout_s: float = 900.0,
) -> BaselineRun:
    """Run `iterations` SGD iterations against the running `server` from `init_weights` (zero momentum).

    The iteration's end is the server's: a worker's last push returns before the step it triggers, so the
    final weights are read once the server reports iteration `iterations`."""
    if server.address is None or not server.alive:
        raise ValueError("the parameter server is not running (use `with ParameterServer() as server:`)")
    data_blob.upload(store, JobKeys(spec.job), x, y)
    server.init(
        init_weights,
        np.zeros_like(init_weights),
        workers=config.workers,
        start_it=0,
        lr=spec.lr,
        momentum_coef=spec.momentum,
        weight_decay=spec.weight_decay,
    )
    plan = plan_for(config, iterations)
    tasks = [
        BaselineTask(spec, plan, role, sync_timeout_s, server.address, server.authkey)
        for role in range(config.workers)
    ]
    t0 = time.perf_counter()
    records, reports = invoke_all(
        platform,
        cirrus_worker,
        tasks,
        memory_mb=config.memory_mb,
        timeout_s=timeout_s,
        on_failure=server.stop,
    )
    wall = time.perf_counter() - t0
    deadline = time.monotonic() + sync_timeout_s
    state = server.state()
    while state.it < iterations and time.monotonic() < deadline:
        time.sleep(0.001)
        state = server.state()
    if state.it != iterations:
        raise ServerError(f"server is at iteration {state.it}, expected {iterations}")
    moved = (state.bytes_in + state.bytes_out) / max(iterations, 1)
    return BaselineRun(
        "cirrus",
        config,
        iterations,
        iteration_seconds(reports, iterations),
        wall,
        state.weights,
        records,
        reports,
        server_bytes_per_iter=moved,
    )
