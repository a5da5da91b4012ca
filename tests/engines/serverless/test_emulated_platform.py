"""The emulated FaaS: cold/warm containers, keep-alive, limits, CPU share, concurrency, faults."""

from __future__ import annotations

import re
import time

import pytest

from siegecraft.engines.serverless import probes
from siegecraft.engines.serverless.emulated import EmulatedPlatform

from .conftest import PRELOAD


def test_cold_start_is_billed_then_the_container_stays_warm(platform: EmulatedPlatform) -> None:
    first = platform.invoke(probes.whoami, "a", 1769, 10)
    second = platform.invoke(probes.whoami, "b", 1769, 10)
    assert first.ok and second.ok
    assert first.billing.cold and first.billing.init_ms > 0
    assert first.billing.billed_ms >= first.billing.init_ms
    assert not second.billing.cold and second.billing.init_ms == 0
    assert first.result["pid"] == second.result["pid"]
    assert second.result == {**second.result, "memory_mb": 1769, "timeout_s": 10, "payload": "b"}


def test_keep_alive_expiry_forces_a_new_cold_container() -> None:
    with EmulatedPlatform(preload=PRELOAD, keep_alive_s=0.2) as p:
        a = p.invoke(probes.whoami, None, 1024, 10)
        time.sleep(0.5)
        b = p.invoke(probes.whoami, None, 1024, 10)
        assert b.billing.cold and a.result["pid"] != b.result["pid"]
        assert p.stats.cold_starts == 2


def test_threads_follow_memory_and_small_tiers_get_a_cpu_share() -> None:
    p = EmulatedPlatform(preload=PRELOAD, max_threads=8)
    try:
        assert [p.threads_for(m) for m in (128, 1769, 3538, 10240)] == [1, 1, 2, 5]
        assert p.cpu_share(442) == pytest.approx(0.25, rel=0.01) and p.cpu_share(3538) == 1.0
        assert p.address_limit_mb(512) is None and p.address_limit_mb(2048) == 2048
    finally:
        p.close()


def test_a_quarter_vcpu_tier_runs_cpu_work_at_most_at_a_quarter_speed(platform: EmulatedPlatform) -> None:
    inv = platform.invoke(probes.spin, 0.1, 442, 30)
    assert inv.ok
    assert inv.result >= 0.3  # 0.1 s of CPU at a 25% duty cycle needs >= 0.4 s of wall time (+ slack)
    assert inv.billing.duration_ms >= 300


def test_timeout_kills_the_invocation_and_bills_the_limit(platform: EmulatedPlatform) -> None:
    inv = platform.invoke(probes.sleep, 30, 1024, 0.3)
    assert inv.kind == "timeout" and not inv.ok
    assert 300 <= inv.billing.duration_ms < 5000
    with pytest.raises(Exception, match="timeout"):
        inv.value()
    again = platform.invoke(probes.sleep, 0, 1024, 5)
    assert again.ok and again.billing.cold  # the killed container was not reused


def test_peak_rss_over_a_small_tier_fails_the_invocation(platform: EmulatedPlatform) -> None:
    small = platform.invoke(probes.allocate, 10, 512, 10)
    assert small.ok and 0 < small.billing.max_memory_used_mb <= 512
    big = platform.invoke(probes.allocate, 450, 512, 10)
    assert big.kind == "memory", big.error


def test_address_space_limit_from_one_gib(platform: EmulatedPlatform) -> None:
    inv = platform.invoke(probes.allocate, 1200, 1024, 10)
    assert inv.kind == "memory"


def test_function_errors_are_failed_invocations_and_keep_the_container(platform: EmulatedPlatform) -> None:
    bad = platform.invoke(probes.fail, "boom", 1536, 10)
    assert bad.kind == "error" and "boom" in bad.error
    again = platform.invoke(probes.fail, "again", 1536, 10)
    assert again.kind == "error" and not again.billing.cold


def test_payload_limit_rejects_before_running_and_bills_nothing() -> None:
    with EmulatedPlatform(preload=PRELOAD, payload_limit_bytes=1000) as p:
        inv = p.invoke(probes.echo, b"x" * 2000, 1024, 10)
        assert inv.kind == "payload" and inv.billing.cost_usd == 0
        assert p.stats.cold_starts == 0


def test_limits_outside_the_price_table_are_rejected(platform: EmulatedPlatform) -> None:
    with pytest.raises(ValueError, match="memory_mb"):
        platform.invoke(probes.echo, 1, 64, 10)
    with pytest.raises(ValueError, match="timeout_s"):
        platform.invoke(probes.echo, 1, 1024, 901)


def test_concurrency_cap_queues_excess_invocations() -> None:
    with EmulatedPlatform(preload=PRELOAD, concurrency=2) as p:
        p.map(probes.sleep, [0.0, 0.0], memory_mb=1024, timeout_s=10)  # warm two containers
        start = time.perf_counter()
        results = p.map(probes.sleep, [0.3, 0.3, 0.3, 0.3], memory_mb=1024, timeout_s=10)
        wall = time.perf_counter() - start
        assert [r.result for r in results] == [0.3] * 4
        assert wall >= 0.6  # two waves of two


def test_fault_injection_kills_a_seeded_fraction_and_bills_it() -> None:
    with EmulatedPlatform(preload=PRELOAD, fault_rate=0.3, fault_seed=7) as p:
        results = [p.invoke(probes.echo, i, 1024, 10) for i in range(20)]
    killed = [r for r in results if r.kind == "killed"]
    assert 0 < len(killed) < 20 and len(killed) == p.stats.injected_faults
    assert all(r.billing.billed_ms >= 1 for r in killed)
    assert all(r.result == i for i, r in enumerate(results) if r.ok)


def test_a_spike_between_watchdog_samples_still_fails_the_invocation() -> None:
    # a watchdog that never samples during the call: only the container's final peak reading can catch it
    with EmulatedPlatform(preload=PRELOAD, throttle_cpu=False, watch_interval_ms=60_000) as p:
        assert p.invoke(probes.allocate, 10, 512, 30).ok
        over = p.invoke(probes.allocate, 600, 512, 30)
    assert over.kind == "memory" and re.fullmatch(r"out of memory: peak \d+ MB > 512 MB tier", over.error)
