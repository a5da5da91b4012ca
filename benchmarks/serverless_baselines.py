"""SMLT vs its comparison baselines on the same job, to the same target accuracy: time and cost.

Run: PYTHONPATH=src .venv/bin/python benchmarks/serverless_baselines.py [--quick]
     (writes benchmarks/results/serverless_baselines.json)

Designs (src/siegecraft/engines/serverless/baselines/): SMLT scatter-reduce; LambdaML-style all-reduce
through one designated worker; Cirrus-style parameter-server process; a fixed cluster of VMs running the
same scatter-reduce. All are synchronous data-parallel SGD with the same global batch, so they follow
the same trajectory (tests/engines/serverless/baselines/test_trajectories.py checks the weights agree):
one epochs-to-target, measured once, serves all of them.

1. Epochs to target (measured): plain torch SGD, the cnn on Fashion-MNIST, global batch n x b, until the
   test accuracy reaches the target (the serverless runs compute exactly these iterations).
2. Compute (measured): gradient seconds of one worker's batch in a 1,769 MB function (one vCPU).
3. Synchronisation (measured): per-iteration time of every design on the emulated platform with
   synthetic gradients, n = 2, 4, 8, designs alternated in each repeat, median over repeats. Functions
   get the Lambda-like 75 MB/s link; VM workers their instance's baseline bandwidth.
4. Start-up (measured): a cold SMLT plan on real Fashion-MNIST (spawned containers: interpreter, torch,
   data download at 75 MB/s); a warm re-invocation. VM boot and VM data download are assumptions.
5. Job time and cost per design = start-up + iterations x (compute + sync) with each design's billing
   (`costing`); for n beyond this machine, sync is extrapolated by a fit a + b n to the measurements
   (modelled, labelled so), with and without a server network-bandwidth bound.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siegecraft.core.models import build_model, flat_params, num_params
from siegecraft.engines.serverless import data_blob, probes
from siegecraft.engines.serverless.baselines.cirrus import run_cirrus
from siegecraft.engines.serverless.baselines.common import BaselineRun
from siegecraft.engines.serverless.baselines.costing import (
    DESIGNS,
    Assumptions,
    Estimate,
    StartUp,
    estimate,
    fit_linear,
)
from siegecraft.engines.serverless.baselines.fixed_cluster import cluster_platform, run_fixed_cluster
from siegecraft.engines.serverless.baselines.lambdaml import run_lambdaml
from siegecraft.engines.serverless.baselines.parameter_server import ParameterServer
from siegecraft.engines.serverless.baselines.vm_prices import C5_LARGE
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.job import TrainingJob
from siegecraft.engines.serverless.memory_store import MemoryStoreServer
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import Store, StoreSpec, connect

PRELOAD = (
    "torch",
    "siegecraft.engines.serverless.worker",
    "siegecraft.engines.serverless.baselines.cirrus",
    "siegecraft.engines.serverless.baselines.lambdaml",
)
NETWORK_MB_S = 75.0  # per-function link, as benchmarks/serverless.py (~600 Mbit/s, a measured Lambda figure)
MEMORY_MB = 1769  # one vCPU
OUT = Path(__file__).resolve().parent / "results" / "serverless_baselines.json"
PAPER = "SMLT (arXiv 2205.01853): up to 8x faster and 3x cheaper than Siren, Cirrus and VM-based training"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _cnn() -> torch.nn.Module:
    return build_model("cnn", in_channels=1, num_classes=10, image_size=28)


# -- 1. epochs to target ------------------------------------------------------------------------------------
def epochs_to_target(
    train: Any,
    test: Any,
    *,
    global_batch: int,
    lr: float,
    momentum: float,
    target: float,
    max_epochs: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Epochs of synchronous SGD at `global_batch` until test accuracy >= `target` (None if never)."""
    torch.manual_seed(seed)
    model = _cnn()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    curve, reached = [], None
    for epoch in range(max_epochs):
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(train.y)))
        model.train()
        for start in range(0, len(order) - global_batch + 1, global_batch):
            idx = order[start : start + global_batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(train.x[idx]), train.y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(test.x[i : i + 2000]).argmax(1) == test.y[i : i + 2000]).sum())
                for i in range(0, len(test.y), 2000)
            )
        curve.append(correct / len(test.y))
        log(f"epochs-to-target: epoch {epoch + 1} test accuracy {curve[-1]:.4f}")
        if curve[-1] >= target:
            reached = epoch + 1
            break
    return {
        "target_accuracy": target,
        "epochs": reached,
        "accuracy_per_epoch": curve,
        "global_batch": global_batch,
        "lr": lr,
        "momentum": momentum,
        "max_epochs": max_epochs,
    }


