"""The scheduler study is reproducible: the loop's virtual decision clock, the simulator's noise-free schedule,
and the whole study (benchmarks/serverless_scheduler.py) on a tiny grid, run twice with one seed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from siegecraft.engines.serverless import loop
from siegecraft.engines.serverless.perf_model import PerformanceModel
from siegecraft.engines.serverless.planner import BayesianPlanner, SearchSpace
from siegecraft.engines.serverless.simulated_platform import GroundTruth, SimulatedExecutor
from siegecraft.engines.serverless.specs import Config

ROOT = Path(__file__).resolve().parents[3]
TRUTH = GroundTruth(
    num_params=421_642, samples_per_epoch=20_000, compute_fixed_s=0.004, compute_per_sample_s=0.0009,
    parallel_efficiency=0.6, request_latency_s=0.0004, network_mb_s=75, cold_start_s=1.0, warm_start_s=0.2,
    noise_cv=0.1,
)  # fmt: skip
TINY = SearchSpace((1, 2), (1024, 1769), (32, 64))


def _drive(decision_s: float | None) -> dict:
    planner = BayesianPlanner(TINY, PerformanceModel(num_params=TRUTH.num_params, samples_per_epoch=20_000),
                              deadline_s=1e4, trials=10, seed=3)  # fmt: skip
    return loop.drive(SimulatedExecutor(TRUTH, seed=3), planner, epochs=2, decision_s=decision_s)


def test_the_virtual_clock_charges_a_fixed_time_per_decision_and_keeps_the_measured_one() -> None:
    state = _drive(0.5)
    train = [r for r in state["records"] if r["phase"] == "train"]
    assert state["elapsed_s"] == pytest.approx(sum(r["time_s"] for r in state["records"]) + 0.5 * len(train))
    assert all(r["decision_s"] == 0.5 for r in train) and state["decision_wall_s"] > 0
    again = _drive(0.5)
    assert (again["elapsed_s"], again["spent_usd"]) == (state["elapsed_s"], state["spent_usd"])


class OneChoice(BayesianPlanner):
    """Profiles like a planner over `TINY` but can only choose `config` (what the replay assumes it keeps)."""

    def __init__(self, config: Config) -> None:
        space = SearchSpace((config.workers,), (config.memory_mb,), (config.batch_size,))
        model = PerformanceModel(num_params=TRUTH.num_params, samples_per_epoch=20_000)
        super().__init__(space, model, deadline_s=1e4, trials=5)

    def profile_configs(self) -> list[Config]:
        return TINY.profile_configs()


def test_the_noise_free_schedule_replays_the_probes_and_is_what_the_loop_measures_on_average() -> None:
    grid = TINY.grid()
    fast, cheap = TRUTH.expected_schedule(TINY.profile_configs(), grid, epochs=2, profile_iterations=3)
    no_probe = [TRUTH.expected_run(c, 2 * 20_000, plans=2) for c in grid]
    assert fast[1] > min(t for t, _ in no_probe) and cheap[2] > min(c for _, c in no_probe)  # probes cost
    for cfg, expected_s, expected_usd in (fast, cheap):
        runs = [loop.drive(SimulatedExecutor(TRUTH, seed=s), OneChoice(cfg), epochs=2, decision_s=0.0)
                for s in range(3)]  # fmt: skip
        assert sum(r["elapsed_s"] for r in runs) / 3 == pytest.approx(expected_s, rel=0.05)
        assert sum(r["spent_usd"] for r in runs) / 3 == pytest.approx(expected_usd, rel=0.05)


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serverless_scheduler", ROOT / "benchmarks" / "serverless_scheduler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_gives_the_same_figures_twice_and_refused_targets_spend_nothing() -> None:
    bench = _benchmark()
    doc = json.loads((ROOT / "benchmarks" / "results" / "serverless_calibration.json").read_text())
    runs = [bench.study(doc, 1, space=TINY, jobs=2, per_band=1, epochs=2, trials=8) for _ in range(2)]
    first, second = runs
    assert first["rerun_identical"] and second["rerun_identical"]
    assert bench.figures(first["feasible"]) == bench.figures(second["feasible"])
    for key in ("deadline_met", "jobs", "cost_vs_oracle", "infeasible_refused", "infeasible_spend_usd"):
        assert first[key] == second[key]
    assert first["jobs"] == 2 and first["infeasible_jobs"] == 4
    assert first["refused_spend_usd"] == 0.0 and first["refused_plans"] == 0
    refused = [r for r in first["infeasible"]["rows"] if r["refused"]]
    assert refused and all(r["plans"] == 0 and r["cost_usd"] == 0.0 for r in refused)
    assert all("calibrated prior" in r["reason"] for r in refused)
