"""SMLT: data-parallel training on serverless functions under a deadline or a budget.

Function platforms (`emulated`, `lithops`) behind one `FunctionPlatform.invoke` interface with billing
records; parameter stores (`memory`, `redis`); scatter-reduce synchronisation with every piece of state in
the store (so invocations are bounded, re-runnable and a killed driver resumes); a Bayesian scheduler
that picks workers, memory and batch size every epoch; and the cost ledger and figures of a run.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the module that defines each; imported on first use so that a function container
# importing one submodule (say `worker` or `probes`) does not pay for all of them.
_EXPORTS = {
    "AWS_LAMBDA_ARM": "billing",
    "AWS_LAMBDA_X86": "billing",
    "BayesianScheduler": "scheduler",
    "BillingRecord": "billing",
    "Config": "specs",
    "CostLedger": "billing",
    "Decision": "scheduler",
    "EmulatedPlatform": "emulated",
    "FixedScheduler": "scheduler",
    "FunctionPlatform": "platform",
    "GroundTruth": "simulate",
    "Invocation": "platform",
    "InvocationContext": "context",
    "InvocationFailed": "platform",
    "JobFailed": "job",
    "JobSpec": "specs",
    "LithopsPlatform": "lithops_platform",
    "Measurement": "measurement",
    "MemoryStore": "memory_store",
    "MemoryStoreServer": "memory_store",
    "PLATFORMS": "platform",
    "PerformanceModel": "perf_model",
    "PlanSpec": "specs",
    "PriceTable": "billing",
    "RedisHandle": "redis_server",
    "RedisStore": "redis_store",
    "STORES": "store",
    "SearchSpace": "scheduler",
    "ServerlessConfig": "config",
    "ServerlessResult": "runner",
    "SimulatedExecutor": "simulate",
    "Store": "store",
    "StoreSpec": "store",
    "TrainingJob": "job",
    "connect": "store",
    "list_redis": "redis_server",
    "make_platform": "platform",
    "run_serverless": "runner",
    "start_redis": "redis_server",
    "stop_redis": "redis_server",
    "train_serverless": "runner",
}

__all__ = [
    "AWS_LAMBDA_ARM",
    "AWS_LAMBDA_X86",
    "PLATFORMS",
    "STORES",
    "BayesianScheduler",
    "BillingRecord",
    "Config",
    "CostLedger",
    "Decision",
    "EmulatedPlatform",
    "FixedScheduler",
    "FunctionPlatform",
    "GroundTruth",
    "Invocation",
    "InvocationContext",
    "InvocationFailed",
    "JobFailed",
    "JobSpec",
    "LithopsPlatform",
    "Measurement",
    "MemoryStore",
    "MemoryStoreServer",
    "PerformanceModel",
    "PlanSpec",
    "PriceTable",
    "RedisHandle",
    "RedisStore",
    "SearchSpace",
    "ServerlessConfig",
    "ServerlessResult",
    "SimulatedExecutor",
    "Store",
    "StoreSpec",
    "TrainingJob",
    "connect",
    "list_redis",
    "make_platform",
    "run_serverless",
    "start_redis",
    "stop_redis",
    "train_serverless",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"siegecraft.serverless.{_EXPORTS[name]}"), name)
