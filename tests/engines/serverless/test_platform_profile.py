"""A calibrated prior (`serverless.platform_profile`): the file is validated, and the preflight refuses targets
below its measured tolerance with zero invocations while the generic prior (10x) would have let them run."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from siegecraft.core.config import ConfigError, FieldError
from siegecraft.core.models import build_model, flat_params
from siegecraft.drivers.experiment import build_experiment
from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.perf_model import Coefficients, PerformanceModel
from siegecraft.engines.serverless.planner import PRIOR_TOLERANCE
from siegecraft.engines.serverless.platform import FunctionPlatform
from siegecraft.engines.serverless.platform_profile import SIGMAS, SPREAD_KEYS, PlatformProfile, ProfileError
from siegecraft.engines.serverless.runner import bayesian_planner, check_target, train_serverless
from tests.engines.serverless.conftest import tiny_data

OPTIONS = {"width": 4, "hidden": 16}
PARAMS = int(flat_params(build_model("cnn", in_channels=1, num_classes=4, image_size=12, **OPTIONS)).numel())
SAMPLES = 256
PLANNER = {"workers": [1, 2], "memory_mb": [1024, 1769], "batch_size": [32, 64], "trials": 5}
# a platform about half as fast as the generic prior assumes: the generic 10x tolerance is far too loose here
COEF = Coefficients(compute_fixed_s=0.002, compute_per_sample_s=0.001, comm_fixed_s=0.005, comm_per_byte_s=1e-8,
                    comm_per_peer_s=0.002, startup_cold_s=1.0, startup_warm_s=0.15, cost_factor=1.0)  # fmt: skip
SPREAD = {k: 0.02 for k in SPREAD_KEYS}


def _profile(path: Path, *, num_params: int = PARAMS, spread: dict[str, float] | None = None) -> str:
    PlatformProfile(COEF, 0.7, spread or SPREAD, num_params, platform="test", model="cnn").save(path)
    return str(path)


def _cfg(profile: str | None, **target: Any) -> ServerlessConfig:
    return ServerlessConfig(**target, epochs=1, platform_profile=profile, planner=PLANNER,
                            emulated={"concurrency": 4})  # fmt: skip


def _verdict(profile: str | None, key: str) -> Any:
    cfg = _cfg(profile, on_infeasible="best-effort", **{key: 1.0})
    return check_target(cfg, num_params=PARAMS, samples=SAMPLES)


class SpyPlatform(FunctionPlatform):
    """Records every invocation it is asked for (a refused job must ask for none)."""

    name = "spy"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def submit(self, fn: Callable[[Any], Any], payload: Any, *, memory_mb: int, timeout_s: float) -> Future:
        self.calls.append(getattr(fn, "__name__", "?"))
        raise AssertionError("a refused job invoked a function")


def test_a_profile_round_trips_and_allows_each_coefficient_three_sigma(tmp_path: Path) -> None:
    spread = {**SPREAD, "startup_cold_s": 0.1, "parallel_efficiency": 0.5}
    profile = PlatformProfile.load(_profile(tmp_path / "p.json", spread=spread))
    assert profile.coefficients == COEF and profile.spread == spread and profile.num_params == PARAMS
    assert profile.tolerance("startup_cold_s") == pytest.approx(1 + SIGMAS * 0.1)
    coef, efficiency = profile.optimistic()
    assert coef.startup_cold_s == pytest.approx(COEF.startup_cold_s / (1 + SIGMAS * 0.1))
    assert coef.compute_per_sample_s == pytest.approx(COEF.compute_per_sample_s / (1 + SIGMAS * 0.02))
    assert efficiency == 1.0  # 0.7 x 2.5, capped: threads cannot do better than perfect


def _experiment(profile: str) -> dict[str, Any]:
    return {"name": "p", "topology": "serverless", "data": {"dataset": "digits"},
            "serverless": {"deadline_s": 60, "platform_profile": profile}}  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (None, "no such file"),
        (lambda raw: "{not json", "not a readable JSON file"),
        (lambda raw: {k: v for k, v in raw.items() if k != "spread"}, "missing key 'spread'"),
        (lambda raw: {**raw, "coefficients": {**raw["coefficients"], "startup_cold_s": -1}},
         "coefficients.startup_cold_s = -1"),
        (lambda raw: {**raw, "spread": {**raw["spread"], "startup_cold_s": "wide"}}, "spread.startup_cold_s = 'wide'"),
        (lambda raw: {**raw, "format": "v0"}, "format = 'v0'"),
    ],
    ids=["missing", "not-json", "missing-key", "negative", "not-a-number", "format"],
)
def test_a_bad_profile_is_a_one_line_error_naming_the_key(
    tmp_path: Path, edit: Callable[[dict], Any] | None, says: str
) -> None:
    path = tmp_path / "profile.json"
    if edit is not None:
        raw = json.loads(Path(_profile(path)).read_text())
        changed = edit(raw)
        path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(ConfigError) as err:
        build_experiment(_experiment(str(path)))
    message = str(err.value)
    assert message.startswith(f"serverless.platform_profile = {str(path)!r}: ") and says in message
    assert "\n" not in message


def test_a_profile_of_another_model_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = _profile(tmp_path / "p.json", num_params=PARAMS + 1)
    with pytest.raises(FieldError) as err:
        check_target(_cfg(path, deadline_s=60), num_params=PARAMS, samples=SAMPLES)
    assert str(err.value).startswith(f"serverless.platform_profile = {path!r}: calibrated for a model with")
    with pytest.raises(ProfileError):
        PlatformProfile.from_dict({"format": "x"})


@pytest.mark.parametrize("key", ["deadline_s", "budget_usd"])
def test_a_target_below_the_calibrated_bound_is_refused_with_zero_invocations(tmp_path: Path, key: str) -> None:
    path = _profile(tmp_path / "p.json")
    calibrated, generic = _verdict(path, key), _verdict(None, key)
    # tight: 3 sigma of a 2% spread (cost: time and billing factor each 1.06x)
    assert calibrated.predicted / calibrated.bound < 1.15 < PRIOR_TOLERANCE
    target = 0.97 * calibrated.bound
    assert target > generic.bound  # the generic prior could not have refused it
    spy, records = SpyPlatform(), []
    with pytest.raises(FieldError) as err:
        train_serverless(_cfg(path, **{key: target}), tiny_data(SAMPLES), model="cnn", model_options=OPTIONS,
                         platform=spy, on_record=records.append)  # fmt: skip
    message = str(err.value)
    assert message.startswith(f"serverless.{key} = {target!r}: unreachable: the prior performance model")
    assert f"calibrated prior from serverless.platform_profile = {path!r}" in message
    assert "standard deviations of its measured spread" in message and "\n" not in message
    assert spy.calls == [] and records == []  # zero invocations, nothing billed


@pytest.mark.parametrize("key", ["deadline_s", "budget_usd"])
def test_targets_at_or_above_the_calibrated_bound_are_accepted(tmp_path: Path, key: str) -> None:
    path = _profile(tmp_path / "p.json")
    verdict = _verdict(path, key)
    for target in (verdict.bound * 1.001, verdict.predicted, 10 * verdict.predicted):
        accepted = check_target(_cfg(path, **{key: target}), num_params=PARAMS, samples=SAMPLES)
        assert accepted is not None and accepted.reachable
    assert bayesian_planner(_cfg(path, **{key: 1.0}), PerformanceModel(num_params=PARAMS, samples_per_epoch=SAMPLES),
                            0).profile_configs() == []  # a calibrated prior needs no per-job probes  # fmt: skip
    assert verdict.profiling == 0.0 and _verdict(None, key).profiling > 0
    wider = _verdict(_profile(tmp_path / "w.json", spread={k: 0.2 for k in SPREAD_KEYS}), key)
    assert wider.bound < verdict.bound and wider.predicted == pytest.approx(verdict.predicted)


def test_without_a_profile_the_generic_prior_and_its_10x_tolerance_stay(tmp_path: Path) -> None:
    verdict = _verdict(None, "deadline_s")
    assert verdict.bound == pytest.approx(verdict.predicted / PRIOR_TOLERANCE)
    assert "generic prior" in replace(verdict, target=0.0).explain()
