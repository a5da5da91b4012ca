"""Attack x defense matrix on Fashion-MNIST: which robust rules keep utility, and what HijackFL does to them.

20 clients, 4 of them adversarial for the byzantine attacks (label flip, sign flip, Gaussian noise, the
model-replacement backdoor), against FedAvg and every registered server-side defense. Checks, measured
in this one run: median and Krum keep accuracy within 3 points of the no-attack FedAvg run where FedAvg
collapses; HijackFL (one attacker, benign uploads) keeps its hijacking accuracy within 3 points under
every robust aggregator; feature squeezing's detection rate on its cloaked inputs at <= 5% false
positives. Krum aggregates a single client's update per round, so a second, longer run (`--long-rounds`)
repeats the median/Krum check for the collapse-prone attacks on the full training set with one local
epoch and a decaying learning rate (Krum's global model is one client's, so its gap to FedAvg is the
distance one client's local training moves the model; see docs/defenses.md). With `--long-hijackfl` the
longer run also attacks with HijackFL as `benchmarks/hijackfl_table.py` does (the options of
experiments/hijackfl/fmnist_mnist.toml, snapshot in the last round) under FedAvg and every robust
aggregator. Scaled to this shared CPU machine: a training-set limit, few rounds, a slim CNN and one torch
thread per cell (`--workers` cells at once); all of it is written into the JSON.

    .venv/bin/python benchmarks/defense_matrix.py            # full run (tens of minutes on 2 busy cores)
    .venv/bin/python benchmarks/defense_matrix.py --quick    # smoke run on sklearn digits, 2 rounds
    .venv/bin/python benchmarks/defense_matrix.py --only-long --long-hijackfl   # only the longer run
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from siegecraft.drivers.experiment import build_experiment, load_experiment
from siegecraft.drivers.matrix import MatrixResult, run_matrix
from siegecraft.engines.federated.extensions import ATTACKS

RESULTS = Path(__file__).parent / "results" / "defense_matrix.json"
TOLERANCE = 0.03  # "within 3 points"
COLLAPSE = 0.30  # FedAvg "collapses": it loses at least 30 points against the no-attack run
ADVERSARIES = 4
BYZANTINE = ["label_flip", "sign_flip:scale=8", "gaussian_noise:sigma=1", "backdoor:target=0"]
DEFENSES = [
    "mean", "median", "trimmed_mean:beta=0.2", f"krum:f={ADVERSARIES}", f"multi_krum:f={ADVERSARIES}", "geomedian",
    "norm_clip:max_norm=1", "adaptive_norm_clip", "fltrust",
]
ROBUST_AGGREGATORS = ["median", "trimmed_mean:beta=0.2", f"krum:f={ADVERSARIES}", f"multi_krum:f={ADVERSARIES}",
                      "geomedian"]
HIJACK = "hijackfl:clients=1"
HIJACK_CONFIG = Path(__file__).parents[1] / "experiments" / "hijackfl" / "fmnist_mnist.toml"


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    """The shared federation; every cell differs from it only in [attack] and [defense]."""
    data = {"dataset": "fashion_mnist", "partition": "iid", "train_limit": args.train_limit,
            "test_limit": args.test_limit}
    if args.quick:
        data = {"dataset": "digits", "partition": "iid"}
    return {
        "name": "defense-matrix", "seed": args.seed, "data": data,
        "model": {"name": "cnn", "options": {"width": 16, "hidden": 64}},
        "train": {"lr": 0.05, "momentum": 0.9, "batch_size": 32, "epochs": args.epochs},
        "fl": {"rounds": args.rounds, "clients": args.clients},
        "output": {"report": False},
    }


def hijackfl_available() -> bool:
    try:
        importlib.import_module("siegecraft.attacks.hijackfl")
    except ModuleNotFoundError:
        return False
    return "hijackfl" in ATTACKS


def hijack_options(args: argparse.Namespace) -> dict[str, Any]:
    """HijackFL at CPU scale: fewer hijacking samples, cloak epochs and anchor steps than the authors'."""
    return {
        "num_classes": args.hijack_classes, "samples_per_class": 100, "test_per_class": 100,
        "epochs": args.hijack_epochs, "anchor_steps": 200, "squeeze_detect": True, "squeeze_fpr": 0.05,
        "figures": False, "contrast": args.hijack_contrast, "cloak_sets": args.hijack_cloak_sets,
    }


