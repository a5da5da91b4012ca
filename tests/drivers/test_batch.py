"""The shared batch layer: planning jobs, one batch directory, the executors, collecting results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from siegecraft.core.config import ConfigError
from siegecraft.drivers.batch import (
    InProcess,
    JobResult,
    ProcessPool,
    RayTasks,
    choose_executor,
    execute,
    make_batch_dir,
    plan_jobs,
)
from tests.conftest import tiny_raw


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _items() -> list[tuple[str, dict]]:
    return [(f"seed {s}", tiny_raw(name=f"b{s}", seed=s, fl={"rounds": 1, "clients": 3})) for s in (1, 2)]


def test_plan_validates_every_job_and_names_the_bad_one() -> None:
    jobs = plan_jobs(_items())
    assert [(j.label, j.experiment.name, j.experiment.seed) for j in jobs] == [("seed 1", "b1", 1), ("seed 2", "b2", 2)]
    assert jobs[0].raw["fl"] == {"rounds": 1, "clients": 3}
    bad = [*_items(), ("third", tiny_raw(fl={"rounds": 0}))]
    with pytest.raises(ConfigError, match=r"^third: fl\.rounds = 0: ") as err:
        plan_jobs(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="at least one run"):
        plan_jobs([])
    with pytest.raises(ConfigError, match=r"seed 1: --plugin 'no_such_plugin_mod': module not found"):
        plan_jobs(_items(), ["no_such_plugin_mod"])


def test_batch_dirs_are_fresh(tmp_path: Path) -> None:
    a, b = make_batch_dir(tmp_path, "x-sweep"), make_batch_dir(tmp_path, "x-sweep")
    assert a != b and a.is_dir() and b.is_dir() and a.name.startswith("x-sweep-") and not any(a.iterdir())


def test_executor_choice_and_bad_worker_counts() -> None:
    assert isinstance(choose_executor(), InProcess)
    pool = choose_executor(3, 2)
    assert isinstance(pool, ProcessPool) and pool.workers == 3 and pool.threads() == 2
    assert isinstance(choose_executor(use_ray=True), RayTasks)
    assert isinstance(choose_executor(address="auto"), RayTasks)
    for workers, threads in ((0, None), (2, 0)):
        with pytest.raises(ConfigError, match="must be at least 1"):
            choose_executor(workers, threads)


def _key(results: list[JobResult]) -> list[tuple[object, ...]]:
    return [(r.label, r.summary["name"], r.final["accuracy"], len(r.metrics)) for r in results]


def test_in_process_and_pool_run_the_same_jobs_and_collect_them(tmp_path: Path) -> None:
    jobs = plan_jobs(_items())
    seen: list[tuple[int, int, str]] = []
    here = execute(jobs, tmp_path / "here", InProcess(),
                   progress=lambda *, step, total, job: seen.append((step, total, job)))
    assert [s for s, _, _ in seen] == [1, 2] and {t for _, t, _ in seen} == {2}
    assert {j for _, _, j in seen} == {"seed 1", "seed 2"}
    pooled = execute(jobs, tmp_path / "pool", ProcessPool(2, 1))
    assert _key(pooled) == _key(here)  # each job is one deterministic run, wherever it ran
    for r in pooled:
        assert r.run_dir.parent == tmp_path / "pool" and r.wall_s > 0
        assert json.loads((r.run_dir / "summary.json").read_text()) == r.summary  # collected from the run
        assert r.metrics[0]["round"] == 1 and 0 <= r.scalars()["accuracy"] <= 1
        assert all(not isinstance(v, (list, dict)) for v in r.scalars().values())


def test_a_failing_run_fails_the_batch_naming_it(tmp_path: Path) -> None:
    """A dataset missing at run time: a ConfigError naming the job, also from a pool worker."""
    broken = tiny_raw(data={"dataset": "mnist", "data_dir": str(tmp_path / "empty")}, fl={"rounds": 1})
    jobs = plan_jobs([("fine", tiny_raw(fl={"rounds": 1})), ("no data", broken)])
    with pytest.raises(ConfigError, match="^no data: data.dataset = 'mnist': not found"):
        execute(jobs, tmp_path / "here", InProcess())
    with pytest.raises(ConfigError, match="^no data: data.dataset = 'mnist': not found"):  # the error pickles back
        execute(jobs[1:], tmp_path / "pool", ProcessPool(2, 1))


@pytest.mark.slow  # starts a private Ray instance (~20-40 s on 2 loaded cores)
def test_ray_tasks_match_the_in_process_run(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    jobs = plan_jobs(_items())
    here = execute(jobs, tmp_path / "here", InProcess())
    remote = execute(jobs, tmp_path / "ray", RayTasks(num_cpus=2))
    assert _key(remote) == _key(here)
