"""Job time and cost per design from a measured per-iteration time, start-up and the providers' billing.

All designs run the same synchronous SGD (same global batch, same trajectory), so they need the same
number of iterations to reach a target accuracy; they differ in seconds per iteration, in start-up and
in what is billed:

- `smlt`, `lambdaml`: n functions for the whole job (cold start billed as Lambda bills INIT), one more
  invocation per worker each time the 15-minute limit comes round (each costs a warm re-invocation);
  plus, when `bill_store`, the store's server VM from its boot to the end.
- `cirrus`: the same functions plus the parameter-server VM from its boot to the end, always.
- `fixed_cluster`: n worker VMs billed per second from boot to the end (boot in parallel with the
  store's, no cold starts, no time limit); plus the store's server VM when `bill_store`.

The server (store or parameter server) boots before the workers can start; function workers then pay
their cold start (and data download), VM workers their data download after booting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from siegecraft.engines.serverless.baselines.vm_prices import C5_2XLARGE, C5_LARGE, VM_BOOT_S, VmType
from siegecraft.engines.serverless.billing import AWS_LAMBDA_X86, PriceTable

DESIGNS = ("smlt", "lambdaml", "cirrus", "fixed_cluster")
FUNCTION_DESIGNS = ("smlt", "lambdaml", "cirrus")
STORE_DESIGNS = ("smlt", "lambdaml", "fixed_cluster")


@dataclass(frozen=True)
class Assumptions:
    """Everything in a job's time and cost that is not measured on this machine."""

    prices: PriceTable = AWS_LAMBDA_X86
    worker_vm: VmType = C5_LARGE
    server_vm: VmType = C5_2XLARGE
    vm_boot_s: float = VM_BOOT_S
    bill_store: bool = True  # the store-based designs rent their store server as Cirrus rents its PS
    invocation_limit_s: float = 900.0  # Lambda's maximum duration: workers re-invoke themselves this often
    checkpoint_margin_s: float = 2.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["prices"] = self.prices.model_dump()
        return out


@dataclass(frozen=True)
class StartUp:
    """Measured start-up: a function worker's cold start with its data download (`function_s`), a warm
    re-invocation (`warm_restart_s`) and a VM worker's data download after boot (`vm_data_s`)."""

    function_s: float
    warm_restart_s: float
    vm_data_s: float


@dataclass
class Estimate:
    """Time to target and dollar cost of one design, with the parts they are made of."""

    design: str
    workers: int
    iter_s: float
    time_s: float
    cost_usd: float
    parts: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(
    design: str,
    *,
    workers: int,
    memory_mb: int,
    iterations: int,
    iter_s: float,
    startup: StartUp,
    assumptions: Assumptions = Assumptions(),
    servers: int = 1,
) -> Estimate:
    """Time and cost of `iterations` iterations at `iter_s` seconds each, with start-up and billing;
    `servers` server VMs (a store sharded over several nodes) where the design has a server."""
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    a = assumptions
    train_s = iterations * iter_s
    server = design == "cirrus" or (a.bill_store and design in STORE_DESIGNS)
    server_boot = a.vm_boot_s if server else 0.0
    parts: dict[str, float] = {"train_s": train_s}
    if design in FUNCTION_DESIGNS:
        per_invocation = a.invocation_limit_s - a.checkpoint_margin_s
        invocations = max(1, math.ceil((startup.function_s + train_s) / per_invocation))
        restarts_s = (invocations - 1) * startup.warm_restart_s
        worker_s = startup.function_s + train_s + restarts_s
        time_s = server_boot + worker_s
        billed_ms = math.ceil(worker_s * 1000.0)
        workers_usd = workers * (a.prices.cost(billed_ms, memory_mb, requests=invocations))
        parts.update(
            startup_s=server_boot + startup.function_s,
            restarts_s=restarts_s,
            invocations_per_worker=invocations,
            workers_usd=workers_usd,
        )
    else:
        boot = max(a.vm_boot_s, server_boot)
        time_s = boot + startup.vm_data_s + train_s
        workers_usd = workers * a.worker_vm.cost(time_s)
        parts.update(startup_s=boot + startup.vm_data_s, workers_usd=workers_usd)
    server_usd = servers * a.server_vm.cost(time_s) if server else 0.0
    parts.update(server_usd=server_usd, servers=servers if server else 0)
    return Estimate(design, workers, iter_s, time_s, workers_usd + server_usd, parts)


def fit_linear(ns: list[int], values: list[float]) -> tuple[float, float]:
    """Least-squares (a, b) of value = a + b n over the measured points (b >= 0; O(n) designs grow)."""
    if len(ns) == 1:
        return values[0], 0.0
    mean_n, mean_v = sum(ns) / len(ns), sum(values) / len(values)
    var = sum((n - mean_n) ** 2 for n in ns)
    b = max(0.0, sum((n - mean_n) * (v - mean_v) for n, v in zip(ns, values)) / var)
    return mean_v - b * mean_n, b