def benchmark_hijack_options(rounds: int) -> dict[str, Any]:
    """HijackFL as the HijackFL benchmark runs it (its config's options), snapshot in the last round."""
    options = dict(load_experiment(HIJACK_CONFIG).attack.options)
    options.update({"attack_round": rounds, "figures": False})
    return options


def long_hijack_options(args: argparse.Namespace) -> dict[str, Any]:
    """HijackFL in the longer run: the benchmark's options, or the light ones in a `--quick` smoke run."""
    return hijack_options(args) if args.quick else benchmark_hijack_options(args.long_rounds)


def progress_printer(label: str) -> Any:
    t0 = time.perf_counter()

    def show(*, step: int, total: int, cell: str) -> None:
        print(f"[{label} {step}/{total} {time.perf_counter() - t0:7.1f}s] {cell}", flush=True)

    return show


def byzantine_checks(m: MatrixResult) -> dict[str, Any]:
    """Median and Krum against the no-attack FedAvg run, where FedAvg itself collapses."""
    ref = m.cell("none", "mean").utility
    assert ref is not None
    out: dict[str, Any] = {"no_attack_fedavg_utility": ref, "tolerance": TOLERANCE, "collapse_drop": COLLAPSE}
    for attack in m.attacks:
        if attack == "none":
            continue
        fedavg = m.cell(attack, "mean").utility or 0.0
        row: dict[str, Any] = {"fedavg_utility": fedavg, "fedavg_collapses": ref - fedavg >= COLLAPSE}
        for d in ("median", f"krum:f={ADVERSARIES}"):
            u = m.cell(attack, d).utility or 0.0
            no_attack_same_rule = m.cell("none", d).utility or 0.0
            row[d] = {"utility": u, "drop_vs_no_attack_fedavg": ref - u, "within_3_points": ref - u <= TOLERANCE,
                      "drop_vs_no_attack_same_rule": no_attack_same_rule - u}
        out[attack] = row
    return out


def hijack_checks(m: MatrixResult) -> dict[str, Any]:
    """Hijacking accuracy under each defense against FedAvg's, and feature squeezing's detection rate."""
    base = m.cell(HIJACK, "mean")
    n = base.final.get("hijack_test_samples") or 0
    p = base.attack_success or 0.0
    out: dict[str, Any] = {
        "fedavg_hijack_acc": base.attack_success, "hijack_test_samples": n,
        "binomial_standard_error": math.sqrt(p * (1 - p) / n) if n else None,  # resolution of one measurement
        "per_defense": {},
    }
    for d in m.defenses:
        c = m.cell(HIJACK, d)
        diff = None if c.attack_success is None or base.attack_success is None else c.attack_success - base.attack_success
        out["per_defense"][d] = {
            "hijack_acc": c.attack_success, "no_cloak_acc": c.final.get("no_cloak_acc"), "utility": c.utility,
            "change_vs_fedavg": diff, "within_3_points": diff is not None and abs(diff) <= TOLERANCE,
        }
    out["unchanged_under_every_robust_aggregator"] = all(
        out["per_defense"][d]["within_3_points"] for d in ROBUST_AGGREGATORS if d in out["per_defense"]
    )
    out["feature_squeezing"] = {
        d: {k: m.cell(HIJACK, d).final.get(k) for k in
            ("squeeze_detect_rate", "squeeze_detect_any", "squeeze_clean_fpr", "squeeze_threshold")}
        for d in m.defenses
    }
    return out


