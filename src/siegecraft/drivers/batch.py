"""Batches of runs: plan them, execute them (in process, on a process pool, or as Ray tasks), collect them.

The matrix and the sweep are both "many validated experiments, one directory": they plan a list of
`Job`s (a label, the raw config and its validated experiment; every job is validated before any work),
make one batch directory, hand the jobs to an `Executor` and get one `JobResult` per job back, in plan
order. A job travels as its raw config plus the plugin modules; whatever runs it (this process, a spawned
worker, a Ray worker on another node) loads those plugins and validates the config again before running,
so a user's plugin attack or model works everywhere. The result carries the run's summary and metrics,
read where the run happened, so nothing needs the driver to see the worker's disk.
"""

from __future__ import annotations

import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from siegecraft.core.config import ConfigError, ExperimentBase, FieldError
from siegecraft.core.results import Stopwatch
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated.executors.ray_cluster import connect_ray, import_ray

Progress = Callable[..., None]


@dataclass(frozen=True)
class Job:
    """One planned run: a label (used in messages and progress), its raw config and the validated experiment."""

    label: str
    raw: dict[str, Any]
    experiment: ExperimentBase


@dataclass(frozen=True)
class Task:
    """What an executor ships to wherever a job runs: plain data only, so it pickles anywhere."""

    index: int
    label: str
    raw: dict[str, Any]
    plugins: tuple[str, ...]
    runs_root: str
    threads: int  # torch intra-op threads to use; 0 leaves the process's setting alone


@dataclass
class JobResult:
    """One finished run, as collected from wherever it ran."""

    label: str
    run_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def final(self) -> dict[str, Any]:
        """The run's final metrics (`summary["final"]`)."""
        return self.summary.get("final", {})

    def scalars(self) -> dict[str, Any]:
        """The scalar entries of the final metrics (lists and tables left out), in their order."""
        return {k: v for k, v in self.final.items() if isinstance(v, (int, float, str, bool)) or v is None}


# -- plan ---------------------------------------------------------------------------------------------
def plan_jobs(items: Iterable[tuple[str, dict[str, Any]]], plugins: Iterable[str] = ()) -> list[Job]:
    """Validate every `(label, raw config)`; the first bad one fails them all, its label leading the message."""
    names = list(plugins)
    jobs = []
    for label, raw in items:
        try:
            jobs.append(Job(label, raw, build_experiment(raw, names)))
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}") from None
    if not jobs:
        raise ConfigError("a batch needs at least one run; nothing was planned")
    return jobs


def make_batch_dir(root: str | Path, name: str) -> Path:
    """A fresh `root/<name>-<time>/` (suffixed when that second is taken) holding a batch's runs and report."""
    base = Path(root) / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


# -- execute ------------------------------------------------------------------------------------------
def run_task(task: Task) -> JobResult:
    """Run one job here: load its plugins, validate its config, run it, read its summary and metrics back.

    A user mistake found while running (a ConfigError, a missing dataset) comes back as a ConfigError
    naming the job; any other error is re-raised as is when it can travel between processes, else as a
    RuntimeError carrying its type and message (an unpicklable error would break a process pool).
    """
    if task.threads > 0:
        torch.set_num_threads(task.threads)
    try:
        exp = build_experiment(task.raw, list(task.plugins))  # loads the built-ins and plugins first
        clock = Stopwatch()
        run = run_experiment(exp, out_root=task.runs_root)
    except (ConfigError, FieldError, FileNotFoundError) as err:
        raise ConfigError(f"{task.label}: {err}") from None
    except Exception as err:
        if _travels(err):
            raise
        raise RuntimeError(f"{task.label}: {type(err).__name__}: {err}") from None
    return JobResult(task.label, run.path, run.read_summary(), run.read_metrics(), clock())


def _travels(err: BaseException) -> bool:
    """Whether `err` survives pickling (custom constructors often do not)."""
    try:
        pickle.loads(pickle.dumps(err))
    except (pickle.PicklingError, pickle.UnpicklingError, TypeError, AttributeError):
        return False
    return True


