"""The Ray executor against inline, on one Ray instance shared by the module (start-up is slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from siegecraft.core.results import RunDir
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated import Federation
from siegecraft.engines.federated.executors import RayExecutor, connect_ray
from tests.conftest import tiny_raw

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """A private local Ray instance for the module; executors must join it and leave it running."""
    started = connect_ray(None, num_cpus=2)
    yield
    if started:
        ray.shutdown()


def test_ray_gives_the_same_aggregated_weights_as_inline_after_two_rounds(tmp_path: Path, ray_instance: None) -> None:
    weights = {}
    for executor in ("inline", "ray"):
        raw = tiny_raw(fl={"rounds": 2}, runtime={"executor": executor, "workers": 2})
        run = run_experiment(build_experiment(raw), out_root=tmp_path / executor)
        weights[executor] = torch.load(run.path / "final_weights.pt")
    assert torch.equal(weights["inline"], weights["ray"])
    assert ray.is_initialized()  # the executor joined the running instance, so it must not shut it down


@pytest.mark.slow  # starts two more actors (~20 s on 2 loaded cores)
def test_ray_actors_return_ordered_updates_and_are_released(tmp_path: Path, ray_instance: None) -> None:
    fed = Federation(build_experiment(tiny_raw(fl={"clients": 5})), RunDir.create(tmp_path, "fed"))
    ex = RayExecutor(workers=2)
    ex.start(fed.trainer)
    try:
        got = ex.run(1, fed.global_weights, [3, 1, 4])
        assert [u.client_id for u in got] == [3, 1, 4]
        expected = fed.trainer.train(4, 1, fed.global_weights)
        assert torch.equal(got[2].update, expected.update) and got[2].num_samples == expected.num_samples
        with pytest.raises(ray.exceptions.RayTaskError, match="IndexError"):
            ex.run(1, fed.global_weights, [42])
    finally:
        ex.close()
    assert not ex.actors and not ex.owns_ray and ray.is_initialized()


def test_an_actor_killed_mid_round_has_its_client_retried_with_the_same_update(
    tmp_path: Path, ray_instance: None
) -> None:
    fed = Federation(build_experiment(tiny_raw(fl={"clients": 5})), RunDir.create(tmp_path, "fed"))
    ex = RayExecutor(workers=1, retries=1)
    ex.start(fed.trainer)
    ex.on_dispatch = lambda e: ray.kill(e.actors[0]) if e.restarts == 0 else None  # kill the busy actor once
    w = fed.global_weights
    try:
        got = ex.run(1, w, [3, 1])
        assert ex.restarts == 1
        ex.on_dispatch = lambda e: ray.kill(e.actors[0])  # now every actor dies: retries run out
        with pytest.raises(RuntimeError, match=r"client 3 lost its actor 2 times in round 2.*retries = 1"):
            ex.run(2, w, [3])
    finally:
        ex.close()
    assert [u.client_id for u in got] == [3, 1]
    for u in got:  # the same updates as a fault-free inline run with the same seed
        expected = fed.trainer.train(u.client_id, 1, w)
        assert torch.equal(u.update, expected.update) and u.num_samples == expected.num_samples
