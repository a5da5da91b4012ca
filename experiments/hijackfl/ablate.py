"""HijackFL ablations on experiments/hijackfl/fmnist_mnist.toml: one factor at a time, a table and a figure each.

  python experiments/hijackfl/ablate.py alpha beta            # factors to run (default: all)
  python experiments/hijackfl/ablate.py --clean runs/hijackfl_table/clean-...   # reuse a clean run
  python experiments/hijackfl/ablate.py --set fl.rounds=10 --set attack.options.max_steps=300

Factors that change only the attack (samples per class, number of classes, alpha, beta, contrast, attack round)
resume one clean federation just before the attack round; `clients_per_round` changes the federation,
so each of its values is a full run. Writes experiments/hijackfl/results/<factor>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import tomllib

from siegecraft.core.config import apply_overrides
from siegecraft.core.results import RunDir

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))  # the study helpers live with the benchmarks
from hijackfl_study import attack_config, run_attack, run_clean

RUNS = HERE.parents[1] / "runs" / "hijackfl_ablations"
COLUMNS = ("hijack_acc", "no_cloak_acc", "utility", "ssim", "l2", "time_cloaks_s")


def factor_values(raw: dict[str, Any]) -> dict[str, tuple[str, list[Any]]]:
    """factor -> (where it lives, values). `None` samples per class means all of them."""
    rounds = raw["fl"]["rounds"]
    clients = raw["fl"]["clients"]
    return {
        "attack_round": ("attack", sorted({max(1, rounds // 4), max(1, rounds // 2), max(1, 3 * rounds // 4), rounds})),
        "samples_per_class": ("attack", [100, 300, None]),
        "num_classes": ("attack", [2, 3, 5, 7, 9]),
        "alpha": ("attack", [0.3, 0.4, 0.5, 0.6, 0.7]),
        "beta": ("attack", [0.0, 0.5, 1.0, 2.0]),
        "contrast": ("attack", [0.0, 10.0, 30.0, 100.0]),
        "clients_per_round": ("fl", sorted({max(1, clients // 4), max(1, clients // 2), clients})),
    }


def run_factor(raw: dict[str, Any], factor: str, clean: RunDir | None) -> list[dict[str, Any]]:
    where, values = factor_values(raw)[factor]
    rows = []
    for value in values:
        if where == "attack":
            cfg = attack_config(raw, "hijackfl", options={factor: value})
            cfg["name"] = f"{factor}-{value}"
            run, seconds = run_attack(cfg, RUNS, clean)
        else:  # the attacker is sampled in only some rounds: give it the default window (the last quarter)
            cfg = attack_config({**raw, "fl": {**raw["fl"], factor: value}}, "hijackfl",
                                options={"attack_round": None})
            cfg["name"] = f"{factor}-{value}"
            run, seconds = run_attack(cfg, RUNS, None)
        final = run.read_summary()["final"]
        row = {"value": value, **{k: final.get(k) for k in COLUMNS}, "utility": final["accuracy"],
               "snapshot_round": final.get("snapshot_round"),
               "chance": final.get("chance"), "run_s": seconds, "run": str(run.path)}
        rows.append(row)
        print(f"{factor}={value}: hijack_acc {row['hijack_acc']}  no-cloak {row['no_cloak_acc']}  "
              f"snapshot round {final.get('snapshot_round')}", flush=True)
    return rows


def write_outputs(factor: str, rows: list[dict[str, Any]], out: Path, setup: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{factor}.json").write_text(json.dumps({"factor": factor, "setup": setup, "rows": rows}, indent=2) + "\n")
    lines = [f"| {factor} | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        cells = [f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in COLUMNS]
        lines.append(f"| {'all' if r['value'] is None else r['value']} | " + " | ".join(cells) + " |")
    (out / f"{factor}.md").write_text("\n".join(lines) + "\n")
    labels = ["all" if r["value"] is None else str(r["value"]) for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    nan = float("nan")  # a run whose attacker was never sampled after its attack round reports None
    ax.plot(labels, [nan if r["hijack_acc"] is None else r["hijack_acc"] for r in rows], marker="o", label="with cloaks")
    ax.plot(labels, [nan if r["no_cloak_acc"] is None else r["no_cloak_acc"] for r in rows], marker="s",
            label="without cloaks")
    ax.plot(labels, [nan if r["chance"] is None else r["chance"] for r in rows], ls=":", color="grey", label="chance")
    ax.set_xlabel(factor)
    ax.set_ylabel("hijacking accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"HijackFL: {factor}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"{factor}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("factors", nargs="*", help="factors to run (default: all)")
    parser.add_argument("--config", type=Path, default=HERE / "fmnist_mnist.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override: key.path=value")
    parser.add_argument("--clean", type=Path, default=None, help="reuse this clean run (same federation config)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    raw = apply_overrides(tomllib.loads(args.config.read_text()), args.overrides)
    raw["output"] = {"report": False}
    raw["attack"]["options"]["figures"] = False
    factors = args.factors or list(factor_values(raw))
    unknown = sorted(set(factors) - set(factor_values(raw)))
    if unknown:
        parser.error(f"unknown factor(s) {unknown}; known: {sorted(factor_values(raw))}")
    clean = None
    if any(factor_values(raw)[f][0] == "attack" for f in factors):
        clean = RunDir.open(args.clean) if args.clean else run_clean(raw, RUNS)[0]
    setup = {"config": str(args.config), "overrides": args.overrides, "clean_run": str(clean.path) if clean else None}
    for factor in factors:
        write_outputs(factor, run_factor(raw, factor, clean), args.out, setup)
        print(f"wrote {args.out / factor}.{{json,md,png}}", flush=True)


if __name__ == "__main__":
    main()
