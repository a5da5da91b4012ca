"""The epoch loop shared by real jobs and the planner study: profile, decide, run, record, repeat.

It only needs a `PlanExecutor` (run so many iterations with a configuration, return a `Measurement`) and
a planner, so the same code drives a `TrainingJob` on a function platform and the calibrated
simulator of `simulate.py`. Its progress is a JSON-able dict the caller persists after every step (the
store, for real jobs), so a restarted driver continues, re-running an interrupted plan if there was one.

When a decision finds the target out of reach (`PlanStep.reachable` is False), the first such finding is kept
in `state["target_missed"]`; with `on_miss = "abort"` the loop stops there (no further invocations) and sets
`state["aborted"]`, with `"continue"` it trains on with the planner's fallback choice.

Money and time of a killed driver: with `billed` (the job's durable ledger total, earlier drivers included),
`spent_usd` is that total after every plan, so the invocations a killed driver paid for but never recorded
count once, in the next record. With `resumed_until` (when the last invocation of an earlier driver was
billed), the interrupted plan's time is its time up to then plus this driver's time to finish it.

A decision's own time (refit and Bayesian study on the driver) counts towards `elapsed_s`: the measured wall
time for real jobs; with `decision_s` set (the simulator's virtual clock), that many seconds per decision
instead, so a simulated study gives the same figures on every run (the measured total is kept in
`state["decision_wall_s"]`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

from siegecraft.engines.serverless.observations import Measurement
from siegecraft.engines.serverless.planner import PlanStep
from siegecraft.engines.serverless.specs import Config

log = logging.getLogger(__name__)

class PlanExecutor(Protocol):
    """Runs iterations of the job with one configuration."""

    samples_per_epoch: int

    def execute(
        self, config: Config, *, epoch: int, epoch_offset: int, iterations: int, phase: str
    ) -> Measurement:
        """Run `iterations` iterations from sample `epoch_offset` of `epoch`; return what it cost."""
        ...


class Planner(Protocol):
    mode: str
    measurements: list[Measurement]

    def profile_configs(self) -> list[Config]: ...

    def observe(self, measurement: Measurement) -> None: ...

    def decide(
        self, *, elapsed_s: float, spent_usd: float, remaining_samples: int, current: Config | None
    ) -> PlanStep: ...


def new_state() -> dict[str, Any]:
    """Progress of a job that has not started."""
    return {
        "epoch": 0,
        "offset": 0,
        "elapsed_s": 0.0,
        "spent_usd": 0.0,
        "profile_index": 0,
        "current": None,
        "records": [],
        "measurements": [],
        "inflight": None,
        "target_missed": None,
        "aborted": False,
    }


def restore(planner: Planner, state: dict[str, Any]) -> None:
    """Give a fresh planner the measurements a previous driver made."""
    planner.measurements[:] = [Measurement.from_dict(m) for m in state["measurements"]]


def drive(
    executor: PlanExecutor,
    planner: Planner,
    *,
    epochs: int,
    state: dict[str, Any] | None = None,
    profile_iterations: int = 3,
    save: Callable[[dict[str, Any]], None] | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    limits: dict[str, float | None] | None = None,
    on_miss: str = "continue",
    billed: Callable[[], float] | None = None,
    resumed_until: float | None = None,
    decision_s: float | None = None,
) -> dict[str, Any]:
    """Run (or continue) the whole job; returns the final state with one record per plan.

    `on_miss`: "abort" stops before the next plan once the planner finds the target out of reach,
    "continue" records that and goes on. `billed`, `resumed_until` and `decision_s`: see the module docstring.
    """
    if on_miss not in ("abort", "continue"):
        raise ValueError(f"on_miss must be 'abort' or 'continue', got {on_miss!r}")
    st = state if state is not None else new_state()
    if st.get("aborted"):
        return st
    if st["measurements"] and not planner.measurements:
        restore(planner, st)
    n_samples = executor.samples_per_epoch
    persist = save or (lambda _: None)

    def run(
        config: Config, iterations: int, phase: str, decision: PlanStep | None, decision_s: float,
        resumed: bool = False, carried_s: float | None = None,
    ) -> None:
        if not resumed:  # a new plan (a resumed one keeps its start time)
            st["inflight"] = {"config": asdict(config), "iterations": iterations, "phase": phase,
                              "decision": decision.to_dict() if decision else None, "decision_s": decision_s,
                              "started_at": time.time()}  # fmt: skip
            persist(st)
        t0 = time.perf_counter()
        m = executor.execute(
            config, epoch=st["epoch"], epoch_offset=st["offset"], iterations=iterations, phase=phase
        )
        wall_s = m.wall_s if carried_s is None else carried_s + time.perf_counter() - t0
        planner.observe(m)
        st["measurements"].append(m.to_dict())
        spent_before = st["spent_usd"]
        st["elapsed_s"] += wall_s + decision_s
        st["spent_usd"] = billed() if billed is not None else spent_before + m.cost_usd
        st["offset"] += m.samples
        st["current"] = asdict(config)
        record = _record(st, m, st["inflight"]["decision"], decision_s, limits or {})
        record.update(time_s=wall_s, cost_usd=st["spent_usd"] - spent_before if billed is not None else m.cost_usd)
        if phase == "train":
            t0 = time.perf_counter()
            record.update(evaluate() if evaluate else {})
            record["eval_s"] = time.perf_counter() - t0
            st["epoch"] += 1
            st["offset"] = 0
        st["records"].append(record)
        st["inflight"] = None
        persist(st)
        if on_record:
            on_record(record)

    if st["inflight"] is not None:  # a previous driver died during this plan: finish it first
        flight = st["inflight"]
        decision = _decision_from(flight["decision"]) if flight["decision"] else None
        started = flight.get("started_at")
        carried = None
        if started is not None and resumed_until is not None and resumed_until >= started:
            carried = resumed_until - started  # the earlier driver's time on this plan, up to its last bill
        run(Config(**flight["config"]), flight["iterations"], flight["phase"], decision, flight["decision_s"],
            resumed=True, carried_s=carried)
    probes = planner.profile_configs()
    while st["epoch"] == 0 and st["profile_index"] < len(probes):
        cfg = probes[st["profile_index"]]
        st["profile_index"] += 1
        iterations = min(profile_iterations, (n_samples - st["offset"]) // (cfg.workers * cfg.batch_size))
        if iterations > 0:
            run(cfg, iterations, "profile", None, 0.0)
    while st["epoch"] < epochs:
        t0 = time.perf_counter()
        current = Config(**st["current"]) if st["current"] else None
        remaining = epochs * n_samples - (st["epoch"] * n_samples + st["offset"])
        decision = planner.decide(
            elapsed_s=st["elapsed_s"], spent_usd=st["spent_usd"], remaining_samples=remaining, current=current
        )
        measured_s = time.perf_counter() - t0
        st["decision_wall_s"] = st.get("decision_wall_s", 0.0) + measured_s
        charged_s = measured_s if decision_s is None else decision_s
        if not decision.reachable:
            if st.get("target_missed") is None:
                st["target_missed"] = {"epoch": st["epoch"], "elapsed_s": st["elapsed_s"],
                                       "spent_usd": st["spent_usd"], "reason": decision.missed}  # fmt: skip
            if on_miss == "abort":
                st["aborted"] = True
                st["elapsed_s"] += charged_s
                persist(st)
                log.warning("stopping (on_miss = 'abort'): %s", decision.missed)
                break
        cfg = decision.config
        iterations = (n_samples - st["offset"]) // (cfg.workers * cfg.batch_size)
        if iterations == 0:
            st["epoch"] += 1
            st["offset"] = 0
            continue
        run(cfg, iterations, "train", decision, charged_s)
    return st


def _decision_from(raw: dict[str, Any]) -> PlanStep:
    return PlanStep(
        Config(**raw["config"]), raw["mode"], raw["reason"], raw["projected_finish_s"], raw["projected_cost_usd"],
        raw["feasible"], None, raw.get("trials", 0), raw.get("reachable", True), raw.get("missed", ""),
    )  # fmt: skip


def _record(
    st: dict[str, Any],
    m: Measurement,
    decision: dict[str, Any] | None,
    decision_s: float,
    limits: dict[str, Any],
) -> dict[str, Any]:
    """One metrics line: configuration, time, cost, projections and the reason for the choice."""
    return {
        "epoch": st["epoch"],
        "phase": m.phase,
        "workers": m.config.workers,
        "memory_mb": m.config.memory_mb,
        "batch_size": m.config.batch_size,
        "iterations": m.iterations,
        "samples": m.samples,
        "time_s": m.wall_s,
        "cost_usd": m.cost_usd,
        "elapsed_s": st["elapsed_s"],
        "spent_usd": st["spent_usd"],
        "projected_finish_s": decision["projected_finish_s"] if decision else None,
        "projected_cost_usd": decision["projected_cost_usd"] if decision else None,
        "feasible": decision["feasible"] if decision else None,
        "reason": decision["reason"] if decision else "profiling probe",
        "deadline_s": limits.get("deadline_s"),
        "budget_usd": limits.get("budget_usd"),
        "decision_s": decision_s,
        "startup_s": m.startup_s,
        "iter_s": m.iter_s,
        "compute_s": m.compute_s,
        "comm_s": m.comm_s,
        "bytes_per_worker": m.bytes_per_worker,
        "cold_starts": m.cold_starts,
        "failures": m.failures,
        "retries": m.retries,
        "train_loss": m.train_loss,
    }
