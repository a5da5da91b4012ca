"""Planners that pick (workers, memory, batch size) for the next epoch.

`BayesianPlanner` (SMLT): after every epoch it refits the `PerformanceModel` to everything measured so
far, then runs a constrained Bayesian optimisation (optuna TPE with constraints) over the search space:
- deadline mode: minimise projected total cost subject to projected finish <= deadline;
- budget mode:   minimise projected finish time subject to projected total cost <= budget.
Projections include what was already spent (profiling included) and the start-up of a configuration
change. Configurations measured earlier are enqueued first, so the study always knows the real points.
If nothing is feasible it says so and falls back to the fastest (deadline) or cheapest (budget) choice.
Every decision also says whether the target is still `reachable` at all: the model's best point prediction
over the whole grid (no safety margin) meets it; the loop's `on_miss` policy acts on that.

`BayesianPlanner.feasibility` answers, from the PRIOR model alone (before anything is invoked), whether the
target can be reached; the serverless preflight refuses the job when it cannot (`Feasibility`). It refuses
only below what an OPTIMISTIC model predicts: the generic prior with every coefficient `PRIOR_TOLERANCE`
better, or a calibrated prior (`platform_profile.py`) with each coefficient better by its measured spread.

`FixedPlanner` always answers the configured point (no deadline, no budget).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from siegecraft.engines.serverless.observations import Measurement
from siegecraft.engines.serverless.perf_model import PerformanceModel, Prediction
from siegecraft.engines.serverless.specs import Config

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

PRIOR_TOLERANCE = 10.0
"""How much faster (and, in GB-seconds, cheaper) than the GENERIC prior the platform may turn out to be.

