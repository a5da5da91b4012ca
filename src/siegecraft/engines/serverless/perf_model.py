"""Performance and cost model of a serverless training configuration, fitted to measured plans.

Per iteration:   t_iter = t_compute + t_comm
    t_compute = (a0 + a1 * batch) / speed(memory)            speed: vCPU share below 1,769 MB, then threads
    t_comm    = t_wait + c0 + c1 * critical_bytes(n) + c2 * (n - 1)
                                                              store traffic on the critical path, per-peer
                                                              latency and waiting for the slowest peer
    t_wait    = t_compute * (E[max of n worker times] - 1)    the straggler term: one worker's compute time
                                                              varies with coefficient of variation
                                                              `straggler_cv` (lognormal), and an iteration
                                                              waits for the slowest of n (0: no term)
Per plan:        t_plan = startup (cold if the configuration changed, warm otherwise) + iterations * t_iter
Cost:            roles * memory/1024 * t_plan * $/GB-s * cost_factor + roles * $/request

Coefficients are Bayesian linear-regression posteriors (Gaussian prior around defaults, so one or two
profiling points already give sane numbers); a configuration that has itself been measured is corrected by
its own measured/modelled ratio. `uncertainty` is the relative error of the fit on the measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache

import numpy as np

from siegecraft.engines.serverless.billing import PriceTable
from siegecraft.engines.serverless.observations import Measurement
from siegecraft.engines.serverless.specs import Config


@dataclass(frozen=True)
class Coefficients:
    """Model parameters (seconds, seconds per sample, seconds per byte, ...)."""

    compute_fixed_s: float = 0.005
    compute_per_sample_s: float = 0.002
    comm_fixed_s: float = 0.01
    comm_per_byte_s: float = 1.0 / 100e6
    comm_per_peer_s: float = 0.005
    startup_cold_s: float = 2.0
    startup_warm_s: float = 0.3
    cost_factor: float = 1.0
    straggler_cv: float = 0.0


@dataclass(frozen=True)
class Prediction:
    """Predicted time and cost of running `samples` samples with one configuration."""

    config: Config
    iterations: int
    iter_s: float
    compute_s: float
    comm_s: float
    startup_s: float
    time_s: float
    cost_usd: float

    def to_dict(self) -> dict:
        return asdict(self)


@cache
def expected_slowest(workers: int, cv: float) -> float:
    """E[max of `workers` lognormal times with mean 1 and coefficient of variation `cv`]: how much longer than
    the mean worker an iteration waits for its slowest one (Monte Carlo with a fixed seed, so deterministic)."""
    if cv <= 0 or workers <= 1:
        return 1.0
    sigma = math.sqrt(math.log(1 + cv * cv))
    draws = np.random.default_rng(12345).lognormal(-sigma * sigma / 2, sigma, size=(20000, workers))
    return float(draws.max(axis=1).mean())


def bayes_linear(
    features: np.ndarray, target: np.ndarray, prior_mean: np.ndarray, prior_sd: np.ndarray, noise_sd: float
) -> np.ndarray:
    """Posterior mean of y = X theta + noise under theta ~ N(prior_mean, diag(prior_sd^2)), clipped at 0."""
    precision = features.T @ features / noise_sd**2 + np.diag(1.0 / prior_sd**2)
    rhs = features.T @ target / noise_sd**2 + prior_mean / prior_sd**2
    return np.maximum(np.linalg.solve(precision, rhs), 0.0)


class PerformanceModel:
    """Predicts iteration time, plan time and cost of a `Config`; `fit` calibrates it to measurements."""

    def __init__(
        self,
        *,
        num_params: int,
        samples_per_epoch: int,
        prices: PriceTable | None = None,
        sync: str = "scatter_reduce",
        max_threads: int = 6,
        parallel_efficiency: float = 0.7,
        prior: Coefficients | None = None,
    ) -> None:
        self.num_params = num_params
        self.samples_per_epoch = samples_per_epoch
        self.prices = prices or PriceTable()
        self.sync = sync
        self.max_threads = max_threads
        self.parallel_efficiency = parallel_efficiency
        self.prior_efficiency = parallel_efficiency
        self.prior = prior or Coefficients()
        self.coef = self.prior
        self.uncertainty = 0.25
        self._corrections: dict[Config, float] = {}
        self._spread: dict[Config, float] = {}

    def with_prior(self, prior: Coefficients, parallel_efficiency: float) -> PerformanceModel:
        """A fresh (unfitted) model of the same job, prices and synchronisation with another prior."""
        return PerformanceModel(
            num_params=self.num_params, samples_per_epoch=self.samples_per_epoch, prices=self.prices, sync=self.sync,
            max_threads=self.max_threads, parallel_efficiency=parallel_efficiency, prior=prior,
        )  # fmt: skip

    # -- structure ---------------------------------------------------------------------------------------
    def speed(self, memory_mb: int) -> float:
        """Relative compute speed of a tier: the vCPU share below one vCPU, then threads with efficiency."""
        share = self.prices.vcpus(memory_mb)
        if share < 1.0:
            return share
        threads = max(1, min(self.max_threads, int(share)))
        return 1.0 + self.parallel_efficiency * (threads - 1)

    def roles(self, workers: int) -> int:
        return workers + 1 if self.sync == "central" else workers

    def bytes_per_worker(self, workers: int) -> float:
        """Store bytes one worker moves per iteration."""
        p4, n = 4.0 * self.num_params, workers
        if self.sync == "central":
            return 2.0 * p4
        return p4 * (3.0 * (n - 1) + 2.0) / n

    def critical_bytes(self, workers: int) -> float:
        """Bytes on an iteration's critical path (the central aggregator moves n + 1 models serially)."""
        if self.sync == "central":
            return 2.0 * 4.0 * self.num_params + (workers + 1) * 4.0 * self.num_params
        return self.bytes_per_worker(workers)

    def _compute_s(self, cfg: Config, coef: Coefficients) -> float:
        return (coef.compute_fixed_s + coef.compute_per_sample_s * cfg.batch_size) / self.speed(cfg.memory_mb)

    def _store_s(self, cfg: Config, coef: Coefficients) -> float:
        """Store traffic and per-peer latency of one iteration (communication without the straggler wait)."""
        n = cfg.workers
        return (
            coef.comm_fixed_s + coef.comm_per_byte_s * self.critical_bytes(n) + coef.comm_per_peer_s * (n - 1)
        )

    def _wait_s(self, cfg: Config, coef: Coefficients) -> float:
        """Waiting for the slowest of the n workers beyond the mean worker's compute (the straggler term)."""
        return self._compute_s(cfg, coef) * (expected_slowest(cfg.workers, coef.straggler_cv) - 1.0)

    def _comm_s(self, cfg: Config, coef: Coefficients) -> float:
        return self._wait_s(cfg, coef) + self._store_s(cfg, coef)

    # -- prediction --------------------------------------------------------------------------------------
    def iteration_s(self, cfg: Config) -> tuple[float, float, float]:
        """(iteration, compute, communication) seconds, corrected by the config's own measurements."""
        compute, comm = self._compute_s(cfg, self.coef), self._comm_s(cfg, self.coef)
        factor = self._corrections.get(cfg, 1.0)
        return (compute + comm) * factor, compute * factor, comm * factor

    def plan_cost(self, cfg: Config, seconds: float, invocations: int | None = None) -> float:
        roles = self.roles(cfg.workers)
        gb_s = roles * cfg.memory_mb / 1024.0 * seconds
        requests = invocations if invocations is not None else roles
        return gb_s * self.prices.gb_second_usd * self.coef.cost_factor + requests * self.prices.request_usd

    def predict(self, cfg: Config, samples: int, *, cold: bool = True) -> Prediction:
        """Time and cost to train `samples` more samples with `cfg` (one plan per epoch)."""
        per_iter = cfg.workers * cfg.batch_size
        epochs_left = samples / self.samples_per_epoch
        iterations = int(samples // per_iter)
        plans = max(1, math.ceil(epochs_left - 1e-9))
        iter_s, compute, comm = self.iteration_s(cfg)
        startup = (self.coef.startup_cold_s if cold else self.coef.startup_warm_s) + (
            plans - 1
        ) * self.coef.startup_warm_s
        time_s = startup + iterations * iter_s
        cost = self.plan_cost(cfg, time_s, invocations=plans * self.roles(cfg.workers))
        return Prediction(cfg, iterations, iter_s, compute, comm, startup, time_s, cost)

    def _fit_compute(self, usable: Sequence[Measurement], weights: np.ndarray) -> np.ndarray:
        """(a0, a1) of compute = (a0 + a1 * b) / speed(memory); the thread efficiency is fitted too (grid search
        with a prior) once some measurement ran with two or more threads."""
        p = self.prior
        multi_thread = any(self.prices.vcpus(m.config.memory_mb) >= 2 for m in usable)
        prior_e = self.prior_efficiency
        candidates = np.linspace(0.05, 1.0, 20) if multi_thread else np.array([prior_e])
        best: tuple[float, float, np.ndarray] = (np.inf, prior_e, np.zeros(2))
        x = np.array([[1.0, m.config.batch_size] for m in usable]) * weights[:, None]
        for e in candidates:
            self.parallel_efficiency = float(e)
            y = np.array([m.compute_s * self.speed(m.config.memory_mb) for m in usable]) * weights
            noise = max(float(np.mean(np.abs(y))) * 0.1, 1e-4)
            a = bayes_linear(
                x, y, np.array([p.compute_fixed_s, p.compute_per_sample_s]),
                np.array([max(p.compute_fixed_s, 1e-3) * 3, max(p.compute_per_sample_s, 1e-4) * 3]), noise_sd=noise,
            )  # fmt: skip
            predicted = np.array(
                [(a[0] + a[1] * m.config.batch_size) / self.speed(m.config.memory_mb) for m in usable]
            )
            actual = np.array([m.compute_s for m in usable])
            score = (
                float(np.sum(np.square((predicted - actual) / actual) * weights**2))
                + ((e - prior_e) / 0.5) ** 2
            )
            if score < best[0]:
                best = (score, float(e), a)
        self.parallel_efficiency = best[1]
        return best[2]

    def uncertainty_of(self, cfg: Config) -> float:
        """Relative error to allow for `cfg`: its own measured spread if it ran, else the model's error."""
        if cfg in self._spread:
            return self._spread[cfg]
        return self.uncertainty

    # -- calibration -------------------------------------------------------------------------------------
    def fit(self, measurements: Sequence[Measurement]) -> Coefficients:
        """Refit every coefficient to the measurements (prior-regularised); returns the new coefficients."""
        usable = [m for m in measurements if m.iterations > 0 and m.iter_s > 0]
        self._corrections = {}
        if not usable:
            self.coef = self.prior
            self._spread = {}
            return self.coef
        p = self.prior
        weights = np.sqrt([max(m.iterations, 1) for m in usable])
        a = self._fit_compute(usable, weights)
        # communication: comm = wait + c0 + c1 * bytes + c2 * (n - 1); bytes are scaled to MB for conditioning.
        # The measured comm holds the wait for the slowest worker; the straggler term takes its modelled part
        # (with the compute just fitted), the per-peer term what remains.
        fitted = replace(p, compute_fixed_s=float(a[0]), compute_per_sample_s=float(a[1]))
        x = np.array(
            [[1.0, self.critical_bytes(m.config.workers) / 1e6, m.config.workers - 1.0] for m in usable]
        )
        y = np.array([max(0.0, m.comm_s - self._wait_s(m.config, fitted)) for m in usable]) * weights
        c = bayes_linear(
            x * weights[:, None], y,
            np.array([p.comm_fixed_s, p.comm_per_byte_s * 1e6, p.comm_per_peer_s]),
            np.array([max(p.comm_fixed_s, 1e-3) * 3, max(p.comm_per_byte_s * 1e6, 1e-3) * 3, 0.05]),
            noise_sd=max(float(np.mean(np.abs(y))) * 0.1, 1e-4),
        )  # fmt: skip
        cold = [m.startup_s for m in usable if m.switched]
        warm = [m.startup_s for m in usable if not m.switched]
        coef = replace(
            p,
            compute_fixed_s=float(a[0]),
            compute_per_sample_s=float(a[1]),
            comm_fixed_s=float(c[0]),
            comm_per_byte_s=float(c[1]) / 1e6,
            comm_per_peer_s=float(c[2]),
            startup_cold_s=float((sum(cold) + p.startup_cold_s) / (len(cold) + 1)),
            startup_warm_s=float((sum(warm) + p.startup_warm_s) / (len(warm) + 1)),
        )
        self.coef = coef
        modelled = sum(self.plan_cost(m.config, m.wall_s, invocations=0) for m in usable)
        measured = sum(m.cost_usd - m.invocations * self.prices.request_usd for m in usable)
        self.coef = replace(coef, cost_factor=float(measured / modelled) if modelled > 0 else 1.0)
        errors, ratios = [], {}
        for m in usable:
            predicted = self._compute_s(m.config, self.coef) + self._comm_s(m.config, self.coef)
            errors.append((m.iter_s - predicted) / predicted)
            ratios.setdefault(m.config, []).append((m.iter_s / predicted, m.iterations))
        self.uncertainty = float(np.sqrt(np.mean(np.square(errors)))) if len(errors) > 1 else 0.25
        self._spread = {}
        for cfg, pairs in ratios.items():
            total = sum(w for _, w in pairs)
            mean = sum(r * w for r, w in pairs) / total
            self._corrections[cfg] = mean
            spread = float(np.std([r for r, _ in pairs]) / mean) if len(pairs) > 1 else self.uncertainty / 2
            self._spread[cfg] = max(0.03, spread)
        return self.coef
