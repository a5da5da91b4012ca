"""Engine overhead: siegecraft's inline federated engine vs a bare PyTorch loop doing the same SGD steps.

Workload: Fashion-MNIST, `cnn`, 20 IID clients x 3 rounds x 1 local epoch, evaluation only at the end.
The bare loop replays exactly the optimiser steps the engine takes (same client data, same batch order,
same averaging), written directly in PyTorch. Medians of repeats, measured in one process, so the ratio
is meaningful on a noisy machine. Writes benchmarks/results/fl_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.data.partition import partition
from siegecraft.core.models import build_model
from siegecraft.core.training import evaluate
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated.sampling import client_seed

OUT = Path(__file__).resolve().parent / "results" / "fl_overhead.json"
CLIENTS, ROUNDS, SEED, LR, BATCH = 20, 3, 0, 0.05, 64


def engine_config(limit: int | None) -> dict:
    return {
        "name": "fl-overhead", "seed": SEED,
        "data": {"dataset": "fashion_mnist", "partition": "iid", "train_limit": limit},
        "model": {"name": "cnn"},
        "train": {"lr": LR, "batch_size": BATCH, "epochs": 1},
        "fl": {"rounds": ROUNDS, "clients": CLIENTS, "eval_every": ROUNDS},
        "output": {"report": False},
    }


def run_engine(limit: int | None) -> tuple[float, float]:
    exp = build_experiment(engine_config(limit))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = run_experiment(exp, out_root=tmp)
        elapsed = time.perf_counter() - t0
        return elapsed, run.read_summary()["final"]["accuracy"]


def run_bare(limit: int | None) -> tuple[float, float]:
    """The same computation with no framework: load, split, train each client, average state dicts."""
    t0 = time.perf_counter()
    train, test = load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test")
    x, y = (train.x[:limit], train.y[:limit]) if limit else (train.x, train.y)
    parts = partition(y, CLIENTS, "iid", seed=SEED)
    torch.manual_seed(SEED)
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=28)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    for rnd in range(1, ROUNDS + 1):
        gen = torch.Generator().manual_seed(SEED * 7_919 + rnd)
        chosen = sorted(torch.randperm(CLIENTS, generator=gen)[:CLIENTS].tolist())
        acc = {k: torch.zeros_like(v) for k, v in global_state.items()}
        total = 0
        for c in chosen:
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            idx_all = torch.as_tensor(parts[c])
            cx, cy = x[idx_all], y[idx_all]
            g = torch.Generator().manual_seed(client_seed(SEED, rnd, c))
            model.train()
            for idx in torch.randperm(len(cx), generator=g).split(BATCH):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(cx[idx]), cy[idx]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                acc[k] += v * len(cx)
            total += len(cx)
        global_state = {k: v / total for k, v in acc.items()}
    model.load_state_dict(global_state)
    accuracy = evaluate(model, test).accuracy
    return time.perf_counter() - t0, accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training samples")
    args = ap.parse_args()
    engine, bare, eng_acc, bare_acc = [], [], [], []
    for i in range(args.repeats):  # interleaved so drift on a shared machine hits both alike
        e, ea = run_engine(args.limit)
        b, ba = run_bare(args.limit)
        engine.append(e)
        bare.append(b)
        eng_acc.append(ea)
        bare_acc.append(ba)
        print(f"repeat {i + 1}: engine {e:.1f} s (acc {ea:.4f})  bare {b:.1f} s (acc {ba:.4f})  ratio {e / b:.3f}")
    result = {
        "engine_s": statistics.median(engine), "bare_s": statistics.median(bare),
        "ratio": statistics.median(engine) / statistics.median(bare),
        "engine_runs_s": engine, "bare_runs_s": bare, "engine_accuracy": eng_acc[-1], "bare_accuracy": bare_acc[-1],
        "workload": {"clients": CLIENTS, "rounds": ROUNDS, "local_epochs": 1, "model": "cnn",
                     "dataset": "fashion_mnist", "train_limit": args.limit, "repeats": args.repeats},
        "torch_threads": torch.get_num_threads(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"engine / bare = {result['ratio']:.3f}  (target <= 1.10); wrote {OUT}")


if __name__ == "__main__":
    main()
