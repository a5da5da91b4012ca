"""SMLT benchmark: hierarchical vs flat scatter-reduce with n = 16, 32, 64 emulated functions.

Run: PYTHONPATH=src .venv/bin/python benchmarks/serverless_hierarchy.py [--quick]
(writes benchmarks/results/serverless_hierarchy.json)

Measured like section 1 of benchmarks/serverless.py: real emulated functions synchronise through a real
redis-server, with synthetic gradients (g = 1e-3 w, no compute) so only synchronisation is timed; the jobs
of one n run alternately `repeats` times (load from other work hits all of them alike) and each row is the
median. Three ways to synchronise per n:
- `scatter_reduce`: flat, every worker moves O(n) values (n weight shards, n - 1 gradient shards each way);
- `hierarchical`: two levels over groups of g = auto_group_size(n), and one worker per level-1 shard
  gathers the next weights, so every worker reads g weight keys: O(g + G) values;
- `hierarchical_direct`: the same two levels, but every worker reads the n final weight shards (no gather
  step; O(n) reads, one synchronisation round less): the alternative the gather step has to beat.
Both with the emulated per-function link (Lambda-like 75 MB/s) and on raw loopback. Per worker and
iteration: `bytes_per_worker`; `requests_per_worker` = store round trips (one MGET/MSET each, polls for
keys not yet written included); `values_per_worker` = keys written or read (what a per-object store such
as S3 bills as requests: O(n) flat, O(g + G) hierarchical). Memory: the resident
and proportional set sizes (VmRSS, Pss) of all the emulated platform's processes after each n's runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siegecraft.core.models import build_model, num_params
from siegecraft.engines.serverless.emulated import EmulatedPlatform
from siegecraft.engines.serverless.job import TrainingJob
from siegecraft.engines.serverless.layout import auto_group_size
from siegecraft.engines.serverless.observations import Measurement
from siegecraft.engines.serverless.redis_server import RedisHandle, start_redis, stop_redis
from siegecraft.engines.serverless.specs import Config, JobSpec
from siegecraft.engines.serverless.store import Store, connect

PRELOAD = ("torch", "siegecraft.engines.serverless.worker")
NETWORK_MB_S = 75.0  # assumed per-function bandwidth, as in benchmarks/serverless.py
OUT = Path(__file__).resolve().parent / "results" / "serverless_hierarchy.json"
# variant -> (sync, extra PlanSpec fields)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "scatter_reduce": ("scatter_reduce", {}),
    "hierarchical": ("hierarchical", {"gather_weights": True}),
    "hierarchical_direct": ("hierarchical", {"gather_weights": False}),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cnn_params() -> int:
    return num_params(build_model("cnn", in_channels=1, num_classes=10, image_size=28))


def process_memory_mb() -> dict[str, float]:
    """VmRSS and Pss summed over this process's descendants (the forkserver and the containers), in MB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    todo, seen = list(children.get(os.getpid(), [])), []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(children.get(pid, []))
    rss = pss = 0.0
    for pid in seen:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) / 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) / 1024
        except OSError:
            continue
    with open("/proc/meminfo") as fh:
        available = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:")) / 1024
    return {"processes": len(seen), "rss_mb": rss, "pss_mb": pss, "machine_available_mb": available}


def _job(
    platform: EmulatedPlatform, store: Store, redis: RedisHandle, n: int, variant: str, params: int
) -> TrainingJob:
    p = params
    spec = JobSpec(f"bench-hier-{variant}-{n}-{p}", redis.spec, "cnn", 1, 10, 28, 1, p, synthetic_gradients=True)
    job = TrainingJob(spec, store, platform, sync=VARIANTS[variant][0], sync_timeout_s=300, timeout_s=900)
    job.cleanup()  # a previous, interrupted run of the benchmark
    job.initialize(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.int64), np.ones(p, dtype=np.float32))
    return job


def _run(job: TrainingJob, variant: str, n: int, epoch: int, iterations: int) -> Measurement:
    plan = job.next_plan(
        Config(n, 1769, 1), epoch=epoch, epoch_offset=0, iterations=iterations, **VARIANTS[variant][1]
    )
    return job.run_plan(plan)


