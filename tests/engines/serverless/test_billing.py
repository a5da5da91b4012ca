"""Billing: Lambda's rounding, GB-second price, request fee, init billing, ledger totals."""

from __future__ import annotations

import pytest

from siegecraft.engines.serverless.billing import CostLedger, PriceTable, make_record


def test_one_gb_second_costs_the_lambda_price_plus_one_request() -> None:
    prices = PriceTable()
    assert prices.cost(1000, 1024) == pytest.approx(0.0000166667 + 0.20 / 1e6)
    assert prices.cost(500, 2048, requests=0) == pytest.approx(0.0000166667)


def test_billed_time_rounds_up_to_the_granularity_and_includes_init() -> None:
    assert PriceTable().billed_ms(10.2) == 11
    assert PriceTable(granularity_ms=100).billed_ms(10.2) == 100
    assert PriceTable().billed_ms(10.0, init_ms=250.4) == 261
    assert PriceTable(bill_init=False).billed_ms(10.0, init_ms=250.4) == 10


def test_record_and_ledger_totals_by_phase() -> None:
    prices = PriceTable()
    cold = make_record(prices, function="f", memory_mb=1769, duration_ms=99.5, init_ms=400, cold=True)
    warm = make_record(
        prices, function="f", memory_mb=1769, duration_ms=50, init_ms=0, cold=False, status="killed"
    )
    assert cold.billed_ms == 500 and warm.billed_ms == 50
    assert cold.cost_usd == pytest.approx(prices.cost(500, 1769))
    ledger = CostLedger()
    ledger.add([cold], phase="profile")
    ledger.add([warm], phase="train")
    assert ledger.totals().invocations == 2
    assert ledger.totals("profile").cold_starts == 1
    assert ledger.totals("train").failures == 1
    assert ledger.cost_usd == pytest.approx(cold.cost_usd + warm.cost_usd)
    assert ledger.totals().gb_seconds == pytest.approx(0.55 * 1769 / 1024)
