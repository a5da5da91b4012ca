"""Refusing the impossible: the prior model's feasibility verdict before anything is spent, and `on_miss`
when a refit finds the target out of reach during the run."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siegecraft.core.config import FieldError, to_toml
from siegecraft.drivers.cli import EXIT_STOPPED, app
from siegecraft.engines.serverless import loop
from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.observations import Measurement
from siegecraft.engines.serverless.perf_model import PerformanceModel
from siegecraft.engines.serverless.planner import PRIOR_TOLERANCE, BayesianPlanner, SearchSpace
from siegecraft.engines.serverless.runner import check_target, target_outcome, train_serverless
from siegecraft.engines.serverless.simulated_platform import GroundTruth, SimulatedExecutor
from siegecraft.engines.serverless.specs import Config
from tests.engines.serverless.conftest import tiny_data

SPACE = SearchSpace((1, 2, 4), (1024, 1769, 3538), (16, 32, 64))
PARAMS, SAMPLES, EPOCHS = 50_000, 4_096, 2


def _planner(**target: float) -> BayesianPlanner:
    model = PerformanceModel(num_params=PARAMS, samples_per_epoch=SAMPLES)
    return BayesianPlanner(SPACE, model, trials=10, **target)


def _prior_replay(planner: BayesianPlanner) -> tuple[float, float]:
    """Fastest finish and cheapest cost by the prior, replaying the probes as the loop runs them."""
    model, offset, t, c, last = planner.model, 0, 0.0, 0.0, None
    for cfg in SPACE.profile_configs():
        its = min(3, (SAMPLES - offset) // (cfg.workers * cfg.batch_size))
        p = model.predict(cfg, its * cfg.workers * cfg.batch_size, cold=True)
        t, c, offset, last = t + p.time_s, c + p.cost_usd, offset + its * cfg.workers * cfg.batch_size, cfg
    preds = [model.predict(g, EPOCHS * SAMPLES - offset, cold=g != last) for g in SPACE.grid()]
    return t + min(p.time_s for p in preds), c + min(p.cost_usd for p in preds)


def test_feasibility_is_the_prior_models_fastest_and_cheapest_over_the_grid() -> None:
    fastest, cheapest = _prior_replay(_planner(deadline_s=1.0))
    deadline = _planner(deadline_s=fastest).feasibility(epochs=EPOCHS, profile_iterations=3)
    assert deadline.predicted == pytest.approx(fastest) and deadline.reachable
    assert deadline.bound == pytest.approx(fastest / PRIOR_TOLERANCE) and deadline.profiling > 0
    budget = _planner(budget_usd=cheapest).feasibility(epochs=EPOCHS, profile_iterations=3)
    assert budget.predicted == pytest.approx(cheapest) and budget.reachable
    assert cheapest / PRIOR_TOLERANCE < budget.bound < cheapest  # request fees are not divided
    assert not _planner(deadline_s=0.9 * fastest / PRIOR_TOLERANCE).feasibility(
        epochs=EPOCHS, profile_iterations=3).reachable  # fmt: skip
    assert not _planner(budget_usd=0.9 * budget.bound).feasibility(epochs=EPOCHS, profile_iterations=3).reachable


@pytest.mark.parametrize("key", ["deadline_s", "budget_usd"])
def test_the_suggested_minimum_is_accepted(key: str) -> None:
    refused = _planner(**{key: 1e-9}).feasibility(epochs=EPOCHS, profile_iterations=3)
    assert not refused.reachable
    least = float(re.search(rf"allowed: a {key} of at least ([0-9.e+-]+),", refused.explain()).group(1))  # type: ignore[union-attr]
    assert least >= refused.bound
    assert _planner(**{key: least}).feasibility(epochs=EPOCHS, profile_iterations=3).reachable


def test_feasibility_uses_the_prior_even_after_measurements() -> None:
    planner = _planner(deadline_s=5.0)
    before = planner.feasibility(epochs=EPOCHS, profile_iterations=3)
    cfg = Config(1, 1024, 16)
    planner.observe(Measurement(cfg, "profile", 3, 48, 100.0, 1.0, 33.0, 30.0, 3.0, 1.0))  # a very slow probe
    assert planner.feasibility(epochs=EPOCHS, profile_iterations=3) == before


def test_the_planner_never_picks_a_global_batch_larger_than_an_epoch() -> None:
    space = SearchSpace((1, 8), (1769,), (64,))  # 8 x 64 = 512 > 256 samples: an epoch with no iteration
    model = PerformanceModel(num_params=PARAMS, samples_per_epoch=256)
    planner = BayesianPlanner(space, model, deadline_s=1e-3, trials=10)  # nothing feasible: the fastest fallback
    assert planner.grid() == [Config(1, 1769, 64)]
    step = planner.decide(elapsed_s=0.0, spent_usd=0.0, remaining_samples=512, current=None)
    assert step.config == Config(1, 1769, 64) and not step.feasible and not step.reachable
    assert planner.feasibility(epochs=2, profile_iterations=3).config == Config(1, 1769, 64)


@pytest.fixture(scope="module")
def counted_platform() -> Iterator[EmulatedPlatform]:
    """A platform that is never started by a refused job (its counters must stay at zero)."""
    with EmulatedPlatform(preload=("torch",), concurrency=4) as p:
        yield p


@pytest.mark.parametrize("target", [{"deadline_s": 0.1}, {"budget_usd": 1e-6}], ids=["deadline", "budget"])
def test_an_unreachable_target_is_refused_with_zero_invocations_and_zero_spend(
    target: dict[str, float], counted_platform: EmulatedPlatform
) -> None:
    cfg = ServerlessConfig(**target, epochs=1, emulated={"concurrency": 4})
    records: list[dict] = []
    with pytest.raises(FieldError) as err:
        train_serverless(cfg, tiny_data(256), model="cnn", model_options={"width": 4, "hidden": 16},
                         platform=counted_platform, on_record=records.append)  # fmt: skip
    key = next(iter(target))
    assert str(err.value).startswith(f"serverless.{key} = {target[key]!r}: unreachable: the prior performance model")
    assert "on_infeasible = 'best-effort'" in str(err.value) and "\n" not in str(err.value)
    assert counted_platform.stats.invocations == 0 and counted_platform.stats.cold_starts == 0
    assert records == []  # nothing ran, so nothing was billed


def test_best_effort_skips_the_refusal_and_a_reachable_target_passes() -> None:
    data = tiny_data(256)
    assert check_target(ServerlessConfig(deadline_s=0.1, on_infeasible="best-effort"), num_params=PARAMS,
                        samples=len(data.y)).reachable is False  # fmt: skip
    verdict = check_target(ServerlessConfig(deadline_s=600), num_params=PARAMS, samples=len(data.y))
    assert verdict is not None and verdict.reachable and verdict.predicted < 600
    assert check_target(ServerlessConfig(), num_params=PARAMS, samples=len(data.y)) is None  # fixed mode


def test_on_miss_defaults_follow_on_infeasible() -> None:
    assert ServerlessConfig(deadline_s=10).miss_policy == "abort"
    assert ServerlessConfig(deadline_s=10, on_infeasible="best-effort").miss_policy == "continue"
    assert ServerlessConfig(deadline_s=10, on_infeasible="best-effort", on_miss="abort").miss_policy == "abort"


TRUTH = GroundTruth(
    num_params=421_642, samples_per_epoch=20_000, compute_fixed_s=0.004, compute_per_sample_s=0.0009,
    parallel_efficiency=0.6, request_latency_s=0.0004, network_mb_s=75, cold_start_s=1.0, warm_start_s=0.2,
    noise_cv=0.1,
)  # fmt: skip


class SlowingExecutor(SimulatedExecutor):
    """The simulator, except that every plan after the first training epoch runs `factor` times slower (a
    platform that degrades mid-run); counts the plans it was asked to run."""

    def __init__(self, factor: float) -> None:
        super().__init__(TRUTH, seed=0)
        self.factor, self.plans, self.trained = factor, 0, 0

    def execute(self, config: Config, *, epoch: int, epoch_offset: int, iterations: int, phase: str) -> Measurement:
        self.plans += 1
        m = super().execute(config, epoch=epoch, epoch_offset=epoch_offset, iterations=iterations, phase=phase)
        slow = self.factor if self.trained >= 1 else 1.0
        self.trained += phase == "train"
        keys = ("wall_s", "startup_s", "iter_s", "compute_s", "comm_s", "cost_usd")
        return dataclasses.replace(m, **{k: getattr(m, k) * slow for k in keys})


def _drive(on_miss: str) -> tuple[dict, SlowingExecutor, float]:
    space = SearchSpace((1, 2, 4, 8), (1024, 1769, 3538), (32, 64, 128))
    fastest = min(TRUTH.expected_run(c, 4 * TRUTH.samples_per_epoch)[0] for c in space.grid())
    deadline = 4 * fastest
    planner = BayesianPlanner(
        space, PerformanceModel(num_params=TRUTH.num_params, samples_per_epoch=TRUTH.samples_per_epoch),
        deadline_s=deadline, trials=20,
    )  # fmt: skip
    executor = SlowingExecutor(factor=30.0)
    return loop.drive(executor, planner, epochs=4, on_miss=on_miss), executor, deadline


def test_on_miss_abort_stops_invocations_once_the_target_is_out_of_reach() -> None:
    state, executor, deadline = _drive("abort")
    train = [r for r in state["records"] if r["phase"] == "train"]
    probes = len(state["records"]) - len(train)
    assert state["aborted"] and 1 <= len(train) < 4
    assert executor.plans == probes + len(train)  # nothing was run after the decision that found the miss
    missed = state["target_missed"]
    assert missed["epoch"] == len(train) and "out of reach" in missed["reason"]
    assert state["elapsed_s"] > missed["elapsed_s"] - 1e-9
    cfg = ServerlessConfig(deadline_s=deadline, epochs=4)
    outcome = target_outcome(cfg, state)
    assert outcome["target_met"] is False and outcome["stopped_early"] is True
    assert outcome["target_missed"].startswith(f"stopped before epoch {len(train) + 1} of 4 (on_miss = 'abort')")
    assert loop.drive(executor, planner_for_resume(deadline), epochs=4, state=state) is state  # a resumed driver stops too
    assert executor.plans == probes + len(train)


def planner_for_resume(deadline: float) -> BayesianPlanner:
    space = SearchSpace((1, 2, 4, 8), (1024, 1769, 3538), (32, 64, 128))
    model = PerformanceModel(num_params=TRUTH.num_params, samples_per_epoch=TRUTH.samples_per_epoch)
    return BayesianPlanner(space, model, deadline_s=deadline, trials=5)


def test_on_miss_continue_trains_to_the_end_and_the_summary_says_the_target_was_missed() -> None:
    state, executor, deadline = _drive("continue")
    assert not state["aborted"] and state["epoch"] == 4 and state["target_missed"] is not None
    assert executor.plans == len(state["records"]) and sum(r["phase"] == "train" for r in state["records"]) == 4
    outcome = target_outcome(ServerlessConfig(deadline_s=deadline, epochs=4, on_miss="continue"), state)
    assert outcome["target_met"] is False and outcome["stopped_early"] is False
    assert outcome["target_missed"].startswith("finished at") and "predicted at epoch" in outcome["target_missed"]
    met = target_outcome(ServerlessConfig(deadline_s=10 * state["elapsed_s"], epochs=4),
                         {**state, "target_missed": None})  # fmt: skip
    assert met == {"target_met": True, "target_missed": None, "stopped_early": False, "on_miss": "abort"}


def test_the_cli_exits_3_and_keeps_the_run_directory_when_the_job_stops(tmp_path: Path) -> None:
    raw = {
        "name": "tiny-stop", "seed": 0, "topology": "serverless",
        "data": {"dataset": "digits", "train_limit": 256, "test_limit": 64},
        "model": {"name": "cnn", "options": {"width": 4, "hidden": 16}},
        "train": {"epochs": 2},
        "serverless": {"deadline_s": 0.01, "on_infeasible": "best-effort", "on_miss": "abort",
                       "emulated": {"concurrency": 4},
                       "planner": {"workers": [1, 2], "memory_mb": [1769], "batch_size": [64], "trials": 5}},
        "output": {"report": True},
    }  # fmt: skip
    cfg = tmp_path / "stop.toml"
    cfg.write_text(to_toml(raw))
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs"), "-q"])
    assert result.exit_code == EXIT_STOPPED == 3, (result.output, result.exception)
    (run,) = (tmp_path / "runs").iterdir()
    final = json.loads((run / "summary.json").read_text())["final"]
    assert final["stopped_early"] and not final["target_met"] and "deadline_s = 0.01" in final["target_missed"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(r["phase"] == "profile" for r in lines)  # only the probes ran
    assert final["invocations"] == sum(r["workers"] for r in lines)
    assert (run / "report.html").stat().st_size > 0