# -- 2. compute ---------------------------------------------------------------------------------------------
def compute_seconds(platform: EmulatedPlatform, batch: int, rounds: int) -> dict[str, Any]:
    times: list[float] = []
    for _ in range(rounds):
        times += platform.invoke(probes.gradient_seconds, {"batch": batch, "reps": 3}, MEMORY_MB, 120).value()
    return {"median_s": statistics.median(times), "min_s": min(times), "all_s": times}


# -- 3. synchronisation -------------------------------------------------------------------------------------
class SyncBench:
    """Runs each design with synthetic gradients (synchronisation only) on warm workers."""

    def __init__(
        self,
        store_spec: StoreSpec,
        store: Store,
        functions: EmulatedPlatform,
        cluster: EmulatedPlatform,
        server: ParameterServer,
        iterations: int,
    ) -> None:
        self.spec_base, self.store, self.functions, self.cluster = store_spec, store, functions, cluster
        self.server, self.iterations = server, iterations
        self.p = num_params(_cnn())
        self.init = np.full(self.p, 0.01, dtype=np.float32)
        self.x, self.y = torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.int64)
        self.runs = 0

    def _spec(self, design: str, n: int) -> JobSpec:
        self.runs += 1
        return JobSpec(
            f"sync-{design}-{n}-{self.runs}",
            self.spec_base,
            "cnn",
            1,
            10,
            28,
            1,
            self.p,
            synthetic_gradients=True,
        )

    def run(self, design: str, n: int) -> dict[str, Any]:
        spec, cfg, its = self._spec(design, n), Config(n, MEMORY_MB, 1), self.iterations
        kw = {"x": self.x, "y": self.y, "init_weights": self.init}
        if design == "smlt":
            job = TrainingJob(spec, self.store, self.functions, sync_timeout_s=120)
            job.initialize(self.x, self.y, self.init)
            job.execute(cfg, epoch=0, epoch_offset=0, iterations=1, phase="warm-up")
            m = job.execute(cfg, epoch=1, epoch_offset=0, iterations=its, phase="measure")
            job.cleanup()
            return {
                "iter_s": m.iter_s,
                "busiest_worker_bytes_per_iter": m.busiest_role_bytes,
                "server_bytes_per_iter": m.bytes_per_worker * n,
            }
        if design == "fixed_cluster":
            run: BaselineRun = run_fixed_cluster(spec, self.store, self.cluster, n, 1, its, warm_up=1, **kw)
            self.store.delete_prefix(spec.job + "/")
            return {
                "iter_s": run.iter_s,
                "busiest_worker_bytes_per_iter": run.busiest_worker_bytes_per_iter,
                "server_bytes_per_iter": run.busiest_worker_bytes_per_iter * n,
            }
        if design == "lambdaml":
            run = run_lambdaml(spec, self.store, self.functions, cfg, its, sync_timeout_s=120, **kw)
            moved = sum(r["bytes_sent"] + r["bytes_received"] for r in run.reports) / its
        else:
            run = run_cirrus(
                spec, self.store, self.functions, self.server, cfg, its, sync_timeout_s=120, **kw
            )
            moved = run.server_bytes_per_iter
        self.store.delete_prefix(spec.job + "/")
        return {
            "iter_s": run.iter_s,
            "busiest_worker_bytes_per_iter": run.busiest_worker_bytes_per_iter,
            "server_bytes_per_iter": moved,
        }


