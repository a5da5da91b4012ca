"""Both stores behave the same, are reachable from function processes, and meter (or cap) traffic."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from siegecraft.engines.serverless import probes
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.redis_server import RedisHandle
from siegecraft.engines.serverless.store import Store, connect


@pytest.fixture(params=["memory", "redis"])
def store(
    request: pytest.FixtureRequest, memory_server: MemoryStoreServer, redis_server: RedisHandle
) -> Iterator[Store]:
    spec = memory_server.spec if request.param == "memory" else redis_server.spec
    with connect(spec) as s:
        s.delete_prefix("t/")
        yield s
        s.delete_prefix("t/")


def test_put_get_many_exists_scan_delete(store: Store) -> None:
    blob = os.urandom(3_000_000) + b"\n\x00end"
    store.put_many({"t/a": b"1", "t/b": blob, "t/c": b""})
    assert store.get("t/a") == b"1" and store.get("t/b") == blob and store.get("t/c") == b""
    assert store.get_many(["t/a", "t/zz", "t/c"]) == [b"1", None, b""]
    assert store.exists(["t/a", "t/b", "t/zz"]) == 2
    assert store.scan("t/") == ["t/a", "t/b", "t/c"]
    assert store.delete(["t/a", "t/zz"]) == 1
    assert store.delete_prefix("t/") == 2 and store.scan("t/") == []


def test_keys_with_newlines_or_globs_are_rejected(store: Store) -> None:
    with pytest.raises(ValueError):
        store.put("t/a\nb", b"x")
    with pytest.raises(ValueError):
        store.put("t/*", b"x")


def test_traffic_is_metered_and_a_bandwidth_cap_slows_transfers(store: Store) -> None:
    payload = b"x" * 2_000_000
    store.put("t/big", payload)
    store.get("t/big")
    assert store.traffic.sent >= 2_000_000 and store.traffic.received >= 2_000_000
    with connect(store.spec, network_mb_s=40) as capped:
        start = time.perf_counter()
        capped.get("t/big")
        assert time.perf_counter() - start >= 0.045  # 2 MB at 40 MB/s


def test_functions_in_other_processes_reach_both_stores(
    platform: EmulatedPlatform, memory_server: MemoryStoreServer, redis_server: RedisHandle
) -> None:
    for spec in (memory_server.spec, redis_server.spec):
        inv = platform.invoke(probes.store_put, (spec, "t/from-function", b"hello" * 1000), 1024, 20)
        assert inv.ok and inv.result == 5000, inv.error
        with connect(spec) as s:
            assert s.get("t/from-function") == b"hello" * 1000
            s.delete(["t/from-function"])
