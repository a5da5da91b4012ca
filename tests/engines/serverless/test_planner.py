"""Performance model fitting and the deadline/budget-aware Bayesian planner, on the calibrated simulator."""

from __future__ import annotations

from dataclasses import replace

import pytest

from siegecraft.engines.serverless import loop
from siegecraft.engines.serverless.observations import Measurement
from siegecraft.engines.serverless.perf_model import Coefficients, PerformanceModel, expected_slowest
from siegecraft.engines.serverless.planner import BayesianPlanner, SearchSpace
from siegecraft.engines.serverless.simulated_platform import GroundTruth, SimulatedExecutor
from siegecraft.engines.serverless.specs import Config

SPACE = SearchSpace((1, 2, 4, 8, 16), (512, 1024, 1769, 3538), (16, 32, 64, 128))
TRUTH = GroundTruth(
    num_params=421_642, samples_per_epoch=20_000, compute_fixed_s=0.004, compute_per_sample_s=0.0009,
    parallel_efficiency=0.6, request_latency_s=0.0004, network_mb_s=75, cold_start_s=1.0, warm_start_s=0.2,
    noise_cv=0.1,
)  # fmt: skip
EPOCHS = 4


def _model() -> PerformanceModel:
    return PerformanceModel(num_params=TRUTH.num_params, samples_per_epoch=TRUTH.samples_per_epoch)


def _run(*, deadline_s: float | None = None, budget_usd: float | None = None, seed: int = 0) -> dict:
    planner = BayesianPlanner(
        SPACE, _model(), deadline_s=deadline_s, budget_usd=budget_usd, trials=30, seed=seed
    )
    return loop.drive(SimulatedExecutor(TRUTH, seed=seed), planner, epochs=EPOCHS, profile_iterations=3)


def _expected(cfg: Config) -> tuple[float, float]:
    return TRUTH.expected_run(cfg, EPOCHS * TRUTH.samples_per_epoch)


def test_fit_recovers_a_model_from_its_own_measurements() -> None:
    truth = PerformanceModel(num_params=100_000, samples_per_epoch=10_000, prior=Coefficients(
        compute_fixed_s=0.01, compute_per_sample_s=0.003, comm_fixed_s=0.02, comm_per_byte_s=2e-8,
        comm_per_peer_s=0.004))  # fmt: skip
    measurements = []
    for cfg in [Config(1, 1769, 16), Config(2, 885, 64), Config(8, 3538, 32), Config(4, 1769, 128)]:
        it, compute, comm = truth.iteration_s(cfg)
        measurements.append(Measurement(cfg, "train", 50, 50 * cfg.workers * cfg.batch_size, 2.0 + 50 * it, 2.0,
                                        it, compute, comm, truth.plan_cost(cfg, 2.0 + 50 * it)))  # fmt: skip
    fitted = PerformanceModel(num_params=100_000, samples_per_epoch=10_000)
    fitted.fit(measurements)
    for cfg in [Config(16, 1024, 32), Config(3, 7076, 64)]:  # not measured
        assert fitted.iteration_s(cfg)[0] == pytest.approx(truth.iteration_s(cfg)[0], rel=0.1)
    assert fitted.coef.startup_cold_s == pytest.approx(2.0, rel=0.01)


def test_a_looser_deadline_buys_a_cheaper_run_and_both_are_met() -> None:
    times = sorted(_expected(c)[0] for c in SPACE.grid())
    tight, loose = 3 * times[0], 0.5 * times[-1]
    fast, cheap = _run(deadline_s=tight), _run(deadline_s=loose)
    assert fast["elapsed_s"] <= tight and cheap["elapsed_s"] <= loose
    assert cheap["spent_usd"] < fast["spent_usd"]
    train = [r for r in fast["records"] if r["phase"] == "train"]
    assert len(train) == EPOCHS and all("deadline" in r["reason"] for r in train)
    assert all(r["projected_finish_s"] is not None for r in train)
    profile = [r for r in fast["records"] if r["phase"] == "profile"]
    assert profile and fast["spent_usd"] == pytest.approx(sum(r["cost_usd"] for r in fast["records"]))