def bench_sync(bench: SyncBench, ns: tuple[int, ...], repeats: int) -> dict[str, dict[str, Any]]:
    """Per design and n: the median iteration time over `repeats` (designs alternated within a repeat)."""
    for n in ns:  # warm every design's containers at every n once (cold starts are measured separately)
        for design in DESIGNS:
            bench.run(design, n)
    samples: dict[str, dict[int, list[dict[str, Any]]]] = {d: {n: [] for n in ns} for d in DESIGNS}
    for rep in range(repeats):
        for n in ns:
            for design in DESIGNS:
                samples[design][n].append(bench.run(design, n))
            log(
                f"sync repeat {rep + 1} n={n}: "
                + ", ".join(f"{d} {samples[d][n][-1]['iter_s'] * 1e3:.0f} ms" for d in DESIGNS)
            )
    out: dict[str, dict[str, Any]] = {}
    for design in DESIGNS:
        out[design] = {}
        for n in ns:
            rows = sorted(samples[design][n], key=lambda r: r["iter_s"])
            med = rows[len(rows) // 2]
            out[design][str(n)] = {**med, "iter_s_all": [r["iter_s"] for r in samples[design][n]]}
    return out


# -- 4. start-up --------------------------------------------------------------------------------------------
def function_startup(store_spec: StoreSpec, store: Store, train: Any, batch: int) -> dict[str, Any]:
    """A cold SMLT plan of 2 workers on real data with spawned containers: cold start + data download."""
    torch.manual_seed(0)
    init = flat_params(_cnn()).numpy()
    out: dict[str, Any] = {}
    with EmulatedPlatform(start_method="spawn", preload=PRELOAD, network_mb_s=NETWORK_MB_S) as platform:
        spec = JobSpec("startup", store_spec, "cnn", 1, 10, 28, len(train.y), init.size)
        job = TrainingJob(spec, store, platform)
        job.initialize(train.x, train.y, init)
        m = job.execute(Config(2, MEMORY_MB, batch), epoch=0, epoch_offset=0, iterations=3, phase="cold")
        out["cold_plan_startup_s"] = m.startup_s
        out["cold_init_ms"] = [r.init_ms for _, r in job.ledger.entries if r.cold]
        warm = []
        for _ in range(5):
            t0 = time.perf_counter()
            platform.invoke(probes.echo, 0, MEMORY_MB, 30)
            warm.append(time.perf_counter() - t0)
        out["warm_invoke_s"] = statistics.median(warm)
        job.cleanup()
    blobs = data_blob.pack(train.x, train.y)
    out["data_bytes"] = sum(len(v) for v in blobs.values())
    return out


# -- 5. time and cost ---------------------------------------------------------------------------------------
def compare(
    iter_s: dict[str, float],
    *,
    n: int,
    iterations: int,
    startup: StartUp,
    assumptions: Assumptions,
    servers: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Estimates per design and the ratios against SMLT (speedup = baseline time / SMLT time), for this
    job and, as `long_job_*`, for the same per-iteration times over 1000x the iterations (where start-up
    no longer counts: the steady-state ratio a long job approaches)."""

    def run(d: str, its: int) -> Estimate:
        return estimate(d, workers=n, memory_mb=MEMORY_MB, iterations=its, iter_s=iter_s[d], startup=startup,
                        assumptions=assumptions, servers=(servers or {}).get(d, 1))  # fmt: skip

    est = {d: run(d, iterations) for d in DESIGNS}
    long = {d: run(d, 1000 * iterations) for d in DESIGNS}
    smlt = est["smlt"]
    ratios = {
        d: {
            "speedup": est[d].time_s / smlt.time_s,
            "cost_ratio": est[d].cost_usd / smlt.cost_usd,
            "baseline_time_s": est[d].time_s,
            "baseline_cost_usd": est[d].cost_usd,
            "smlt_time_s": smlt.time_s,
            "smlt_cost_usd": smlt.cost_usd,
            "long_job_speedup": long[d].time_s / long["smlt"].time_s,
            "long_job_cost_ratio": long[d].cost_usd / long["smlt"].cost_usd,
        }
        for d in DESIGNS
        if d != "smlt"
    }
    return {
        "workers": n,
        "iterations": iterations,
        "estimates": {d: e.to_dict() for d, e in est.items()},
        "vs_baselines": ratios,
    }


def _ratios(comparison: dict[str, Any]) -> dict[str, dict[str, float]]:
    keys = ("speedup", "cost_ratio", "long_job_speedup", "long_job_cost_ratio")
    return {d: {k: r[k] for k in keys} for d, r in comparison["vs_baselines"].items()}


def measure(
    *,
    workers: tuple[int, ...] = (2, 4, 8),
    batch: int = 64,
    iterations: int = 10,
    repeats: int = 5,
    target_accuracy: float = 0.88,
    max_epochs: int = 12,
    lr: float = 0.1,
    momentum: float = 0.9,
    modelled_workers: tuple[int, ...] = (16, 32, 64, 150),
    quick: bool = False,
) -> dict[str, Any]:
    """Everything above; the headline compares all designs at the largest measured n (a fixed config:
    n x 1,769 MB x batch `batch` for every design, so the global batch and trajectory are the same)."""
    from siegecraft.core.data.datasets import load_dataset

    started = time.perf_counter()
    n_head = max(workers)
    train, test = load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test")
    ett = epochs_to_target(
        train,
        test,
        global_batch=n_head * batch,
        lr=lr,
        momentum=momentum,
        target=target_accuracy,
        max_epochs=max_epochs,
    )
    with MemoryStoreServer() as store_server, connect(store_server.spec) as store:
        with (
            EmulatedPlatform(preload=PRELOAD, network_mb_s=NETWORK_MB_S, concurrency=64) as functions,
            cluster_platform(C5_LARGE, preload=PRELOAD) as cluster,
            ParameterServer(wait_s=120) as server,
        ):
            compute = compute_seconds(functions, batch, rounds=3 if quick else 5)
            log(f"compute: {compute['median_s'] * 1e3:.1f} ms per batch of {batch}")
            sync = bench_sync(
                SyncBench(store_server.spec, store, functions, cluster, server, iterations), workers, repeats
            )
            server_pid = server.process.pid
        start = function_startup(store_server.spec, store, train, batch)
    assumptions = Assumptions()
    startup = StartUp(
        function_s=start["cold_plan_startup_s"],
        warm_restart_s=start["warm_invoke_s"],
        vm_data_s=start["data_bytes"] / (assumptions.worker_vm.network_mb_s * 1e6),
    )
    epochs = ett["epochs"] if ett["epochs"] is not None else max_epochs
    its_per_epoch = {n: len(train.y) // (n * batch) for n in (*workers, *modelled_workers)}
    per_iter = {n: {d: compute["median_s"] + sync[d][str(n)]["iter_s"] for d in DESIGNS} for n in workers}
    measured = {}
    for bill_store in (True, False):
        a = Assumptions(bill_store=bill_store)
        measured["store_billed" if bill_store else "store_unbilled"] = {
            str(n): compare(
                per_iter[n], n=n, iterations=epochs * its_per_epoch[n], startup=startup, assumptions=a
            )
            for n in workers
        }
    # modelled: sync = a + b n fitted per design; optionally bounded below by the server's network link
    fits = {d: fit_linear(list(workers), [sync[d][str(n)]["iter_s"] for n in workers]) for d in DESIGNS}
    per_worker_server_bytes = {d: sync[d][str(n_head)]["server_bytes_per_iter"] / n_head for d in DESIGNS}
    modelled: dict[str, Any] = {
        "fits_sync_s": {d: {"a": a0, "b_per_worker": b} for d, (a0, b) in fits.items()},
        "server_bytes_per_worker_per_iter": per_worker_server_bytes,
    }
    link = assumptions.server_vm.network_mb_s * 1e6
    # loopback_servers: as measured, no server link limits anyone; one_server_nic: the store and the
    # parameter server are one VM each, at its baseline link; scalable_store: the store scales out (sharded
    # Redis, S3) with as many store VMs billed as its traffic needs, Cirrus keeps its single server
    bounded = {"loopback_servers": (), "one_server_nic": DESIGNS, "scalable_store": ("cirrus",)}
    for variant, limited in bounded.items():
        rows = {}
        for n in modelled_workers:
            its, servers = {}, {}
            for d in DESIGNS:
                s = fits[d][0] + fits[d][1] * n
                need = per_worker_server_bytes[d] * n / link
                if d in limited:
                    s = max(s, need)
                its[d] = compute["median_s"] + s
                scaled = variant != "loopback_servers" and d not in limited
                servers[d] = max(1, math.ceil(need / its[d])) if scaled else 1
            rows[str(n)] = compare(
                its,
                n=n,
                iterations=epochs * its_per_epoch[n],
                startup=startup,
                assumptions=assumptions,
                servers=servers,
            )
        modelled[variant] = rows
    head = measured["store_billed"][str(n_head)]
    result: dict[str, Any] = {
        "vs_baselines": _ratios(head),
        "vs_baselines_store_unbilled": _ratios(measured["store_unbilled"][str(n_head)]),
        "headline": {
            "workers": n_head,
            "memory_mb": MEMORY_MB,
            "batch_size": batch,
            "smlt_config": f"fixed {n_head}x{MEMORY_MB}MB/b{batch} for every design (the largest n "
            "this 2-core machine runs; not a planner choice)",
            "times_s": {d: e["time_s"] for d, e in head["estimates"].items()},
            "costs_usd": {d: e["cost_usd"] for d, e in head["estimates"].items()},
            "iter_s": per_iter[n_head],
        },
        "target_accuracy": target_accuracy,
        "epochs_to_target": ett["epochs"],
        "epochs_to_target_detail": ett,
        "iterations_to_target": {str(n): epochs * its_per_epoch[n] for n in (*workers, *modelled_workers)},
        "compute": compute,
        "sync_measured": sync,
        "startup": start,
        "measured": measured,
        "modelled": modelled,
        "assumptions": {
            **assumptions.to_dict(),
            "function_network_mb_s": NETWORK_MB_S,
            "function_memory_mb": MEMORY_MB,
            "server_link_in_measurements": "none: the store and the parameter server run on loopback alike",
            "iteration_time": (
                "compute (measured once, real gradient, 1 vCPU) + synchronisation (measured, synthetic"
                " gradients); VM workers compute on one thread like the 1-vCPU function"
            ),
            "epochs_to_target": (
                f"measured once at global batch {n_head * batch}; reused for every design (same"
                " trajectory) and, as an assumption, for the other n"
            ),
            "function_startup": (
                "measured: cold SMLT plan with spawned containers (interpreter + torch import +"
                " data download at 75 MB/s); LambdaML and Cirrus workers start the same way"
            ),
            "server": (
                "the store (SMLT, LambdaML, fixed cluster) or parameter server (Cirrus) boots before"
                " workers start and is billed from boot to"
                " the end; store_unbilled drops the store's VM and boot"
            ),
            "vm_boot_s": f"{assumptions.vm_boot_s} s, assumed (launch to a running training environment)",
            "vm_data_s": "data bytes / the worker VM's baseline link (modelled)",
            "no_failures": "no failures or retries assumed in any design",
            "paper_claim": PAPER,
        },
        "provenance": {
            "measured": [
                "epochs_to_target",
                "compute",
                f"sync_measured (emulated functions, n = {', '.join(map(str, workers))})",
                "startup",
            ],
            "modelled": [
                "job time and cost (costing.estimate from the measured parts)",
                f"modelled: n = {', '.join(map(str, modelled_workers))} from the a + b n fits",
            ],
            "parameter_server_pid": server_pid,
            "machine": f"{torch.get_num_threads()} torch threads, python {sys.version.split()[0]}",
            "quick": quick,
        },
        "wall_s": time.perf_counter() - started,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one repeat, n = 2 and 4, few epochs (a smoke run)"
    )
    args = parser.parse_args()
    if args.quick:
        result = measure(
            workers=(2, 4), iterations=5, repeats=1, max_epochs=2, target_accuracy=0.8, quick=True
        )
    else:
        result = measure()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    path = OUT.with_name("serverless_baselines_quick.json") if args.quick else OUT
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {path}")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "vs_baselines",
                    "vs_baselines_store_unbilled",
                    "headline",
                    "epochs_to_target",
                    "target_accuracy",
                    "wall_s",
                )
            },
            indent=2,
        )
    )
    if not all(math.isfinite(r["speedup"]) for r in result["vs_baselines"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
