"""Planners that pick (workers, memory, batch size) for the next epoch.

`BayesianPlanner` (SMLT): after every epoch it refits the `PerformanceModel` to everything measured so
far, then runs a constrained Bayesian optimisation (optuna TPE with constraints) over the search space:
- deadline mode: minimise projected total cost subject to projected finish <= deadline;
- budget mode:   minimise projected finish time subject to projected total cost <= budget.
Projections include what was already spent (profiling included) and the start-up of a configuration
change. Configurations measured earlier are enqueued first, so the study always knows the real points.
If nothing is feasible it says so and falls back to the fastest (deadline) or cheapest (budget) choice.

`FixedPlanner` always answers the configured point (no deadline, no budget).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from siegecraft.engines.serverless.observations import Measurement
from siegecraft.engines.serverless.perf_model import PerformanceModel, Prediction
from siegecraft.engines.serverless.specs import Config

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSpace:
    """The grid the planner chooses from."""

    workers: tuple[int, ...]
    memory_mb: tuple[int, ...]
    batch_size: tuple[int, ...]

    def grid(self) -> list[Config]:
        return [Config(*p) for p in itertools.product(self.workers, self.memory_mb, self.batch_size)]

    def profile_configs(self) -> list[Config]:
        """Cheap probes that separate the model's terms (a cold start is billed per worker, so the many-worker
        probe uses the smallest tier): few workers near one vCPU with the largest batch, the most workers at
        the smallest tier with the smallest batch, and one worker on the smallest multi-vCPU tier (thread
        efficiency), when the space has one."""
        w, m, b = sorted(self.workers), sorted(self.memory_mb), sorted(self.batch_size)
        few = next((x for x in w if x >= 2), w[0])
        one_vcpu = min(m, key=lambda x: abs(x - 1769))
        probes = [Config(few, one_vcpu, b[-1]), Config(w[-1], m[0], b[0])]
        multi = [x for x in m if x >= 2 * 1769]
        if multi:
            probes.append(Config(w[0], multi[0], b[-1]))
        unique: list[Config] = []
        for p in probes:
            if p not in unique:
                unique.append(p)
        return unique


@dataclass
class PlanStep:
    """The configuration for the next epoch, what the model expects of it, and why it was chosen."""

    config: Config
    mode: str
    reason: str
    projected_finish_s: float
    projected_cost_usd: float
    feasible: bool
    prediction: Prediction | None = None
    trials: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = asdict(self.config)
        return out


class FixedPlanner:
    """Always the same configuration; projections come from the (fitted) model for reporting only."""

    mode = "fixed"

    def __init__(self, config: Config, model: PerformanceModel) -> None:
        self.config = config
        self.model = model
        self.measurements: list[Measurement] = []

    def profile_configs(self) -> list[Config]:
        return []

    def observe(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)

    def decide(
        self, *, elapsed_s: float, spent_usd: float, remaining_samples: int, current: Config | None
    ) -> PlanStep:
        self.model.fit(self.measurements)
        pred = self.model.predict(self.config, remaining_samples, cold=current != self.config)
        return PlanStep(
            self.config,
            self.mode,
            "fixed configuration",
            elapsed_s + pred.time_s,
            spent_usd + pred.cost_usd,
            True,
            pred,
        )


class BayesianPlanner:
    """Deadline- or budget-aware configuration choice by constrained TPE over a fitted performance model."""

    def __init__(
        self,
        space: SearchSpace,
        model: PerformanceModel,
        *,
        deadline_s: float | None = None,
        budget_usd: float | None = None,
        trials: int = 60,
        safety: float = 0.05,
        seed: int = 0,
    ) -> None:
        if (deadline_s is None) == (budget_usd is None):
            raise ValueError("BayesianPlanner needs exactly one of deadline_s or budget_usd")
        self.space = space
        self.model = model
        self.deadline_s = deadline_s
        self.budget_usd = budget_usd
        self.mode = "deadline" if deadline_s is not None else "budget"
        self.trials = trials
        self.safety = safety
        self.seed = seed
        self.measurements: list[Measurement] = []
        self._decisions = 0

    def profile_configs(self) -> list[Config]:
        return self.space.profile_configs()

    def observe(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)

    def _score(
        self,
        cfg: Config,
        *,
        elapsed_s: float,
        spent_usd: float,
        remaining_samples: int,
        current: Config | None,
    ) -> tuple[float, float, Prediction]:
        """(objective, constraint) of `cfg`; constraint <= 0 means feasible."""
        pred = self.model.predict(cfg, remaining_samples, cold=cfg != current)
        margin = 1.0 + self.safety + self.model.uncertainty_of(cfg)
        finish, total = elapsed_s + pred.time_s, spent_usd + pred.cost_usd
        if self.mode == "deadline":
            return total, elapsed_s + pred.time_s * margin - float(self.deadline_s), pred  # type: ignore[arg-type]
        return finish, spent_usd + pred.cost_usd * margin - float(self.budget_usd), pred  # type: ignore[arg-type]

    def decide(
        self, *, elapsed_s: float, spent_usd: float, remaining_samples: int, current: Config | None
    ) -> PlanStep:
        """Refit the model, run the constrained study, return the best feasible configuration."""
        import optuna

        self.model.fit(self.measurements)
        kw = {
            "elapsed_s": elapsed_s,
            "spent_usd": spent_usd,
            "remaining_samples": remaining_samples,
            "current": current,
        }
        scored: dict[Config, tuple[float, float, Prediction]] = {}

        def objective(trial: optuna.Trial) -> float:
            cfg = Config(
                trial.suggest_categorical("workers", list(self.space.workers)),
                trial.suggest_categorical("memory_mb", list(self.space.memory_mb)),
                trial.suggest_categorical("batch_size", list(self.space.batch_size)),
            )
            if cfg not in scored:
                scored[cfg] = self._score(cfg, **kw)
            value, constraint, _ = scored[cfg]
            _set_constraint(trial, constraint)
            return value

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=_sampler(self.seed + self._decisions))
        for cfg in _known_first(self.measurements, current):
            if cfg in set(self.space.grid()):
                study.enqueue_trial(asdict(cfg), skip_if_exists=True)
        study.optimize(objective, n_trials=self.trials)
        self._decisions += 1
        return self._choose(scored, elapsed_s=elapsed_s, spent_usd=spent_usd, current=current)

    def _choose(
        self, scored: dict[Config, tuple[float, float, Prediction]], *, elapsed_s: float, spent_usd: float,
        current: Config | None,
    ) -> PlanStep:  # fmt: skip
        feasible = {c: s for c, s in scored.items() if s[1] <= 0}
        coef = self.model.coef
        model_note = (
            f"model: compute {coef.compute_per_sample_s * 1e3:.2f} ms/sample/vCPU, "
            f"comm {coef.comm_fixed_s * 1e3:.1f} ms + {coef.comm_per_byte_s * 1e9:.2f} s/GB, "
            f"uncertainty {self.model.uncertainty:.0%}; {len(scored)} configs scored, {len(feasible)} feasible"
        )
        if feasible:
            best = min(feasible, key=lambda c: (feasible[c][0], c.workers, c.memory_mb))
            pred = feasible[best][2]
            finish, total = elapsed_s + pred.time_s, spent_usd + pred.cost_usd
            if self.mode == "deadline":
                why = f"cheapest projected total ${total:.5f} finishing at {finish:.0f}s <= deadline {self.deadline_s:.0f}s"
            else:
                why = f"fastest projected finish {finish:.0f}s with total ${total:.5f} <= budget ${self.budget_usd:.5f}"
        else:
            fallback = "time_s" if self.mode == "deadline" else "cost_usd"
            best = min(scored, key=lambda c: (getattr(scored[c][2], fallback), c.workers))
            pred = scored[best][2]
            finish, total = elapsed_s + pred.time_s, spent_usd + pred.cost_usd
            why = f"no configuration meets the {self.mode}; the {'fastest' if fallback == 'time_s' else 'cheapest'} instead"
        keep = " (keeps current)" if best == current else (f" (was {current.label()})" if current else "")
        reason = f"{self.mode}: {best.label()}{keep}: {why}; {model_note}"
        log.info(reason)
        return PlanStep(best, self.mode, reason, finish, total, bool(feasible), pred, len(scored))


def _known_first(measurements: list[Measurement], current: Config | None) -> list[Config]:
    seen: list[Config] = [current] if current is not None else []
    for m in measurements:
        if m.config not in seen:
            seen.append(m.config)
    return seen


def _sampler(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    if hasattr(optuna.trial.Trial, "set_constraint"):
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=10,
        multivariate=True,
        constraints_func=lambda t: (t.user_attrs["constraint"],),
    )


def _set_constraint(trial: optuna.Trial, value: float) -> None:
    """Record the constraint the way this optuna version's TPE reads it."""
    if hasattr(trial, "set_constraint"):
        trial.set_constraint("limit", value)
    else:
        trial.set_user_attr("constraint", value)