def long_run_checks(m: MatrixResult, rounds: int) -> dict[str, Any]:
    """Krum aggregates one client's update per round, so it needs more rounds: the same check, longer."""
    ref = m.cell("none", "mean").utility or 0.0
    out: dict[str, Any] = {"rounds": rounds, "no_attack_fedavg_utility": ref}
    for c in m.cells:
        if c.attack == "none" and c.defense == "mean":
            continue
        same_rule = m.cell("none", c.defense).utility or 0.0
        out[f"{c.attack} x {c.defense}"] = {"utility": c.utility, "drop_vs_no_attack_fedavg": ref - (c.utility or 0.0),
                                            "within_3_points": ref - (c.utility or 0.0) <= TOLERANCE,
                                            "drop_vs_no_attack_same_rule": same_rule - (c.utility or 0.0)}
    return out


def cells_json(m: MatrixResult) -> list[dict[str, Any]]:
    keep = ("hijack_acc", "snapshot_hijack_acc", "no_cloak_acc", "squeeze_detect_rate", "squeeze_clean_fpr")
    return [
        {"attack": c.attack, "defense": c.defense, "utility": c.utility, "attack_success": c.attack_success,
         "utility_drop": c.utility_drop, "attackers": c.clients, "wall_s": round(c.wall_s, 1),
         **{k: c.final[k] for k in keep if k in c.final}}
        for c in m.cells
    ]


def long_run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The longer run's federation: the full training set, `--long-rounds` rounds of `--long-epochs`."""
    raw = base_config(args)
    if not args.quick:
        raw["data"].update(train_limit=args.long_train_limit, test_limit=args.long_test_limit)
    raw["fl"]["rounds"] = args.long_rounds
    raw["train"]["epochs"] = args.long_epochs
    raw["train"]["lr_decay"] = args.long_lr_decay
    return raw