The prior `Coefficients` are generic: on the emulated platform of this repository they are ~10x slower than
measured (benchmarks/results/serverless.json: 2 ms vs 0.21 ms per sample and vCPU for the `cnn`, a 2 s vs
0.22 s cold start), and on the benchmark's job the prior's cheapest run costs 7x the true cheapest. So a target
is refused only when it lies below the prior's prediction divided by this factor: a refusal then means "not
even on a platform 10x faster than assumed", not "the prior guesses it will miss". Request fees are exact
(known from the price table) and are not divided. A `PlatformProfile` replaces it with measured tolerances.
"""
GENERIC_PRIOR = "generic prior, no serverless.platform_profile"


def generic_optimistic(model: PerformanceModel) -> PerformanceModel:
    """`model`'s prior with every time coefficient `PRIOR_TOLERANCE` better (the billing factor unchanged, so
    GB-seconds are as much cheaper as time is shorter)."""
    p = model.prior
    better = {k: getattr(p, k) / PRIOR_TOLERANCE for k in asdict(p) if k != "cost_factor"}
    return model.with_prior(replace(p, **better), model.prior_efficiency)


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


@dataclass(frozen=True)
class Feasibility:
    """The prior model's verdict on a target before anything runs (profiling probes included).

    `predicted` is the prior's point prediction of the fastest finish (deadline) or cheapest total cost
    (budget) and `config` the configuration that achieves it; `bound` is the lowest finish or cost the
    refusal allows for (the optimistic model's, over the whole grid); the target is `reachable` when it is
    at least `bound`. `prior` names the prior and `allowance` the tolerance the bound allowed for.
    """

    mode: str
    target: float
    config: Config
    predicted: float
    bound: float
    profiling: float
    prior: str = GENERIC_PRIOR
    allowance: str = f"every coefficient up to {PRIOR_TOLERANCE:g}x better than it assumes"

    @property
    def reachable(self) -> bool:
        return self.target >= self.bound

    @property
    def key(self) -> str:
        return "deadline_s" if self.mode == "deadline" else "budget_usd"

    def explain(self) -> str:
        """Why the target is unreachable and what is allowed (the refusal's text after `key = value: `)."""
        c = self.config
        probes = "profiling probes included" if self.profiling > 0 else "no profiling probes"
        where = f"workers={c.workers}, memory_mb={c.memory_mb}, batch_size={c.batch_size}; {probes}"
        least, ahead = _round_up(self.bound), f"a prediction, before any profiling; {self.prior}"
        if self.mode == "deadline":
            return (f"unreachable: the prior performance model predicts the fastest finish at {self.predicted:.3g} s "
                    f"({where}), and {least:.2g} s even with {self.allowance} ({ahead}); allowed: a deadline_s of "
                    f"at least {least:.2g}, or serverless.on_infeasible = 'best-effort' to run the fastest "
                    f"configuration anyway")
        return (f"unreachable: the prior performance model predicts the cheapest run at ${self.predicted:.2g} "
                f"({where}), and ${least:.2g} even with {self.allowance} (request fees exact; {ahead}); "
                f"allowed: a budget_usd of at least {least:.2g}, or serverless.on_infeasible = 'best-effort' to "
                f"run the cheapest configuration anyway")  # fmt: skip


def _round_up(x: float) -> float:
    """`x` rounded up to two significant digits (a suggested minimum must not fall below the bound)."""
    if x <= 0:
        return x
    step = 10.0 ** (math.floor(math.log10(x)) - 1)
    return math.ceil(x / step - 1e-9) * step


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
    reachable: bool = True
    missed: str = ""

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
        probes: bool = True,
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
        self.probes = probes
        self.measurements: list[Measurement] = []
        self._decisions = 0

    def profile_configs(self) -> list[Config]:
        """The space's profiling probes; none with `probes=False` (a calibrated prior already describes the
        platform, and the first epoch's measurement refits it)."""
        return self.space.profile_configs() if self.probes else []

    def observe(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)

    def grid(self) -> list[Config]:
        """The configurations that can train: a global batch (workers x batch size) within one epoch, else the
        epoch would have no iteration; the whole grid if none can (the preflight refuses that)."""
        grid = self.space.grid()
        return [c for c in grid if c.workers * c.batch_size <= self.model.samples_per_epoch] or grid

    def feasibility(
        self, *, epochs: int, profile_iterations: int, optimistic: PerformanceModel | None = None,
        prior: str = GENERIC_PRIOR, allowance: str | None = None,
    ) -> Feasibility:  # fmt: skip
        """Whether the target is reachable by the PRIOR model (the model is reset to it; nothing runs).

        Replays what the loop will do: the profiling probes (a few iterations each, cold, their samples count
        towards epoch 0) and then the rest of the job with every configuration of the grid, cold unless it is
        the last probe's. The prior's fastest finish (deadline) or cheapest total (budget) is reported; the
        target is refused below the same replay on `optimistic` (default: `generic_optimistic`, the prior
        `PRIOR_TOLERANCE` better), the lowest the platform could plausibly do. `prior` and `allowance` say
        which prior and tolerance were used, for the refusal message.
        """
        self.model.fit([])
        (prof_s, prof_usd), fastest, cheapest = self._replay(self.model, epochs, profile_iterations)
        _, low_fast, low_cheap = self._replay(optimistic or generic_optimistic(self.model), epochs, profile_iterations)
        extra = {"prior": prior} if allowance is None else {"prior": prior, "allowance": allowance}
        if self.mode == "deadline":
            return Feasibility("deadline", float(self.deadline_s), fastest[0], fastest[1], low_fast[1], prof_s,  # type: ignore[arg-type]
                               **extra)  # fmt: skip
        return Feasibility("budget", float(self.budget_usd), cheapest[0], cheapest[2], low_cheap[2], prof_usd,  # type: ignore[arg-type]
                           **extra)  # fmt: skip

    def _replay(
        self, model: PerformanceModel, epochs: int, profile_iterations: int
    ) -> tuple[tuple[float, float], tuple[Config, float, float], tuple[Config, float, float]]:
        """((profiling s, profiling $), fastest (config, s, $), cheapest (config, s, $)) of the whole job
        predicted by `model` (unfitted), probes included."""
        n = model.samples_per_epoch
        offset, prof_s, prof_usd, last = 0, 0.0, 0.0, None
        for cfg in self.profile_configs():
            per_iter = cfg.workers * cfg.batch_size
            iterations = min(profile_iterations, (n - offset) // per_iter)
            if iterations <= 0:
                continue
            pred = model.predict(cfg, iterations * per_iter, cold=True)
            prof_s, prof_usd = prof_s + pred.time_s, prof_usd + pred.cost_usd
            offset, last = offset + iterations * per_iter, cfg
        remaining = epochs * n - offset
        options: list[tuple[Config, float, float]] = []
        for cfg in self.grid() if remaining > 0 else [last or self.grid()[0]]:
            pred = model.predict(cfg, remaining, cold=cfg != last) if remaining > 0 else None
            time_s, cost = (pred.time_s, pred.cost_usd) if pred else (0.0, 0.0)
            options.append((cfg, prof_s + time_s, prof_usd + cost))
        fastest = min(options, key=lambda o: (o[1], o[0].workers))
        cheapest = min(options, key=lambda o: (o[2], o[0].workers))
        return (prof_s, prof_usd), fastest, cheapest

    def reachability(
        self, *, elapsed_s: float, spent_usd: float, remaining_samples: int, current: Config | None
    ) -> tuple[bool, str]:
        """Whether the fitted model's best point prediction over the whole grid (no safety margin) still meets
        the target, and if not, why (the `on_miss` policy stops or continues on it)."""
        preds = [self.model.predict(c, remaining_samples, cold=c != current) for c in self.grid()]
        if self.mode == "deadline":
            best = min(preds, key=lambda p: (p.time_s, p.config.workers))
            finish = elapsed_s + best.time_s
            ok = finish <= float(self.deadline_s)  # type: ignore[arg-type]
            why = (f"deadline_s = {self.deadline_s:g} is out of reach: {elapsed_s:.1f} s elapsed and the fastest "
                   f"configuration ({best.config.label()}) is predicted to finish at {finish:.1f} s")  # fmt: skip
        else:
            best = min(preds, key=lambda p: (p.cost_usd, p.config.workers))
            total = spent_usd + best.cost_usd
            ok = total <= float(self.budget_usd)  # type: ignore[arg-type]
            why = (f"budget_usd = {self.budget_usd:g} is out of reach: ${spent_usd:.2g} spent and the cheapest "
                   f"configuration ({best.config.label()}) is predicted to total ${total:.2g}")  # fmt: skip
        return ok, ("" if ok else why)

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
        allowed = set(self.grid())

        def objective(trial: optuna.Trial) -> float:
            cfg = Config(
                trial.suggest_categorical("workers", list(self.space.workers)),
                trial.suggest_categorical("memory_mb", list(self.space.memory_mb)),
                trial.suggest_categorical("batch_size", list(self.space.batch_size)),
            )
            if cfg not in allowed:  # its epoch would have no iteration: never chosen
                _set_constraint(trial, 1e30)
                return 1e30
            if cfg not in scored:
                scored[cfg] = self._score(cfg, **kw)
            value, constraint, _ = scored[cfg]
            _set_constraint(trial, constraint)
            return value

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=_sampler(self.seed + self._decisions))
        for cfg in _known_first(self.measurements, current):
            if cfg in allowed:
                study.enqueue_trial(asdict(cfg), skip_if_exists=True)
        study.optimize(objective, n_trials=self.trials)
        if not scored:  # every trial drew an unusable configuration: score the usable ones directly
            scored = {cfg: self._score(cfg, **kw) for cfg in allowed}
        self._decisions += 1
        step = self._choose(scored, elapsed_s=elapsed_s, spent_usd=spent_usd, current=current)
        step.reachable, step.missed = self.reachability(**kw)
        if not step.reachable:
            log.warning("%s", step.missed)
        return step

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
