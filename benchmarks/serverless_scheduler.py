"""SMLT scheduler study: deadlines met, cost against the oracle, impossible targets refused, all reproducible.

Run: .venv/bin/python benchmarks/serverless_scheduler.py [--recalibrate] [--seed N]
(writes benchmarks/results/serverless_scheduler.json; --recalibrate first re-measures the platform)

- Calibration (measured, only with --recalibrate): the calibration of benchmarks/serverless.py (section 2:
  gradient time per batch and tier, store latency and throughput, cold and warm start, all on real
  invocations) repeated `REPEATS` times; the median is the platform, the repeats give its measured spread.
  Written to benchmarks/results/serverless_calibration.json (committed: every study runs from that file).
- Platform profile: the calibrated prior of the performance model built from the calibration, its tolerance
  from the spread of the repeats (`platform_profile.py`); written to
  benchmarks/results/serverless_platform_profile.json, usable as `[serverless] platform_profile`.
- Feasible study (modelled): seeded deadline jobs on `SimulatedExecutor` (see benchmarks/serverless.py,
  section 3), each first checked by the same preflight the runner uses; run twice, `rerun_identical` says
  whether both runs gave the same figures.
- Infeasible study (modelled): deadlines below the fastest and budgets below the cheapest finish that the
  scheduler can reach, each submitted to the preflight; a target that slips past is run (on_miss = abort)
  and its spend counted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serverless  # the sibling benchmark (calibration, simulated platform)

from siegecraft.core.config import FieldError
from siegecraft.engines.serverless import loop
from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.perf_model import Coefficients, PerformanceModel
from siegecraft.engines.serverless.planner import FixedPlanner, SearchSpace
from siegecraft.engines.serverless.platform_profile import SPREAD_KEYS, PlatformProfile
from siegecraft.engines.serverless.runner import bayesian_planner, check_target, platform_prior
from siegecraft.engines.serverless.simulated_platform import GroundTruth, SimulatedExecutor
from siegecraft.engines.serverless.specs import Config

RESULTS = Path(__file__).resolve().parent / "results"
CALIBRATION = RESULTS / "serverless_calibration.json"
PROFILE = RESULTS / "serverless_platform_profile.json"
OUT = RESULTS / "serverless_scheduler.json"
REPEATS = 5
SAMPLES = 60_000  # Fashion-MNIST's training set
SPACE = SearchSpace((1, 2, 4, 8, 16), (512, 1024, 1769, 3538, 7076), (16, 32, 64, 128))
DECISION_S = 0.1
"""Seconds the virtual clock charges per planner decision (assumed; the measured wall time is reported as
`decision_wall_s_median` next to it). Measuring it would make every run's figures differ."""
FAR, NEAR = (0.1, 0.5), (0.5, 1.0)
"""Infeasible targets: ratios to the true fastest finish (or cheapest cost), drawn log-uniformly in each band."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- calibration (measured) -------------------------------------------------------------------------------
def _median_of(values: list[Any]) -> Any:
    """Element-wise median of equally shaped JSON values (nested dicts of numbers)."""
    if isinstance(values[0], dict):
        return {k: _median_of([v[k] for v in values]) for k in values[0]}
    return float(statistics.median(values))


def _quiet(max_load: float, patience_s: float = 600.0) -> float:
    """Wait (up to `patience_s`) until the 1-minute load average is below `max_load`; returns it. Other work
    on a shared machine slows the measured invocations, and the spread of the repeats would show that load."""
    waited = 0.0
    while os.getloadavg()[0] >= max_load and waited < patience_s:
        time.sleep(5.0)
        waited += 5.0
    return os.getloadavg()[0]


def recalibrate(repeats: int = REPEATS, max_load: float = 2.0) -> dict[str, Any]:
    """Run benchmarks/serverless.py's calibration (real emulated invocations) `repeats` times, each when the
    machine is quiet (`_quiet`)."""
    from siegecraft.engines.serverless.redis_server import start_redis, stop_redis

    redis = start_redis()
    try:
        runs, load = [], []
        for i in range(repeats):
            load.append(_quiet(max_load))
            runs.append(serverless.calibrate(redis))
            log(f"calibration {i + 1}/{repeats} done (1-minute load average {load[-1]:.1f} before it)")
    finally:
        stop_redis(redis)
    return {
        "calibration": _median_of(runs),
        "repeats": runs,
        "load_average_before_each": load,
        "network_mb_s": serverless.NETWORK_MB_S,
        "num_params": serverless.cnn_params(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python benchmarks/serverless_scheduler.py --recalibrate",
    }


# -- the simulated platform and its profile ---------------------------------------------------------------
def platform_of(cal: dict[str, Any]) -> GroundTruth:
    """The simulated platform a calibration describes (benchmarks/serverless.py's `ground_truth`)."""
    return serverless.ground_truth(cal, SAMPLES)


def coefficients_of(truth: GroundTruth) -> tuple[Coefficients, float]:
    """The performance model's coefficients for a simulated platform: compute and thread efficiency as
    calibrated, communication = 6 store round trips + 2 polls + bytes over the link, cold and warm start.
    Waiting for the slowest worker is the straggler term, with the calibrated spread of one worker's gradient
    time. It leaves out what the model has no term for: the single worker's 2 fewer round trips and no
    polling (pessimistic there)."""
    coef = Coefficients(
        compute_fixed_s=truth.compute_fixed_s, compute_per_sample_s=truth.compute_per_sample_s,
        comm_fixed_s=6 * truth.request_latency_s + 2 * truth.poll_s, comm_per_byte_s=1 / (truth.network_mb_s * 1e6),
        comm_per_peer_s=0.0, startup_cold_s=truth.cold_start_s, startup_warm_s=truth.warm_start_s, cost_factor=1.0,
        straggler_cv=truth.noise_cv,
    )  # fmt: skip
    return coef, truth.parallel_efficiency


def simulated_profile(doc: dict[str, Any]) -> PlatformProfile:
    """The calibrated prior of the simulated platform: coefficients from the median calibration, each
    coefficient's spread the relative standard deviation of its value over the calibration repeats."""
    center = coefficients_of(platform_of(doc["calibration"]))
    repeats = [coefficients_of(platform_of(r)) for r in doc["repeats"]]

    def values(c: tuple[Coefficients, float]) -> dict[str, float]:
        return {**asdict(c[0]), "parallel_efficiency": c[1]}

    mid, rows = values(center), [values(r) for r in repeats]
    spread = {
        k: float(np.std([r[k] for r in rows], ddof=1) / mid[k]) if mid[k] > 0 else 0.0 for k in SPREAD_KEYS
    }
    return PlatformProfile(
        center[0], center[1], spread, int(doc["num_params"]), platform="simulated (SimulatedExecutor)",
        model="cnn", source=f"{doc['command']} ({doc['measured_at']})",
        spread_from=f"relative standard deviation over {len(rows)} calibration repeats; comm_per_byte_s (the "
        f"assumed {doc['network_mb_s']} MB/s link), comm_per_peer_s and cost_factor (the price table) are stated, "
        "not measured: spread 0",
    )  # fmt: skip


def _config(
    path: str, epochs: int, space: SearchSpace, trials: int, safety: float = 0.05, **target: Any
) -> ServerlessConfig:
    return ServerlessConfig(
        epochs=epochs, platform_profile=path, **target,
        planner={"workers": list(space.workers), "memory_mb": list(space.memory_mb), "safety": safety,
                 "batch_size": list(space.batch_size), "trials": trials, "profile_iterations": 3},
    )  # fmt: skip


class CountingExecutor(SimulatedExecutor):
    """The simulator, counting the plans it was asked to run (a refused job must leave it at zero)."""

    def __init__(self, truth: GroundTruth, *, seed: int) -> None:
        super().__init__(truth, seed=seed)
        self.plans = 0

    def execute(self, config: Config, **kw: Any) -> Any:
        self.plans += 1
        return super().execute(config, **kw)


def submit(cfg: ServerlessConfig, truth: GroundTruth, seed: int, on_miss: str | None = None) -> dict[str, Any]:
    """What the real runner does with a job, on the simulator: preflight (the runner's `check_target`), then,
    if accepted, profile and train with its planner on the virtual clock, with `on_miss` (default: the
    config's, as the runner). `target_missed`: a decision found the target out of reach (abort stops there)."""
    executor = CountingExecutor(truth, seed=seed)
    try:
        verdict = check_target(cfg, num_params=truth.num_params, samples=truth.samples_per_epoch)
    except FieldError as err:
        return {"refused": True, "reason": str(err), "plans": executor.plans, "elapsed_s": 0.0, "cost_usd": 0.0}
    assert verdict is not None
    base = PerformanceModel(num_params=truth.num_params, samples_per_epoch=truth.samples_per_epoch,
                            prices=cfg.prices, sync=cfg.sync)  # fmt: skip
    profile = platform_prior(cfg, truth.num_params)
    model = profile.models(base)[0] if profile is not None else base
    planner = bayesian_planner(cfg, model, seed)
    st = loop.drive(executor, planner, epochs=cfg.epochs, profile_iterations=cfg.planner.profile_iterations,
                    on_miss=on_miss or cfg.miss_policy, decision_s=DECISION_S)  # fmt: skip
    return {"refused": False, "bound": verdict.bound, "predicted": verdict.predicted, "plans": executor.plans,
            "elapsed_s": st["elapsed_s"], "cost_usd": st["spent_usd"], "aborted": bool(st["aborted"]),
            "completed": st["epoch"] >= cfg.epochs, "target_missed": st["target_missed"] is not None,
            "decision_wall_s": st.get("decision_wall_s", 0.0),
            "configs": [Config(r["workers"], r["memory_mb"], r["batch_size"]).label() for r in st["records"]]}  # fmt: skip


# -- feasible study ---------------------------------------------------------------------------------------
def feasible_study(
    truth: GroundTruth, path: str, *, space: SearchSpace, jobs: int, epochs: int, trials: int, seed: int,
    safety: float = 0.05,
) -> dict[str, Any]:
    """Deadlines drawn log-uniformly between the fastest finish the scheduler can reach (noise-free, its probes
    if any, `GroundTruth.expected_schedule`) and the slowest configuration's, each job submitted like a real
    one but with on_miss = "continue" (as benchmarks/serverless.py's study), so `deadline_met` counts every
    job's actual finish; `would_stop_under_on_miss_abort` counts the jobs the runner's default would have
    stopped. Oracle: exhaustive search over the grid on the noise-free expectation, paying no profiling."""
    samples = epochs * truth.samples_per_epoch
    expected = {c: truth.expected_run(c, samples, plans=epochs) for c in space.grid()}
    reach = margin(truth, path, space=space, epochs=epochs, trials=trials)
    fastest, slowest = reach["fastest_s"], max(t for t, _ in expected.values())
    rng = np.random.default_rng(2024 + seed)
    baselines = {"min_workers": Config(min(space.workers), 1769, 64), "max_workers": Config(max(space.workers), 1769, 64)}
    rows = []
    for job in range(jobs):
        deadline = float(math.exp(rng.uniform(math.log(fastest), math.log(slowest))))
        feasible = {c: v for c, v in expected.items() if v[0] <= deadline}
        oracle = min(feasible, key=lambda c: feasible[c][1])
        cfg = _config(path, epochs, space, trials, safety, deadline_s=deadline)
        out = submit(cfg, truth, seed + job, on_miss="continue")
        row = {"job": job, "deadline_s": deadline, **out, "deadline_met": not out["refused"] and out["completed"]
               and out["elapsed_s"] <= deadline, "oracle": {"config": oracle.label(), "time_s": feasible[oracle][0],
               "cost_usd": feasible[oracle][1]}, "cost_vs_oracle": out["cost_usd"] / feasible[oracle][1]}  # fmt: skip
        for name, fixed in baselines.items():
            model = PerformanceModel(num_params=truth.num_params, samples_per_epoch=truth.samples_per_epoch)
            st = loop.drive(SimulatedExecutor(truth, seed=seed + job), FixedPlanner(fixed, model), epochs=epochs,
                            decision_s=DECISION_S)  # fmt: skip
            row[name] = {"config": fixed.label(), "cost_usd": st["spent_usd"], "elapsed_s": st["elapsed_s"],
                         "deadline_met": st["elapsed_s"] <= deadline}  # fmt: skip
        rows.append(row)
    ran = [r for r in rows if not r["refused"] and r["completed"]]
    return {
        "deadline_met": sum(r["deadline_met"] for r in rows),
        "jobs": len(rows),
        "refused": sum(r["refused"] for r in rows),
        "would_stop_under_on_miss_abort": sum(bool(r.get("target_missed")) for r in rows),
        "cost_vs_oracle": statistics.median(r["cost_vs_oracle"] for r in ran) if ran else None,
        "cost_vs_oracle_max": max((r["cost_vs_oracle"] for r in ran), default=None),
        "below_both_baselines": sum(r["cost_usd"] < min(r[b]["cost_usd"] for b in baselines) for r in ran),
        "slowest_s": slowest,
        "platform": reach,
        "rows": rows,
    }


def figures(study: dict[str, Any]) -> dict[str, Any]:
    """What two runs with one seed must agree on (every job's time and cost included)."""
    keep = ("deadline_s", "refused", "elapsed_s", "cost_usd", "deadline_met", "target_missed", "configs")
    return {"deadline_met": study["deadline_met"], "jobs": study["jobs"], "cost_vs_oracle": study["cost_vs_oracle"],
            "rows": [{k: r.get(k) for k in keep} for r in study["rows"]]}  # fmt: skip


# -- infeasible study -------------------------------------------------------------------------------------
def margin(truth: GroundTruth, path: str, *, space: SearchSpace, epochs: int, trials: int) -> dict[str, Any]:
    """How the preflight's bound and prediction relate to a platform's true fastest finish and cheapest total:
    targets below `*_refused_below_ratio` x the true value are refused, those above are accepted."""
    probes = bayesian_planner(_config(path, epochs, space, trials, deadline_s=1.0), PerformanceModel(
        num_params=truth.num_params, samples_per_epoch=truth.samples_per_epoch), 0).profile_configs()  # the runner's
    fast, cheap = truth.expected_schedule(probes, space.grid(), epochs=epochs, profile_iterations=3,
                                          decision_s=DECISION_S)  # fmt: skip
    no_probe = min(truth.expected_run(c, epochs * truth.samples_per_epoch, plans=epochs)[0] for c in space.grid())
    out: dict[str, Any] = {"fastest_s": fast[1], "fastest_config": fast[0].label(), "fastest_no_profiling_s": no_probe,
                           "cheapest_usd": cheap[2], "cheapest_config": cheap[0].label()}  # fmt: skip
    for mode, true, key in (("deadline", fast[1], "deadline_s"), ("budget", cheap[2], "budget_usd")):
        cfg = _config(path, epochs, space, trials, on_infeasible="best-effort", **{key: true})
        verdict = check_target(cfg, num_params=truth.num_params, samples=truth.samples_per_epoch)
        assert verdict is not None
        out[f"{mode}_refused_below_ratio"] = verdict.bound / true
        out[f"{mode}_prior_over_true"] = verdict.predicted / true
    return out


def infeasible_study(
    doc: dict[str, Any], path: str, *, space: SearchSpace, per_band: int, epochs: int, trials: int, seed: int
) -> dict[str, Any]:
    """Targets below what the scheduler can reach, submitted like real jobs. Each job's platform is the one a
    single calibration repeat describes (job i: repeat i mod R), while the preflight uses the profile (their
    median and spread): the platform on the day differs from the calibrated prior as much as repeats do.
    `true` is that platform's noise-free fastest finish (deadlines) or cheapest total (budgets) of a job that
    profiles first (`GroundTruth.expected_schedule`); targets are `ratio` x `true`, the ratio log-uniform in
    `FAR` and in `NEAR` (`per_band` each)."""
    rng = np.random.default_rng(7 + seed)
    platforms = [platform_of(r) for r in doc["repeats"]]
    margins = [{"repeat": i, **margin(truth, path, space=space, epochs=epochs, trials=trials)}
               for i, truth in enumerate(platforms)]  # fmt: skip
    rows: list[dict[str, Any]] = []
    for mode, key in (("deadline", "deadline_s"), ("budget", "budget_usd")):
        for band, (lo, hi) in (("far", FAR), ("near", NEAR)):
            for _ in range(per_band):
                job = len(rows)
                repeat = job % len(platforms)
                truth, m = platforms[repeat], margins[repeat]
                true = m["fastest_s"] if mode == "deadline" else m["cheapest_usd"]
                ratio = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
                out = submit(_config(path, epochs, space, trials, **{key: ratio * true}), truth, seed + job)
                rows.append({"job": job, "mode": mode, "band": band, "repeat": repeat, "ratio": ratio,
                             "target": ratio * true, "true": true, **out})  # fmt: skip
    refused = [r for r in rows if r["refused"]]
    return {
        "infeasible_jobs": len(rows),
        "infeasible_refused": len(refused),
        "infeasible_spend_usd": sum(r["cost_usd"] for r in rows),
        "refused_spend_usd": sum(r["cost_usd"] for r in refused),
        "slipped_but_stopped_before_any_plan": sum(not r["refused"] and r["plans"] == 0 for r in rows),
        "refused_plans": sum(r["plans"] for r in refused),
        "by_band": {f"{mode}_{band}": f"{sum(r['refused'] for r in rows if (r['mode'], r['band']) == (mode, band))}"
                    f"/{sum((r['mode'], r['band']) == (mode, band) for r in rows)}"
                    for mode in ("deadline", "budget") for band in ("far", "near")},
        "refused_below_ratio": {mode: [min(m[f"{mode}_refused_below_ratio"] for m in margins),
                                       max(m[f"{mode}_refused_below_ratio"] for m in margins)]
                                for mode in ("deadline", "budget")},
        "platforms": margins,
        "rows": rows,
    }


# -- the whole measurement ---------------------------------------------------------------------------------
def study(
    doc: dict[str, Any], seed: int, *, space: SearchSpace = SPACE, jobs: int = 10, per_band: int = 5,
    epochs: int = 5, trials: int = 40,
) -> dict[str, Any]:
    """Both studies from a calibration document (the feasible one twice); see the module docstring."""
    profile = simulated_profile(doc)
    truth = platform_of(doc["calibration"])
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "profile.json")
        profile.save(path)
        kw = {"space": space, "jobs": jobs, "epochs": epochs, "trials": trials, "seed": seed}
        first = feasible_study(truth, path, **kw)
        second = feasible_study(truth, path, **kw)
        margins = {f"{x:g}": feasible_study(truth, path, **kw, safety=x) for x in (0.1, 0.15)}
        bad = infeasible_study(doc, path, space=space, per_band=per_band, epochs=epochs, trials=trials, seed=seed)
    walls = [r["decision_wall_s"] for r in first["rows"] if not r["refused"]]
    return {
        "deadline_met": first["deadline_met"],
        "jobs": first["jobs"],
        "cost_vs_oracle": first["cost_vs_oracle"],
        "infeasible_jobs": bad["infeasible_jobs"],
        "infeasible_refused": bad["infeasible_refused"],
        "infeasible_spend_usd": bad["infeasible_spend_usd"],
        "rerun_identical": figures(first) == figures(second),
        "feasible_refused": first["refused"],
        "would_stop_under_on_miss_abort": first["would_stop_under_on_miss_abort"],
        "cost_vs_oracle_max": first["cost_vs_oracle_max"],
        "planner_safety": 0.05,
        "other_safety": {k: {"deadline_met": v["deadline_met"], "cost_vs_oracle": v["cost_vs_oracle"]}
                         for k, v in margins.items()},
        "infeasible_by_band": bad["by_band"],
        "refused_below_ratio": bad["refused_below_ratio"],
        "refused_spend_usd": bad["refused_spend_usd"],
        "slipped_but_stopped_before_any_plan": bad["slipped_but_stopped_before_any_plan"],
        "refused_plans": bad["refused_plans"],
        "decision_s_charged": DECISION_S,
        "decision_wall_s_total_median": statistics.median(walls) if walls else None,
        "profile": profile.to_dict(),
        "ground_truth": truth.to_dict(),
        "feasible": first,
        "infeasible": bad,
    }


def measure(calibration: dict[str, Any], seed: int) -> dict[str, Any]:
    """The scheduler study (10 feasible deadline jobs run twice, 20 deadline and 20 budget infeasible targets)
    from a calibration document (benchmarks/results/serverless_calibration.json)."""
    return study(calibration, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recalibrate", action="store_true", help="re-measure the platform first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.recalibrate:
        CALIBRATION.write_text(json.dumps(recalibrate(), indent=2) + "\n")
        log(f"wrote {CALIBRATION}")
    doc = json.loads(CALIBRATION.read_text())
    simulated_profile(doc).save(PROFILE)
    started = time.perf_counter()
    result = measure(doc, args.seed)
    result["wall_s"] = time.perf_counter() - started
    result["command"] = f"python benchmarks/serverless_scheduler.py --seed {args.seed}"
    result["calibration_file"] = str(CALIBRATION.relative_to(RESULTS.parent.parent))
    OUT.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {OUT} and {PROFILE}")
    head = [k for k in result if not isinstance(result[k], dict) or k in ("infeasible_by_band", "refused_below_ratio")]
    print(json.dumps({k: result[k] for k in head}, indent=2, default=str))


if __name__ == "__main__":
    main()
