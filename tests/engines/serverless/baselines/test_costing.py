"""Job time and cost per design: what each design is billed for, and the fit used beyond measured n."""

from __future__ import annotations

import pytest

from siegecraft.engines.serverless.baselines.costing import Assumptions, StartUp, estimate, fit_linear
from siegecraft.engines.serverless.baselines.vm_prices import C5_2XLARGE, C5_LARGE, VmType
from siegecraft.engines.serverless.billing import AWS_LAMBDA_X86

START = StartUp(function_s=2.0, warm_restart_s=0.5, vm_data_s=1.0)


def _est(design: str, **kw: object):  # type: ignore[no-untyped-def]
    args = {"workers": 4, "memory_mb": 1769, "iterations": 1000, "iter_s": 0.1, "startup": START, **kw}
    return estimate(design, **args)  # type: ignore[arg-type]


def test_vm_billing_is_per_second_with_a_minute_minimum() -> None:
    vm = VmType("t", 1, 1.0, 3.6, 100.0)  # $0.001 per second
    assert vm.cost(10) == pytest.approx(0.06)
    assert vm.cost(100.2) == pytest.approx(0.101)


def test_smlt_pays_functions_for_the_whole_job_and_the_store_server() -> None:
    e = _est("smlt")
    assert e.time_s == pytest.approx(60.0 + 2.0 + 100.0)
    functions = 4 * AWS_LAMBDA_X86.cost(102_000, 1769)
    assert e.parts["workers_usd"] == pytest.approx(functions)
    assert e.cost_usd == pytest.approx(functions + C5_2XLARGE.cost(162.0))
    unbilled = _est("smlt", assumptions=Assumptions(bill_store=False))
    assert unbilled.time_s == pytest.approx(102.0) and unbilled.cost_usd == pytest.approx(functions)


def test_cirrus_always_rents_its_parameter_server() -> None:
    e = _est("cirrus", assumptions=Assumptions(bill_store=False))
    assert e.parts["server_usd"] == pytest.approx(C5_2XLARGE.cost(162.0))
    assert e.time_s == pytest.approx(162.0)


def test_fixed_cluster_boots_in_parallel_and_bills_every_vm() -> None:
    e = _est("fixed_cluster")
    assert e.time_s == pytest.approx(60.0 + 1.0 + 100.0)
    assert e.cost_usd == pytest.approx(4 * C5_LARGE.cost(161.0) + C5_2XLARGE.cost(161.0))


def test_functions_reinvoke_at_the_time_limit() -> None:
    e = _est("lambdaml", iterations=20_000)  # 2,000 s of training: three 15-minute invocations
    assert e.parts["invocations_per_worker"] == 3
    assert e.parts["restarts_s"] == pytest.approx(2 * 0.5)


def test_unknown_design_is_refused() -> None:
    with pytest.raises(ValueError, match="design must be one of"):
        _est("siren")


def test_linear_fit() -> None:
    a, b = fit_linear([2, 4, 8], [0.1 + 0.01 * n for n in (2, 4, 8)])
    assert a == pytest.approx(0.1) and b == pytest.approx(0.01)
    assert fit_linear([2, 4, 8], [0.3, 0.2, 0.1])[1] == 0.0  # never a shrinking iteration time