Done = Callable[[int, JobResult], None]


class Executor(ABC):
    """Runs tasks somewhere; returns their results in task order and reports each one as it finishes."""

    @abstractmethod
    def run(self, tasks: list[Task], done: Done) -> list[JobResult]:
        """Run every task; call `done(index, result)` as each finishes."""

    def threads(self) -> int:
        """Torch threads each task should use (0: leave the setting alone)."""
        return 0


class InProcess(Executor):
    """One task after another in this process."""

    def run(self, tasks: list[Task], done: Done) -> list[JobResult]:
        results = []
        for task in tasks:
            results.append(run_task(task))
            done(task.index, results[-1])
        return results


class ProcessPool(Executor):
    """`workers` spawned processes on this machine, each task with `threads` torch threads."""

    def __init__(self, workers: int, threads: int | None = None) -> None:
        if workers < 1 or (threads is not None and threads < 1):
            raise ConfigError(f"workers = {workers}, worker_threads = {threads}: both must be at least 1")
        self.workers = workers
        self._threads = threads or max(1, (os.cpu_count() or 1) // workers)

    def threads(self) -> int:
        return self._threads

    def run(self, tasks: list[Task], done: Done) -> list[JobResult]:
        out: list[JobResult | None] = [None] * len(tasks)
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_task, task): task.index for task in tasks}
            try:
                for fut in as_completed(futures):
                    i = futures[fut]
                    out[i] = fut.result()
                    done(i, out[i])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # a failed run stops the batch: start no more
                raise
        return [r for r in out if r is not None]


class RayTasks(Executor):
    """One Ray task (one CPU, one torch thread) per job, on a private local Ray or the cluster at `address`.

    With a remote cluster every node needs siegecraft and the plugins installed, and the output folder
    must be storage every node can write.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus

    def threads(self) -> int:
        return 1

    def run(self, tasks: list[Task], done: Done) -> list[JobResult]:
        ray = import_ray()
        owns = connect_ray(self.address, self.num_cpus)
        try:
            remote = ray.remote(num_cpus=1)(run_task)
            refs = {remote.remote(task): task.index for task in tasks}
            out: list[JobResult | None] = [None] * len(tasks)
            pending = list(refs)
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                for ref in finished:
                    i = refs[ref]
                    out[i] = ray.get(ref)
                    done(i, out[i])
            return [r for r in out if r is not None]
        finally:
            if owns:
                ray.shutdown()


def choose_executor(
    workers: int = 1, threads: int | None = None, *, use_ray: bool = False, address: str | None = None
) -> Executor:
    """Ray tasks when asked (or when an `address` is given), a process pool for `workers` > 1, else in process."""
    if workers < 1 or (threads is not None and threads < 1):
        raise ConfigError(f"workers = {workers}, worker_threads = {threads}: both must be at least 1")
    if use_ray or address is not None:
        return RayTasks(address, num_cpus=workers if workers > 1 and address is None else None)
    if workers > 1:
        return ProcessPool(workers, threads)
    return InProcess()


def execute(
    jobs: list[Job],
    runs_root: str | Path,
    executor: Executor,
    *,
    plugins: Iterable[str] = (),
    progress: Progress | None = None,
) -> list[JobResult]:
    """Run every job into `runs_root` with `executor`; results in plan order, `progress(step, total, job)` as each ends."""
    names = tuple(plugins)
    tasks = [Task(i, job.label, job.raw, names, str(runs_root), executor.threads()) for i, job in enumerate(jobs)]
    finished = 0

    def done(index: int, result: JobResult) -> None:
        nonlocal finished
        finished += 1
        if progress:
            progress(step=finished, total=len(tasks), job=result.label)

    results = executor.run(tasks, done)
    if len(results) != len(tasks):
        raise RuntimeError(f"{len(tasks) - len(results)} of {len(tasks)} runs returned no result")
    return results
