"""How far does HijackFL's hijacking accuracy move between FedAvg federations that differ only in seed?

The defense matrix checks that HijackFL's hijacking accuracy under each robust aggregator stays within 3
points of FedAvg's. Each cell is one federation and one cloak search, so a difference there mixes two
things: what the aggregation rule does to the model the cloaks are fitted on, and how much the attack's
success varies from one federation to the next anyway. This script measures the second: the longer run's
FedAvg cell of `benchmarks/defense_matrix.py` (full Fashion-MNIST, 20 IID clients, 30 rounds of one
local epoch, lr decay 0.9, HijackFL with the HijackFL benchmark's options, attacker client 0) repeated
with other seeds (data split, initial model, client sampling and the attack's own randomness all follow
the seed). Runs go in parallel, one process and one torch thread each.

    .venv/bin/python benchmarks/hijackfl_seed_spread.py                 # seeds 1 and 2, about 20 min
    .venv/bin/python benchmarks/hijackfl_seed_spread.py --seeds 1,2,3
    .venv/bin/python benchmarks/hijackfl_seed_spread.py --quick         # digits, a smoke run
Writes benchmarks/results/hijackfl_seed_spread.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import defense_matrix  # the same federation and attack as the matrix's longer run (benchmarks/ is on sys.path)

RESULTS = Path(__file__).parent / "results" / "hijackfl_seed_spread.json"


def long_run_args(seed: int, quick: bool) -> argparse.Namespace:
    """The defense matrix's longer-run settings (its command-line defaults) with `seed`."""
    args = defense_matrix.parse_args(["--seed", str(seed), *(["--quick"] if quick else [])])
    if quick:
        args.long_rounds = 3
    return args


def run_seed(job: tuple[int, bool, str]) -> dict[str, Any]:
    """One FedAvg federation with HijackFL (client 0) under `seed`, in its own process."""
    import torch

    from siegecraft.config import build_experiment
    from siegecraft.runner import run_experiment

    torch.set_num_threads(1)
    seed, quick, out = job
    args = long_run_args(seed, quick)
    raw = defense_matrix.long_run_config(args)
    raw["attack"] = {"name": "hijackfl", "clients": [0], "options": defense_matrix.long_hijack_options(args)}
    raw["name"] = f"hijackfl-fedavg-seed{seed}"
    t0 = time.perf_counter()
    run = run_experiment(build_experiment(raw), out_root=out)
    final = run.read_summary()["final"]
    return {"seed": seed, "utility": final["accuracy"], "hijack_acc": final.get("hijack_acc"),
            "no_cloak_acc": final.get("no_cloak_acc"), "wall_s": round(time.perf_counter() - t0, 1),
            "run_dir": str(run.path)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="1,2", help="comma-separated seeds (seed 0 is the matrix's own cell)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/hijackfl_seed_spread"))
    p.add_argument("--json", type=Path, default=RESULTS, help="where the results go")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        p.error("--seeds needs at least one seed")
    t0 = time.perf_counter()
    with get_context("spawn").Pool(min(len(seeds), 2)) as pool:
        rows = pool.map(run_seed, [(s, args.quick, str(args.out)) for s in seeds])
    accs = [r["hijack_acc"] for r in rows if r["hijack_acc"] is not None]
    out = {
        "benchmark": "hijackfl_seed_spread",
        "command": " ".join(["python", *sys.argv]),
        "setup": "the FedAvg x HijackFL cell of the defense matrix's longer run, seed varied",
        "rows": rows,
        "hijack_acc_range": [min(accs), max(accs)] if accs else None,
        "hijack_acc_stdev": statistics.stdev(accs) if len(accs) > 1 else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    path = args.json if not args.quick else args.out / "hijackfl_seed_spread_quick.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"seed {r['seed']}: utility {r['utility']:.4f}, hijacking accuracy {r['hijack_acc']}, "
              f"no cloak {r['no_cloak_acc']} ({r['wall_s']:.0f} s)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
