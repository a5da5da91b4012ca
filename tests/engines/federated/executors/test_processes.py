"""The processes executor: same updates as inline, resident workers, failures raised instead of hanging."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from siegecraft.core.results import RunDir
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated import Federation
from siegecraft.engines.federated.executors import EXECUTORS, ProcessExecutor
from tests.conftest import tiny_raw


def _final_weights(tmp_path: Path, executor: str, **fl: int) -> tuple[torch.Tensor, list[dict]]:
    raw = tiny_raw(fl={"rounds": 2, **fl}, runtime={"executor": executor, "workers": 2})
    run = run_experiment(build_experiment(raw), out_root=tmp_path / executor)
    metrics = [{k: v for k, v in r.items() if k != "round_s"} for r in run.read_metrics()]
    return torch.load(run.path / "final_weights.pt"), metrics


@pytest.fixture
def federation(tmp_path: Path) -> Federation:
    return Federation(build_experiment(tiny_raw(fl={"clients": 6})), RunDir.create(tmp_path, "fed"))


def test_registered_executors() -> None:
    assert {"inline", "processes", "ray"} <= set(EXECUTORS.names())


def test_processes_give_the_same_aggregated_weights_as_inline_after_two_rounds(tmp_path: Path) -> None:
    inline, inline_metrics = _final_weights(tmp_path, "inline")
    procs, procs_metrics = _final_weights(tmp_path, "processes")
    assert torch.equal(inline, procs)
    assert procs_metrics == inline_metrics


def test_updates_come_back_in_the_requested_order_from_resident_workers(federation: Federation) -> None:
    ex = ProcessExecutor(workers=2)
    ex.start(federation.trainer)
    try:
        pids = [p.pid for p in ex.procs]
        w = federation.global_weights
        first = ex.run(1, w, [4, 0, 2])
        assert [u.client_id for u in first] == [4, 0, 2]
        for u in first:
            expected = federation.trainer.train(u.client_id, 1, w)
            assert torch.equal(u.update, expected.update) and u.num_samples == expected.num_samples
        second = ex.run(2, w + first[0].update, [1, 4])
        assert [u.client_id for u in second] == [1, 4]
        assert not torch.equal(second[1].update, first[0].update)  # new round, new weights, new seed
        assert [p.pid for p in ex.procs] == pids and all(p.is_alive() for p in ex.procs)
    finally:
        procs = list(ex.procs)
        ex.close()
    assert procs and not any(p.is_alive() for p in procs)


def test_a_failing_client_raises_with_the_worker_traceback(federation: Federation) -> None:
    ex = ProcessExecutor(workers=1)
    ex.start(federation.trainer)
    procs = list(ex.procs)
    with pytest.raises(RuntimeError, match=r"client 99 failed in round 1(.|\n)*IndexError"):
        ex.run(1, federation.global_weights, [99])
    assert not ex.procs and not any(p.is_alive() for p in procs)


def _kill_first_busy_worker(ex: ProcessExecutor) -> None:
    """Test hook: SIGKILL (by pid, our own child) the first worker holding a client."""
    busy = next(w for w in ex.pool if w.client is not None)
    os.kill(busy.proc.pid, signal.SIGKILL)


def test_a_worker_killed_mid_round_has_its_client_retried_with_the_same_update(federation: Federation) -> None:
    ex = ProcessExecutor(workers=2)
    ex.start(federation.trainer)
    kills: list[int] = []

    def kill_once(executor: ProcessExecutor) -> None:
        if not kills:
            kills.append(next(w.client for w in executor.pool if w.client is not None))
            _kill_first_busy_worker(executor)

    ex.on_dispatch = kill_once
    try:
        w = federation.global_weights
        got = ex.run(1, w, [4, 0, 2, 5])
        assert ex.restarts == 1 and kills and all(p.is_alive() for p in ex.procs)
    finally:
        ex.close()
    assert [u.client_id for u in got] == [4, 0, 2, 5]
    for u in got:  # the same updates as a fault-free inline run with the same seed
        expected = federation.trainer.train(u.client_id, 1, w)
        assert torch.equal(u.update, expected.update) and u.num_samples == expected.num_samples


def test_a_worker_dead_before_the_round_is_replaced(federation: Federation) -> None:
    ex = ProcessExecutor(workers=1)
    ex.start(federation.trainer)
    ex.procs[0].kill()  # our own child, by its handle
    ex.procs[0].join(timeout=10)
    try:
        got = ex.run(1, federation.global_weights, [0])
    finally:
        ex.close()
    assert ex.restarts == 1
    assert torch.equal(got[0].update, federation.trainer.train(0, 1, federation.global_weights).update)


def test_retries_are_bounded_and_the_error_says_so(federation: Federation) -> None:
    ex = ProcessExecutor(workers=1, retries=1)
    ex.start(federation.trainer)
    ex.on_dispatch = _kill_first_busy_worker  # every worker dies: the client can never finish
    with pytest.raises(RuntimeError, match=r"client 3 lost its worker 2 times in round 1.*retries = 1"):
        ex.run(1, federation.global_weights, [3])
    assert ex.restarts == 1 and not ex.pool


def test_a_failing_client_is_not_retried(federation: Federation) -> None:
    ex = ProcessExecutor(workers=1)
    ex.start(federation.trainer)
    with pytest.raises(RuntimeError, match="client 99 failed"):
        ex.run(1, federation.global_weights, [0, 99])
    assert ex.restarts == 0


def test_run_before_start_and_bad_worker_count_are_errors() -> None:
    with pytest.raises(RuntimeError, match="start"):
        ProcessExecutor().run(1, torch.zeros(3), [0])
    with pytest.raises(ValueError, match="workers"):
        ProcessExecutor(workers=0)
    with pytest.raises(ValueError, match="retries"):
        ProcessExecutor(retries=-1)