def test_a_larger_budget_buys_a_faster_run_within_budget() -> None:
    costs = sorted(_expected(c)[1] for c in SPACE.grid())
    small, large = 1.3 * costs[0], 2.5 * costs[0]
    slow, quick = _run(budget_usd=small), _run(budget_usd=large)
    assert slow["spent_usd"] <= small and quick["spent_usd"] <= large
    assert quick["elapsed_s"] < slow["elapsed_s"]


def test_an_impossible_deadline_is_reported_and_the_fastest_choice_taken() -> None:
    planner = BayesianPlanner(SPACE, _model(), deadline_s=1.0, trials=30)
    decision = planner.decide(elapsed_s=0.0, spent_usd=0.0, remaining_samples=10**6, current=None)
    assert not decision.feasible and "no configuration meets the deadline" in decision.reason
    assert decision.config.workers == max(SPACE.workers)


def test_exactly_one_target_is_required() -> None:
    with pytest.raises(ValueError):
        BayesianPlanner(SPACE, _model())
    with pytest.raises(ValueError):
        BayesianPlanner(SPACE, _model(), deadline_s=1, budget_usd=1)


def test_the_straggler_term_matches_the_simulators_wait_for_the_slowest_worker() -> None:
    """With the simulator's per-worker spread as `straggler_cv`, the model's iteration time at 16 workers is the
    simulator's expectation up to the request terms it models differently; without it, it is optimistic."""
    prior = Coefficients(
        compute_fixed_s=TRUTH.compute_fixed_s, compute_per_sample_s=TRUTH.compute_per_sample_s,
        comm_fixed_s=6 * TRUTH.request_latency_s + 2 * TRUTH.poll_s, comm_per_byte_s=1 / (TRUTH.network_mb_s * 1e6),
        comm_per_peer_s=0.0,
    )  # fmt: skip
    cfg = Config(16, 1769, 128)
    plain = PerformanceModel(num_params=TRUTH.num_params, samples_per_epoch=TRUTH.samples_per_epoch, prior=prior,
                             parallel_efficiency=TRUTH.parallel_efficiency)  # fmt: skip
    slow = plain.with_prior(replace(prior, straggler_cv=TRUTH.noise_cv), TRUTH.parallel_efficiency)
    assert expected_slowest(1, 0.3) == 1.0 and expected_slowest(16, 0.0) == 1.0
    assert 1.0 < expected_slowest(4, 0.1) < expected_slowest(16, 0.1) < expected_slowest(16, 0.3)
    assert plain.iteration_s(cfg)[0] < 0.9 * TRUTH.expected_iteration_s(cfg)
    assert slow.iteration_s(cfg)[0] == pytest.approx(TRUTH.expected_iteration_s(cfg), rel=0.02)


def test_a_fit_with_the_straggler_term_does_not_count_the_wait_twice() -> None:
    """Measured communication includes the wait for the slowest worker; the fit gives the modelled part to the
    straggler term, so predictions for measured and unmeasured worker counts stay close to the simulator."""
    model = PerformanceModel(num_params=TRUTH.num_params, samples_per_epoch=TRUTH.samples_per_epoch,
                             prior=Coefficients(straggler_cv=TRUTH.noise_cv))  # fmt: skip
    sim = SimulatedExecutor(TRUTH, seed=3)
    measured = [sim.execute(c, epoch=0, epoch_offset=0, iterations=200, phase="profile")
                for c in (Config(2, 1769, 64), Config(16, 512, 16), Config(1, 3538, 128))]  # fmt: skip
    model.fit(measured)
    for cfg in (Config(8, 1769, 64), Config(16, 1769, 128), Config(16, 3538, 128)):  # counted twice: +8-9%
        assert model.iteration_s(cfg)[0] == pytest.approx(TRUTH.expected_iteration_s(cfg), rel=0.04)
