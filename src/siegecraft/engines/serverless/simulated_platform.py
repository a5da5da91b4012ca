"""A calibrated stand-in for the platform, for planner studies that a 2-core machine cannot run for real.

`GroundTruth` holds numbers measured on real invocations (gradient time per sample at one vCPU, thread
efficiency, store round-trip latency, cold and warm start) plus the stated assumptions (per-function
network bandwidth, price table). `SimulatedExecutor` turns it into `Measurement`s with noise: each
worker's compute time is lognormal around the truth, an iteration waits for the slowest worker, and a
configuration change pays a cold start. Its physics deliberately differ from `PerformanceModel`'s linear
form (straggler maximum, request counts), so the planner is tested against a world it only estimates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from siegecraft.engines.serverless.billing import PriceTable
from siegecraft.engines.serverless.observations import Measurement
from siegecraft.engines.serverless.perf_model import expected_slowest
from siegecraft.engines.serverless.specs import Config


@dataclass(frozen=True)
class GroundTruth:
    """The simulated platform and job; see the module docstring for what is measured vs assumed."""

    num_params: int
    samples_per_epoch: int
    compute_fixed_s: float
    compute_per_sample_s: float
    parallel_efficiency: float
    request_latency_s: float
    network_mb_s: float
    cold_start_s: float
    warm_start_s: float
    noise_cv: float = 0.1
    poll_s: float = 0.002
    max_threads: int = 6
    sync: str = "scatter_reduce"
    prices: PriceTable = field(default_factory=PriceTable)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["prices"] = self.prices.model_dump()
        return out

    def speed(self, memory_mb: int) -> float:
        share = self.prices.vcpus(memory_mb)
        if share < 1.0:
            return share
        return 1.0 + self.parallel_efficiency * (max(1, min(self.max_threads, int(share))) - 1)

    def compute_s(self, cfg: Config) -> float:
        """Mean gradient time of one worker for one iteration."""
        return (self.compute_fixed_s + self.compute_per_sample_s * cfg.batch_size) / self.speed(cfg.memory_mb)

    def comm_s(self, cfg: Config) -> float:
        """Store time of one iteration: round trips, polling, and bytes over the function's link."""
        n, p4 = cfg.workers, 4.0 * self.num_params
        if self.sync == "central":
            aggregator = ((n + 1) * p4) / (self.network_mb_s * 1e6) + 4 * self.request_latency_s
            return (
                4 * self.request_latency_s + 2 * p4 / (self.network_mb_s * 1e6) + aggregator + 2 * self.poll_s
            )
        moved = p4 * (3.0 * (n - 1) + 2.0) / n
        requests = 6 if n > 1 else 4
        return (
            requests * self.request_latency_s + moved / (self.network_mb_s * 1e6) + 2 * self.poll_s * (n > 1)
        )

    def roles(self, workers: int) -> int:
        return workers + 1 if self.sync == "central" else workers

    def expected_iteration_s(self, cfg: Config) -> float:
        """E[slowest worker's compute] + communication."""
        return self.compute_s(cfg) * expected_slowest(cfg.workers, self.noise_cv) + self.comm_s(cfg)

    def expected_run(self, cfg: Config, samples: int, *, plans: int = 1) -> tuple[float, float]:
        """Noise-free (time, cost) of training `samples` with a fixed `cfg` from a cold start."""
        iterations = samples // (cfg.workers * cfg.batch_size)
        time_s = (
            self.cold_start_s + (plans - 1) * self.warm_start_s + iterations * self.expected_iteration_s(cfg)
        )
        return time_s, self.cost(cfg, time_s, plans=plans)

    def expected_schedule(
        self, probes: list[Config], grid: list[Config], *, epochs: int, profile_iterations: int,
        decision_s: float = 0.0,
    ) -> tuple[tuple[Config, float, float], tuple[Config, float, float]]:  # fmt: skip
        """Noise-free (config, finish s, total $) of the fastest and of the cheapest job the loop can run: the
        profiling probes as `loop.drive` runs them, then one configuration for every epoch (cold unless it is
        the last probe's, warm after), `decision_s` per decision. The best any scheduler that profiles can do."""
        n, offset, prof_s, prof_usd, last = self.samples_per_epoch, 0, 0.0, 0.0, None
        for cfg in probes:
            its = min(profile_iterations, (n - offset) // (cfg.workers * cfg.batch_size))
            if its > 0:
                t = self.cold_start_s + its * self.expected_iteration_s(cfg)
                prof_s, prof_usd = prof_s + t, prof_usd + self.cost(cfg, t, plans=1)
                offset, last = offset + its * cfg.workers * cfg.batch_size, cfg
        options = []
        for cfg in grid:
            per_iter, it_s = cfg.workers * cfg.batch_size, self.expected_iteration_s(cfg)
            plans = [(self.warm_start_s if cfg == last else self.cold_start_s) + (n - offset) // per_iter * it_s]
            plans += [self.warm_start_s + n // per_iter * it_s] * (epochs - 1)
            time_s = prof_s + epochs * decision_s + sum(plans)
            options.append((cfg, time_s, prof_usd + sum(self.cost(cfg, t, plans=1) for t in plans)))
        fastest = min(options, key=lambda o: (o[1], o[0].workers))
        cheapest = min(options, key=lambda o: (o[2], o[0].workers))
        return fastest, cheapest

    def cost(self, cfg: Config, time_s: float, *, plans: int) -> float:
        """Every role bills the whole plan, its start-up included (it runs it); one request per role and plan."""
        roles = self.roles(cfg.workers)
        gb_s = roles * time_s * cfg.memory_mb / 1024.0
        return gb_s * self.prices.gb_second_usd + plans * roles * self.prices.request_usd


class SimulatedExecutor:
    """`PlanExecutor` over a `GroundTruth`: noisy, seeded measurements and a virtual clock."""

    def __init__(self, truth: GroundTruth, *, seed: int = 0) -> None:
        self.truth = truth
        self.samples_per_epoch = truth.samples_per_epoch
        self.rng = np.random.default_rng(seed)
        self.current: Config | None = None

    def execute(
        self, config: Config, *, epoch: int, epoch_offset: int, iterations: int, phase: str
    ) -> Measurement:
        t, n = self.truth, config.workers
        sigma = math.sqrt(math.log(1 + t.noise_cv**2))
        worker_compute = t.compute_s(config) * self.rng.lognormal(
            -sigma * sigma / 2, sigma, size=(iterations, n)
        )
        comm = t.comm_s(config) * self.rng.lognormal(-0.005, 0.1, size=iterations)
        per_iteration = worker_compute.max(axis=1) + comm
        switched = config != self.current
        startup = (t.cold_start_s if switched else t.warm_start_s) * float(self.rng.lognormal(0, 0.1))
        wall = startup + float(per_iteration.sum())
        self.current = config
        its = max(iterations, 1)
        compute = float(worker_compute.mean()) if iterations else 0.0
        iter_s = float(per_iteration.sum()) / its
        return Measurement(
            config=config,
            phase=phase,
            iterations=iterations,
            samples=iterations * n * config.batch_size,
            wall_s=wall,
            startup_s=startup,
            iter_s=iter_s,
            compute_s=compute,
            comm_s=max(0.0, iter_s - compute),
            cost_usd=t.cost(config, wall, plans=1),
            invocations=t.roles(n),
            cold_starts=t.roles(n) if switched else 0,
            bytes_per_worker=4.0 * t.num_params * (3.0 * (n - 1) + 2.0) / n,
            switched=switched,
        )
