"""Benchmark: a Citadel round over the network transport vs the shared-memory path (issue #22, part 2).

The workload is the synthetic secure-aggregation round of benchmarks/secure_aggregation.py
(`ours_secure_round`: role processes, relay, sealed channels, the weights broadcast; each trainer returns
a deterministic synthetic update of `dim` float32 parameters), run in one process over each transport:

- "shm": pipes to the relay, bulk sealed bodies and the broadcast through shared memory (the default);
- "tcp": every role connects to the relay's TCP listener on 127.0.0.1, no shared memory at all (the
  broadcast ciphertext travels inline with each ticket);
- "ray" (with --ray): the same network transport, every role placed in a Ray actor by the platform.

Per repeat, one session per transport (the order alternates between repeats), one warm-up round, then
`rounds` timed rounds of `run_round` (wall clock, the model owner's view). Reported: the median round time
per transport over all timed rounds, and the ratio of the medians network / shm measured in the same run
(`citadel_network_vs_shm`, the "tcp" one). `citadel_same_aggregate` is True when every round's unmasked
mean is bit-identical over every transport and session (the masks differ per session; the sum does not).

Run:   PYTHONPATH=src .venv/bin/python benchmarks/citadel_network.py               (a few minutes on 2 cores)
       PYTHONPATH=src .venv/bin/python benchmarks/citadel_network.py --quick --ray
Writes benchmarks/results/citadel_network.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "citadel_network.json"


def global_weights(rnd: int, dim: int) -> np.ndarray:
    return np.random.default_rng(rnd).normal(0.0, 0.3, dim).astype(np.float32)


def run_session(transport: str, parties: int, dim: int, rounds: int) -> dict[str, Any]:
    """One deployment over `transport`: a warm-up round, then `rounds` timed rounds; times and means."""
    from siegecraft.enclave import CitadelSession, CodeBundle, PartySpec, SessionConfig
    from siegecraft.enclave.synthetic_workload import SYNTHETIC_ENTRYPOINT

    specs = [PartySpec(i, {"seed": i, "num_samples": 10 + i, "amplitude": 0.5}) for i in range(parties)]
    cfg = SessionConfig(specs, CodeBundle(SYNTHETIC_ENTRYPOINT, {}), [dim], fanout=10, start_timeout_s=600.0,
                        transport=transport)
    times: list[float] = []
    means: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    with CitadelSession(cfg) as session:
        startup_s = time.perf_counter() - t0
        for rnd in range(1, rounds + 2):
            weights = global_weights(rnd, dim)
            t0 = time.perf_counter()
            result = session.run_round(rnd, weights, list(range(parties)))
            elapsed = time.perf_counter() - t0
            if rnd > 1:  # round 1 is the warm-up
                times.append(elapsed)
            means[rnd] = result.mean
    return {"round_s": times, "startup_s": startup_s, "means": means}


def measure(rounds: int = 5, repeats: int = 2, *, parties: int = 10, dim: int = 1_000_000,
            transports: tuple[str, ...] = ("tcp",)) -> dict[str, Any]:
    """Median round time over shared memory and over each network transport, in one run; the ratio of
    the "tcp" median to the shm median; whether every round's aggregate is identical everywhere."""
    names = ("shm", *transports)
    times: dict[str, list[float]] = {n: [] for n in names}
    startups: dict[str, list[float]] = {n: [] for n in names}
    reference: dict[int, np.ndarray] = {}
    same = True
    for repeat in range(repeats):
        order = names if repeat % 2 == 0 else tuple(reversed(names))
        for name in order:
            run = run_session(name, parties, dim, rounds)
            times[name] += run["round_s"]
            startups[name].append(run["startup_s"])
            for rnd, mean in run["means"].items():
                if rnd in reference:
                    same = same and bool(np.array_equal(reference[rnd], mean))
                else:
                    reference[rnd] = mean
    med = {n: float(statistics.median(times[n])) for n in names}
    out: dict[str, Any] = {
        "shm_round_s": med["shm"],
        "network_round_s": med.get("tcp", med[names[-1]]),
        "citadel_network_vs_shm": med.get("tcp", med[names[-1]]) / med["shm"],
        "citadel_same_aggregate": same,
        "round_s_median": med,
        "round_s": times,
        "startup_s_median": {n: float(statistics.median(v)) for n, v in startups.items()},
        "settings": {"rounds": rounds, "repeats": repeats, "parties": parties, "dim": dim, "warmup_rounds": 1,
                     "transports": list(names), "workload": "synthetic (benchmarks/secure_aggregation.py)"},
    }
    if "ray" in med:
        out["citadel_ray_vs_shm"] = med["ray"] / med["shm"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per session (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="sessions per transport, alternating order")
    parser.add_argument("--parties", type=int, default=10)
    parser.add_argument("--dim", type=int, default=1_000_000, help="parameters per update")
    parser.add_argument("--ray", action="store_true", help="also place the roles in Ray actors")
    parser.add_argument("--quick", action="store_true", help="4 parties, 100,000 parameters")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.parties, args.dim = 4, 100_000
    transports: tuple[str, ...] = ("tcp",)
    if args.ray:
        import ray

        ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level="WARNING")
        transports = ("tcp", "ray")
    result = measure(args.rounds, args.repeats, parties=args.parties, dim=args.dim, transports=transports)
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: result[k] for k in ("shm_round_s", "network_round_s", "citadel_network_vs_shm",
                                      "citadel_same_aggregate", "round_s_median")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