def run_long(args: argparse.Namespace, adversaries: list[int]) -> dict[str, Any]:
    """The collapse-prone attacks against median and Krum over `--long-rounds` rounds; with
    `--long-hijackfl`, HijackFL against FedAvg and every robust aggregator in the same setting."""
    raw = long_run_config(args)
    setup = {"dataset": raw["data"]["dataset"], "train_limit": raw["data"].get("train_limit"),
             "test_limit": raw["data"].get("test_limit"), "rounds": args.long_rounds,
             "local_epochs": args.long_epochs, "lr": raw["train"]["lr"], "lr_decay": args.long_lr_decay,
             "clients": args.clients, "torch_threads_per_cell": 1 if args.workers > 1 else args.threads,
             "workers": args.workers, "seed": args.seed}
    out: dict[str, Any] = {}
    if not args.skip_long_byzantine:
        t0 = time.perf_counter()
        m = run_matrix(build_experiment(raw), ["none", "sign_flip:scale=8", "gaussian_noise:sigma=1"],
                       ["mean", "median", f"krum:f={ADVERSARIES}"], out_root=args.out, adversaries=adversaries,
                       progress=progress_printer("long"), workers=args.workers,
                       worker_threads=1)
        out.update({"long_run_setup": setup, "long_run_matrix_dir": str(m.path),
                    "long_run_checks": long_run_checks(m, args.long_rounds), "long_run_cells": cells_json(m),
                    "long_run_wall_s": round(time.perf_counter() - t0, 1)})
    if args.long_hijackfl and hijackfl_available():
        t0 = time.perf_counter()
        options = long_hijack_options(args)
        raw["attack"] = {"name": "hijackfl", "clients": [0], "options": options}
        hij = run_matrix(build_experiment(raw), [HIJACK], ["mean", *ROBUST_AGGREGATORS], out_root=args.out,
                         adversaries=[0], progress=progress_printer("long hijackfl"),
                         workers=args.workers, worker_threads=1)
        checks = hijack_checks(hij)
        out.update({"long_run_hijackfl_setup": setup, "long_run_hijackfl_dir": str(hij.path),
                    "long_run_hijackfl_options": options,
                    "long_run_feature_squeezing": checks.pop("feature_squeezing"), "long_run_hijackfl": checks,
                    "long_run_hijackfl_cells": cells_json(hij),
                    "long_run_hijackfl_wall_s": round(time.perf_counter() - t0, 1)})
    return out


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options; other benchmarks reuse its defaults."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--train-limit", type=int, default=6000)
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--hijack-classes", type=int, default=4)
    p.add_argument("--hijack-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared, loaded CPU)")
    p.add_argument("--skip-hijackfl", action="store_true")
    p.add_argument("--long-rounds", type=int, default=30, help="rounds of the longer Krum/median run (0: skip)")
    p.add_argument("--long-train-limit", type=int, default=60000, help="training samples in the longer run")
    p.add_argument("--long-test-limit", type=int, default=10000, help="test samples in the longer run")
    p.add_argument("--long-epochs", type=int, default=1, help="local epochs per round in the longer run")
    p.add_argument("--long-lr-decay", type=float, default=0.9, help="train.lr_decay in the longer run")
    p.add_argument("--workers", type=int, default=2, help="matrix cells run at once (one process and thread each)")
    p.add_argument("--long-hijackfl", action="store_true",
                   help="also run HijackFL under FedAvg and every robust aggregator in the longer run's setting")
    p.add_argument("--skip-long-byzantine", action="store_true",
                   help="in the longer run, only the HijackFL cells (keeps the stored byzantine long-run results)")
    p.add_argument("--hijack-cloak-sets", type=int, default=1, help="HijackFL's independent cloak searches")
    p.add_argument("--hijack-contrast", type=float, default=0.0,
                   help="HijackFL's K-way term (0 = the authors' loss; the HijackFL benchmark uses 30)")
    p.add_argument("--only-long", action="store_true",
                   help="run only the longer Krum/median run and add it to an existing results JSON")
    p.add_argument("--quick", action="store_true", help="digits, 2 rounds: a smoke run, not the measurement")
    p.add_argument("--out", type=Path, default=Path("runs"))
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (or `argv`), with a `--quick` smoke run's smaller federation filled in."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.rounds, args.clients = 2, 10
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    base = build_experiment(base_config(args))
    adversaries = list(range(ADVERSARIES))
    out = RESULTS if not args.quick else args.out / "defense_matrix_quick.json"
    if args.only_long:
        result = json.loads(out.read_text())
        result.update(run_long(args, adversaries))
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["long_run_checks"], indent=2))
        return
    byz = run_matrix(base, ["none", *BYZANTINE], DEFENSES, out_root=args.out, adversaries=adversaries,
                     progress=progress_printer("byzantine"))
    result: dict[str, Any] = {
        "setup": {
            "dataset": base.data.dataset, "train_limit": base.data.train_limit, "test_limit": base.data.test_limit,
            "partition": base.data.partition, "clients": base.fl.clients, "clients_per_round": base.fl.per_round(),
            "rounds": base.fl.rounds, "local_epochs": base.train.epochs, "model": "cnn(width=16, hidden=64)",
            "adversaries_byzantine": adversaries, "seed": base.seed, "torch_threads": args.threads,
            "note": "scaled to a shared 2-core CPU: train_limit, few rounds and a slim CNN; not the full-scale "
                    "Fashion-MNIST protocol" + (" (QUICK SMOKE RUN on digits)" if args.quick else ""),
        },
        "byzantine_matrix_dir": str(byz.path),
        "byzantine_checks": byzantine_checks(byz),
    }
    cells = cells_json(byz)
    if args.skip_hijackfl or not hijackfl_available():
        result["hijackfl"] = "not run: the hijackfl attack is not registered" if not args.skip_hijackfl else "skipped"
        result["feature_squeezing"] = "not run: needs HijackFL's cloaked inputs"
    else:
        raw = base.model_dump(mode="json")
        raw["attack"] = {"name": "hijackfl", "clients": [0], "options": hijack_options(args)}
        hij = run_matrix(build_experiment(raw), [HIJACK], DEFENSES, out_root=args.out, adversaries=[0],
                         progress=progress_printer("hijackfl"))
        result["hijackfl_matrix_dir"] = str(hij.path)
        result["hijackfl_options"] = hijack_options(args)
        checks = hijack_checks(hij)
        result["feature_squeezing"] = checks.pop("feature_squeezing")
        result["hijackfl"] = checks
        cells += cells_json(hij)
    result["cells"] = cells
    if args.long_rounds:
        result.update(run_long(args, adversaries))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cells"}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
