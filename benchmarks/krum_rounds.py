"""Does Krum catch up with FedAvg given more rounds? Accuracy per round on the full Fashion-MNIST set.

The defense matrix's federation (20 IID clients, 2 local epochs unless `--local-epochs`, the slim
`cnn`, 4 sign-flipping attackers for Krum) run for `--rounds` rounds: FedAvg without an attack against Krum (f = 4) under
sign flipping, both evaluated after every round. The two runs go in parallel, one torch thread each.
Writes benchmarks/results/krum_rounds.json.

    .venv/bin/python benchmarks/krum_rounds.py              # 30 rounds, about 9 minutes on 2 idle cores
    .venv/bin/python benchmarks/krum_rounds.py --quick      # digits, 3 rounds: a smoke run
    .venv/bin/python benchmarks/krum_rounds.py --lr-decay 0.9 --json benchmarks/results/krum_rounds_decay.json
    .venv/bin/python benchmarks/krum_rounds.py --local-epochs 1 --lr-decay 0.9 \
        --json benchmarks/results/krum_rounds_epoch1_decay.json   # the defense matrix's longer run
    .venv/bin/python benchmarks/krum_rounds.py --local-epochs 1 --json benchmarks/results/krum_rounds_epoch1.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import defense_matrix  # the same federation and attackers as the defense matrix (benchmarks/ is on sys.path)

RESULTS = Path(__file__).parent / "results" / "krum_rounds.json"
CELLS = [("none", "mean"), ("sign_flip:scale=8", f"krum:f={defense_matrix.ADVERSARIES}")]
ADVERSARIES = list(range(defense_matrix.ADVERSARIES))


def run_cell(job: tuple[str, str, dict[str, Any], str]) -> dict[str, Any]:
    """One (attack, defense) run of `raw`, in its own process; its accuracy after every round."""
    import torch

    from siegecraft.drivers.experiment import build_experiment
    from siegecraft.drivers.matrix import plan_matrix
    from siegecraft.drivers.runner import run_experiment

    torch.set_num_threads(1)
    attack, defense, raw, out = job
    ((_, _, planned),) = plan_matrix(build_experiment(raw), [attack], [defense], adversaries=ADVERSARIES)
    exp = planned.experiment
    t0 = time.perf_counter()
    run = run_experiment(exp, out_root=out)
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    curve = [round(float(r["accuracy"]), 4) for r in rows if r.get("accuracy") is not None]
    return {"attack": attack, "defense": defense, "accuracy_per_round": curve, "final": curve[-1],
            "best": max(curve), "mean_last_5": round(sum(curve[-5:]) / len(curve[-5:]), 4),
            "wall_s": round(time.perf_counter() - t0, 1), "run_dir": str(run.path)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--train-limit", type=int, default=60000)
    p.add_argument("--test-limit", type=int, default=10000)
    p.add_argument("--lr-decay", type=float, default=1.0, help="train.lr_decay: lr x this every round")
    p.add_argument("--local-epochs", type=int, default=2, help="train.epochs of every client per round")
    p.add_argument("--lr", type=float, default=None, help="train.lr (default: the defense matrix's)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/krum_rounds"))
    p.add_argument("--json", type=Path, default=RESULTS, help="where the results go")
    args = p.parse_args()
    base = argparse.Namespace(train_limit=args.train_limit, test_limit=args.test_limit, epochs=args.local_epochs, clients=20,
                              seed=0, rounds=3 if args.quick else args.rounds, quick=args.quick)
    raw = defense_matrix.base_config(base)
    raw["fl"]["eval_every"] = 1
    raw["train"]["lr_decay"] = args.lr_decay
    if args.lr is not None:
        raw["train"]["lr"] = args.lr
    jobs = [(a, d, raw, str(args.out)) for a, d in CELLS]
    t0 = time.perf_counter()
    with get_context("spawn").Pool(len(jobs)) as pool:
        cells = pool.map(run_cell, jobs)
    fedavg, krum = cells
    gap = [round(f - k, 4) for f, k in zip(fedavg["accuracy_per_round"], krum["accuracy_per_round"])]
    out = {
        "benchmark": "krum_rounds",
        "command": " ".join(["python", *sys.argv]),
        "setup": {"dataset": raw["data"]["dataset"], "train_limit": raw["data"].get("train_limit"),
                  "test_limit": raw["data"].get("test_limit"), "rounds": raw["fl"]["rounds"], "clients": 20,
                  "local_epochs": args.local_epochs, "lr": raw["train"]["lr"], "lr_decay": args.lr_decay,
                  "model": "cnn(width=16, hidden=64)", "adversaries": ADVERSARIES,
                  "torch_threads_per_run": 1},
        "cells": cells, "fedavg_minus_krum_per_round": gap,
        "within_3_points_at_end": gap[-1] <= 0.03, "wall_s": round(time.perf_counter() - t0, 1),
    }
    out_path = args.json if not args.quick else args.out / "krum_rounds_quick.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    for c in cells:
        print(f"{c['attack']} x {c['defense']}: final {c['final']:.4f}, best {c['best']:.4f}, "
              f"mean of the last 5 rounds {c['mean_last_5']:.4f}")
    print(f"FedAvg - Krum per round: {gap}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
