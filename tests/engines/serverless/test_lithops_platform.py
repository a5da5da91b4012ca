"""The same `FunctionPlatform` interface over Lithops' localhost backend (skipped without lithops)."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from siegecraft.engines.serverless import probes
from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.redis_server import RedisHandle
from siegecraft.engines.serverless.runner import build_platform, provision_store
from siegecraft.engines.serverless.store import connect

from .conftest import run_out_of_memory_plan

# `make test` sets SIEGECRAFT_REQUIRE_LITHOPS (lithops is in `.[dev]`): there a missing lithops is a failure, not a skip.
if os.environ.get("SIEGECRAFT_REQUIRE_LITHOPS"):
    lithops = importlib.import_module("lithops")
else:
    lithops = pytest.importorskip("lithops")


@pytest.fixture(scope="module")
def lithops_platform() -> Iterator:
    from siegecraft.engines.serverless.lithops_platform import LithopsPlatform

    with LithopsPlatform(concurrency=4) as p:
        yield p


def test_lithops_invocations_return_results_and_billing_records(lithops_platform) -> None:
    results = lithops_platform.map(probes.echo, [1, {"a": 2}], memory_mb=1024, timeout_s=60)
    assert [r.result for r in results] == [1, {"a": 2}]
    for r in results:
        assert r.ok and r.billing.memory_mb == 1024 and r.billing.billed_ms >= 1 and r.billing.cost_usd > 0
    bad = lithops_platform.invoke(probes.fail, "boom", 1024, 60)
    assert bad.kind == "error" and "boom" in bad.error


def test_lithops_functions_reach_the_embedded_store(
    lithops_platform, memory_server: MemoryStoreServer
) -> None:
    inv = lithops_platform.invoke(probes.store_put, (memory_server.spec, "t/lithops", b"ok"), 1024, 60)
    assert inv.ok and inv.result == 2, inv.error
    with connect(memory_server.spec) as store:
        assert store.get("t/lithops") == b"ok"
        store.delete(["t/lithops"])


def test_lithops_config_passes_through_with_local_defaults() -> None:
    from siegecraft.engines.serverless.lithops_platform import lithops_config

    aws = lithops_config(
        {"lithops": {"backend": "aws_lambda"}, "aws": {"region": "eu-west-1"}}, "localhost", "localhost", 8
    )
    assert aws["lithops"]["backend"] == "aws_lambda" and aws["aws"] == {"region": "eu-west-1"}
    assert "localhost" not in aws
    local = lithops_config(None, "localhost", "localhost", 8)
    assert local["localhost"]["worker_processes"] == 8


def test_lithops_enforces_the_memory_tier_like_the_emulator(lithops_platform) -> None:
    within = lithops_platform.invoke(probes.allocate, 10, 512, 60)
    assert within.ok and 0 < within.billing.max_memory_used_mb <= 512, within.error
    over = lithops_platform.invoke(probes.allocate, 600, 512, 60)
    assert over.kind == "memory" and over.billing.status == "memory", over.error
    assert re.fullmatch(r"out of memory: peak \d+ MB > 512 MB tier", over.error)
    assert over.billing.max_memory_used_mb > 512


def test_lithops_out_of_memory_role_is_attempted_twice_and_fails_naming_why(lithops_platform) -> None:
    message, bills = run_out_of_memory_plan(lithops_platform, "oom-lithops")
    assert len(bills) == 2 and all(b.status == "memory" for b in bills)
    assert re.search(r"out of memory: peak \d+ MB > 128 MB tier; not retried: a deterministic failure", message)


def test_backend_and_redis_url_pass_through_to_lithops_and_its_functions(redis_server: RedisHandle) -> None:
    lithops_cfg = {"lithops": {"backend": "localhost", "storage": "localhost"}, "localhost": {"worker_processes": 3}}
    cfg = ServerlessConfig(platform="lithops", store="redis", redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
                           lithops=lithops_cfg)  # fmt: skip
    lease = provision_store(cfg)
    assert lease.spec == redis_server.spec and lease.redis is None  # the given Redis, none started
    with build_platform(cfg) as platform:
        assert platform._executor.backend == "localhost"
        assert platform.config["localhost"]["worker_processes"] == 3  # the user's value, not the default
        inv = platform.invoke(probes.store_put, (lease.spec, "t/lithops-redis", b"via redis_url"), 1024, 60)
        assert inv.ok and inv.result == len(b"via redis_url"), inv.error
    with connect(lease.spec) as store:
        assert store.get("t/lithops-redis") == b"via redis_url"
        store.delete(["t/lithops-redis"])


def test_config_passes_a_cloud_backend_untouched_and_refuses_what_cannot_work_off_this_machine() -> None:
    from siegecraft.engines.serverless.lithops_platform import lithops_config

    cloud = {"lithops": {"backend": "aws_lambda", "storage": "aws_s3"}, "aws": {"region": "eu-west-1"},
             "aws_lambda": {"execution_role": "arn:aws:iam::1:role/lithops"}}  # fmt: skip
    cfg = ServerlessConfig(platform="lithops", store="redis", redis_url="redis://redis.internal:6379/2", lithops=cloud)
    assert cfg.lithops_backend == "aws_lambda" and cfg.lithops == cloud
    passed = lithops_config(cfg.lithops, "localhost", "localhost", 4)
    assert passed["lithops"]["backend"] == "aws_lambda" and passed["aws_lambda"] == cloud["aws_lambda"]
    with pytest.raises(ValidationError, match=r"\[serverless.lithops.lithops\] backend = 'aws_lambda'"):
        ServerlessConfig(platform="lithops", lithops={"backend": "aws_lambda"})
    with pytest.raises(ValidationError, match="'k8s' runs functions off this machine.*redis_url"):
        ServerlessConfig(platform="lithops", store="redis", lithops={"lithops": {"backend": "k8s"}})
