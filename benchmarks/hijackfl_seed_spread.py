"""How far does HijackFL's hijacking accuracy move between federations that differ only in seed, and how far
does an aggregation rule move it beyond that?

The defense matrix checks that HijackFL's hijacking accuracy under each robust aggregator stays within 3
points of FedAvg's. Each cell is one federation and one cloak search, so a difference there mixes two
things: what the aggregation rule does to the model the cloaks are fitted on, and how much the attack's
success varies from one federation to the next anyway. This script runs the defense matrix's longer-run
HijackFL cell (full Fashion-MNIST, 20 IID clients, 30 rounds of one local epoch, lr decay 0.9, HijackFL
with the HijackFL benchmark's options, attacker client 0) for every (aggregation rule, seed) pair: data
split, initial model, client sampling and the attack's own randomness all follow the seed. Each row also
reports the cloaks' accuracy on the snapshot they were fitted on (`snapshot_hijack_acc`), so a drop can be
told apart: a model that is harder to hijack (low on the snapshot too) or cloaks that transfer worse to
the final model (high on the snapshot, low on the final model). Runs go two at a time, one torch thread each.

    .venv/bin/python benchmarks/hijackfl_seed_spread.py                          # FedAvg, seeds 1 and 2
    .venv/bin/python benchmarks/hijackfl_seed_spread.py --defenses mean,krum:f=4 --seeds 0,1,2
    .venv/bin/python benchmarks/hijackfl_seed_spread.py --defenses median --seeds 1,2 \
        --hijack-set anchors_per_set=false --hijack-set input_noise=0   # the stored matrix's HijackFL
    .venv/bin/python benchmarks/hijackfl_seed_spread.py --quick                  # digits, a smoke run
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
import tomllib

RESULTS = Path(__file__).parent / "results" / "hijackfl_seed_spread.json"
KEYS = ("hijack_acc", "snapshot_hijack_acc", "no_cloak_acc", "anchor_confidence_min")


def long_run_args(seed: int, quick: bool) -> argparse.Namespace:
    """The defense matrix's longer-run settings (its command-line defaults) with `seed`."""
    args = defense_matrix.parse_args(["--seed", str(seed), *(["--quick"] if quick else [])])
    if quick:
        args.long_rounds = 3
    return args


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs, VALUE read as a TOML value (so `false`, `0.05`, `"mean"` keep their types)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--hijack-set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
    return out


def run_one(job: tuple[str, int, bool, str, dict[str, Any]]) -> dict[str, Any]:
    """One federation under aggregation rule `defense` with HijackFL (client 0, `options`) and `seed`, in its
    own process."""
    import torch

    from siegecraft.drivers.experiment import build_experiment
    from siegecraft.drivers.matrix import defense_section
    from siegecraft.drivers.runner import run_experiment

    torch.set_num_threads(1)
    defense, seed, quick, out, options = job
    raw = defense_matrix.long_run_config(long_run_args(seed, quick))
    raw["attack"] = {"name": "hijackfl", "clients": [0], "options": options}
    raw["defense"] = defense_section(defense)
    raw["name"] = f"hijackfl-{defense.replace(':', '_').replace('=', '')}-seed{seed}"
    t0 = time.perf_counter()
    run = run_experiment(build_experiment(raw), out_root=out)
    final = run.read_summary()["final"]
    return {"defense": defense, "seed": seed, "utility": final["accuracy"],
            **{k: final.get(k) for k in KEYS}, "mapping": final.get("mapping"),
            "wall_s": round(time.perf_counter() - t0, 1), "run_dir": str(run.path)}


def spread(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [r[key] for r in rows if r.get(key) is not None]
    return {"mean": statistics.mean(values) if values else None, "range": [min(values), max(values)] if values else None,
            "stdev": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="1,2", help="comma-separated seeds (seed 0 is the matrix's own cell)")
    p.add_argument("--defenses", default="mean", help="comma-separated aggregation rules, as matrix tokens")
    p.add_argument("--workers", type=int, default=2, help="runs at once (one torch thread each)")
    p.add_argument("--hijack-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a HijackFL option of the config (repeatable), e.g. anchors_per_set=false")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/hijackfl_seed_spread"))
    p.add_argument("--json", type=Path, default=RESULTS, help="where the results go")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    defenses = [d.strip() for d in args.defenses.split(",") if d.strip()]
    if not seeds or not defenses:
        p.error("--seeds and --defenses need at least one value each")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    try:
        overrides = parse_overrides(args.hijack_set)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        p.error(str(err))
    # read once, so every run and the JSON use the same options (the seed does not change them)
    options = {**defense_matrix.long_hijack_options(long_run_args(seeds[0], args.quick)), **overrides}
    jobs = [(d, s, args.quick, str(args.out), options) for d in defenses for s in seeds]
    t0 = time.perf_counter()
    with get_context("spawn").Pool(min(len(jobs), args.workers)) as pool:
        rows = pool.map(run_one, jobs)
    by_rule = {d: {k: spread([r for r in rows if r["defense"] == d], k) for k in ("hijack_acc", "snapshot_hijack_acc",
                                                                               "utility")} for d in defenses}
    out = {
        "benchmark": "hijackfl_seed_spread",
        "command": " ".join(["python", *sys.argv]),
        "setup": "the HijackFL cell of the defense matrix's longer run, aggregation rule and seed varied",
        "hijackfl_options": options,
        "rows": rows,
        "by_defense": by_rule,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    path = args.json if not args.quick else args.out / "hijackfl_seed_spread_quick.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"{r['defense']:>12} seed {r['seed']}: utility {r['utility']:.4f}, hijacking accuracy "
              f"{r['hijack_acc']} (on the snapshot {r['snapshot_hijack_acc']}), no cloak {r['no_cloak_acc']} "
              f"({r['wall_s']:.0f} s)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