def _row(runs: list[Measurement]) -> dict[str, Any]:
    median = sorted(runs, key=lambda r: r.iter_s)[len(runs) // 2]
    return {
        "iter_s": median.iter_s,
        "iter_s_all": [r.iter_s for r in runs],
        "bytes_per_worker": median.bytes_per_worker,
        "requests_per_worker": median.requests_per_worker,
        "values_per_worker": median.values_per_worker,
        "busiest_function_bytes": median.busiest_role_bytes,
        "retries": sum(r.retries for r in runs),
    }


def measure_n(
    platform: EmulatedPlatform,
    store: Store,
    redis: RedisHandle,
    n: int,
    repeats: int,
    iterations: int,
    params: int,
) -> dict[str, Any]:
    """All variants with n workers: a 2-iteration warm-up (cold starts), then `repeats` alternating runs."""
    jobs = {variant: _job(platform, store, redis, n, variant, params) for variant in VARIANTS}
    runs: dict[str, list[Measurement]] = {variant: [] for variant in VARIANTS}
    try:
        for variant, job in jobs.items():
            _run(job, variant, n, 0, 2)
        for rep in range(repeats):
            for variant, job in jobs.items():
                runs[variant].append(_run(job, variant, n, 1 + rep, iterations))
    finally:
        for job in jobs.values():
            job.cleanup()
    out: dict[str, Any] = {"group_size": auto_group_size(n), "groups": n // auto_group_size(n)}
    out.update({variant: _row(rs) for variant, rs in runs.items()})
    out["hierarchical_vs_flat"] = out["scatter_reduce"]["iter_s"] / out["hierarchical"]["iter_s"]
    out["direct_vs_flat"] = out["scatter_reduce"]["iter_s"] / out["hierarchical_direct"]["iter_s"]
    out["memory_after"] = process_memory_mb()
    return out


def measure(
    platform: EmulatedPlatform,
    store: Store,
    redis: RedisHandle,
    ns: tuple[int, ...] = (16, 32, 64),
    repeats: int = 3,
    iterations: int = 5,
    *,
    params: int | None = None,
) -> dict[str, Any]:
    """Rows per n (flat, hierarchical and hierarchical with direct weight reads) on `platform`; an n that
    cannot run records its error instead of a row, and the larger ones are still tried. `params`: length
    of the synthetic model (default: the `cnn` on 28x28 images, as in benchmarks/serverless.py)."""
    params = params or cnn_params()
    rows: dict[str, Any] = {}
    for n in ns:
        t0 = time.perf_counter()
        try:
            rows[str(n)] = row = measure_n(platform, store, redis, n, repeats, iterations, params)
        except Exception as exc:  # noqa: BLE001  (reported, not hidden: the row says why n did not run)
            rows[str(n)] = {"error": f"{type(exc).__name__}: {exc}", "memory_after": process_memory_mb()}
            log(f"n={n}: failed: {rows[str(n)]['error']}")
            continue
        log(
            f"n={n} g={row['group_size']}: flat {row['scatter_reduce']['iter_s'] * 1e3:.0f} ms, hierarchical "
            f"{row['hierarchical']['iter_s'] * 1e3:.0f} ms (x{row['hierarchical_vs_flat']:.2f}), direct "
            f"{row['hierarchical_direct']['iter_s'] * 1e3:.0f} ms; values/worker "
            f"{row['scatter_reduce']['values_per_worker']:.0f} vs {row['hierarchical']['values_per_worker']:.0f}; "
            f"containers RSS {row['memory_after']['rss_mb']:.0f} MB, PSS {row['memory_after']['pss_mb']:.0f} MB "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 16 only, one repeat (a smoke run)")
    parser.add_argument("--ns", default="16,32,64", help="worker counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--small-params", type=int, default=25_000,
                        help="also measure a model this small (per-value costs instead of bytes); 0: skip")  # fmt: skip
    args = parser.parse_args()
    ns = (16,) if args.quick else tuple(int(v) for v in args.ns.split(","))
    repeats = 1 if args.quick else args.repeats
    started = time.perf_counter()
    redis = start_redis()
    out: dict[str, Any] = {}
    try:
        with connect(redis.spec) as store:
            for label, net in (("network_75MBps", NETWORK_MB_S), ("loopback", None)):
                log(f"{label}: n = {ns}, {repeats} repeats of {args.iterations} iterations")
                with EmulatedPlatform(preload=PRELOAD, network_mb_s=net, concurrency=max(ns)) as platform:
                    out[label] = measure(platform, store, redis, ns, repeats, args.iterations)
                    if args.small_params:
                        log(f"{label}: small model, {args.small_params} parameters")
                        out[f"small_model_{label}"] = measure(
                            platform, store, redis, ns, repeats, args.iterations, params=args.small_params
                        )
    finally:
        stop_redis(redis)

    def ratios(label: str, key: str) -> dict[str, float | None]:
        return {n: row.get(key) for n, row in out[label].items()}

    result = {
        "hierarchical_vs_flat": ratios("network_75MBps", "hierarchical_vs_flat"),
        "hierarchical_vs_flat_loopback": ratios("loopback", "hierarchical_vs_flat"),
        "direct_vs_flat": ratios("network_75MBps", "direct_vs_flat"),
        "direct_vs_flat_loopback": ratios("loopback", "direct_vs_flat"),
        **(
            {
                "small_model_hierarchical_vs_flat": ratios("small_model_network_75MBps", "hierarchical_vs_flat"),
                "small_model_hierarchical_vs_flat_loopback": ratios("small_model_loopback", "hierarchical_vs_flat"),
            }
            if args.small_params
            else {}
        ),
        **out,
        "provenance": {
            "command": " ".join(["benchmarks/serverless_hierarchy.py", *sys.argv[1:]]),
            "measured": "per-iteration time (median over repeats), store bytes, round trips and values per worker "
            "of real emulated functions on a real redis-server; synthetic gradients (synchronisation only)",
            "modelled": f"per-function bandwidth {NETWORK_MB_S} MB/s (assumed, Lambda-like) in network_75MBps",
            "params": cnn_params(),
            "small_model_params": args.small_params,
            "machine": f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"python {sys.version.split()[0]}",
            "repeats": repeats,
            "iterations": args.iterations,
        },
        "wall_s": time.perf_counter() - started,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {OUT}")
    print(json.dumps({k: v for k, v in result.items() if k.endswith("vs_flat") or k.endswith("_loopback")
                      and "vs_flat" in k}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
