"""Screen HijackFL cloak-search settings on held-out training digits, many searches at once.

Why: the HijackFL benchmark's test digits must not choose the attack's settings, and one cloak search moves
by a few points with its random start, so a setting can only be judged over many searches. This script
takes stored federations (snapshot, final model, class mapping, the attacker's hijacking training digits),
splits each class's training digits 300 to fit / 100 to validate (the test digits are never loaded), and
for each setting runs S independent cloak searches batched into one optimisation (their parameters are
disjoint, so each set is optimised exactly as a search of its own would be, on its own random batches).
It reports the validation accuracy through the final model of the benchmark's 3-set ensembles, mean and
spread over disjoint groups, and the same on the snapshot. On a GPU a setting takes about 8 s per federation; on CPU it works but slowly.

The searches follow `siegecraft.attacks.hijackfl` (synthetic anchors with restarts, one set of anchors per
cloak set, blend cloaks, the pull/push loss with the K-way term, Adam with cosine decay, input noise,
summed-probability decoding) in a batched form; a single set on one CPU reproduces the package's anchor
confidences exactly and its accuracy within one search's spread.

    # on the machine with the runs: one HijackFL run directory per federation (it needs its checkpoints)
    .venv/bin/python benchmarks/hijackfl_screen.py export runs/hijackfl_table/hijackfl-... --out inputs.pt
    # anywhere with torch: the settings of a stage, one JSON line per setting
    python benchmarks/hijackfl_screen.py screen inputs.pt --stage 1 --out screen.jsonl
Results of the 2026-11-28 screen: benchmarks/results/hijackfl_screen.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import tomllib
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
# torch and the model zoo only, so the screen also runs where the package is not installed (a GPU machine)
from siegecraft.core.models import build_model, load_flat_params

DEV = "cuda" if torch.cuda.is_available() else "cpu"
VALIDATION_PER_CLASS = 100  # held out of each class's training digits to score settings on

# the benchmark's settings (experiments/hijackfl/fmnist_mnist.toml before the screen); m = samples per
# class per step (batch_size / K), sets = searches per federation, group = sets per ensemble
BASE: dict[str, Any] = {
    "alpha": 0.5, "beta": 1.0, "contrast": 30.0, "tau": 1.0, "lr": 0.1, "steps": 500, "m": 14, "noise": 0.05,
    "anchors": "own", "anchor_steps": 200, "anchor_lr": 0.05, "init": 0.1, "feat": "post", "multi": 1,
    "swa": 0.0, "sets": 15, "group": 3, "seed": 0,
}

STAGES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "1": [
        ("base", {}), ("contrast0", {"contrast": 0.0}), ("shared_noise0", {"anchors": "shared", "noise": 0.0}),
        ("pre_relu", {"feat": "pre"}), ("multi3", {"multi": 3}), ("swa50", {"swa": 0.5}),
        ("noise0", {"noise": 0.0}), ("noise0.1", {"noise": 0.1}), ("noise0.15", {"noise": 0.15}),
        ("m7_s1000", {"m": 7, "steps": 1000}), ("m28_s250", {"m": 28, "steps": 250}),
        ("sets6x250", {"steps": 250, "sets": 18, "group": 6}), ("lr0.05", {"lr": 0.05}), ("lr0.2", {"lr": 0.2}),
        ("contrast20", {"contrast": 20.0}), ("contrast50", {"contrast": 50.0}), ("beta0.5", {"beta": 0.5}),
        ("beta2", {"beta": 2.0}), ("combo_m7_s1000_lr0.2", {"m": 7, "steps": 1000, "lr": 0.2}),
        ("base_seed1", {"seed": 1}),
    ],
    "2": [
        ("m4_s1750_lr0.2", {"m": 4, "steps": 1750, "lr": 0.2}), ("m7_s1000_lr0.3", {"m": 7, "steps": 1000, "lr": 0.3}),
        ("m7_s1000_lr0.2_seed1", {"m": 7, "steps": 1000, "lr": 0.2, "seed": 1}),
        ("m7_s1000_lr0.2_noise0", {"m": 7, "steps": 1000, "lr": 0.2, "noise": 0.0}),
        ("m5_s1400_lr0.2", {"m": 5, "steps": 1400, "lr": 0.2}),
        ("m7_s1000_lr0.2_multi3", {"m": 7, "steps": 1000, "lr": 0.2, "multi": 3}),
        ("m7_s1000_lr0.2_beta0.5", {"m": 7, "steps": 1000, "lr": 0.2, "beta": 0.5}),
        ("m4_s1750_lr0.3", {"m": 4, "steps": 1750, "lr": 0.3}),
    ],
}


def export(run_dirs: list[Path], out: Path) -> None:
    """What the screen needs from each HijackFL run directory, in one torch file."""
    from siegecraft.attacks.hijackfl.adapter import load_hijack_data
    from siegecraft.core.workload import build_workload
    from siegecraft.drivers.experiment import build_experiment

    feds = {}
    for run in run_dirs:
        raw = tomllib.loads((run / "config.toml").read_text())
        final = json.loads((run / "summary.json").read_text())["final"]
        snap_file = run / "checkpoints" / f"round-{final['snapshot_round'] - 1:05d}.pt"
        if not snap_file.exists():
            raise SystemExit(f"{snap_file} is missing: the run needs the checkpoint its snapshot was taken from")
        work = build_workload(build_experiment({**raw, "attack": {"name": "none"}}))
        shape = work.model_factory().input_shape
        opts = raw["attack"]["options"]
        data = load_hijack_data(opts["dataset"], opts["num_classes"], shape,
                                samples_per_class=opts.get("samples_per_class"), seed=raw["seed"])
        feds[run.name] = {
            "model": {"name": raw["model"]["name"], "options": raw["model"].get("options", {}),
                      "in_channels": shape[0], "image_size": shape[1], "num_classes": work.train.num_classes},
            "snapshot": torch.load(snap_file, weights_only=False)["weights"],
            "final": torch.load(run / "final_weights.pt", weights_only=False),
            "targets": final["mapping"], "negative": final["negative_class"], "seed": raw["seed"],
            "x": data.train.x, "y": data.train.y,
        }
    torch.save(feds, out)
    print(f"{len(feds)} federations -> {out}")


def frozen(spec: dict[str, Any], flat: torch.Tensor) -> torch.nn.Module:
    model = build_model(spec["name"], in_channels=spec["in_channels"], num_classes=spec["num_classes"],
                        image_size=spec["image_size"], **spec["options"])
    load_flat_params(model, flat)
    model.to(DEV).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_inputs(path: Path) -> dict[str, dict[str, Any]]:
    feds = {}
    for name, d in torch.load(path, weights_only=False).items():
        gen = torch.Generator().manual_seed(123)
        fit, val = [], []
        for c in range(int(d["y"].max()) + 1):
            idx = (d["y"] == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=gen)]
            val.append(idx[:VALIDATION_PER_CLASS])
            fit.append(idx[VALIDATION_PER_CLASS:])
        fit_y = d["y"][torch.cat(fit)]
        feds[name] = {
            "snap": frozen(d["model"], d["snapshot"]), "final": frozen(d["model"], d["final"]),
            "targets": list(d["targets"]), "negative": int(d["negative"]), "seed": int(d["seed"]),
            "fit_x": d["x"][torch.cat(fit)].to(DEV),
            "pools": torch.stack([(fit_y == c).nonzero().flatten() for c in range(int(d["y"].max()) + 1)]).to(DEV),
            "val_x": d["x"][torch.cat(val)].to(DEV), "val_y": d["y"][torch.cat(val)].to(DEV),
        }
    return feds


def anchor_inputs(model: torch.nn.Module, classes: list[int], seeds: list[int], steps: int, lr: float,
                  restarts: int = 4) -> tuple[torch.Tensor, float]:
    """[len(seeds), len(classes), C, H, W]: the authors' maximum-confidence search from each seed, stalled
    (< 0.9) inputs retried from fresh starts; returns the least confidence left."""
    n, shape = len(classes), model.input_shape
    cls = torch.tensor(classes, device=DEV)

    def optimise(z0: torch.Tensor, target_cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z0.clone().requires_grad_(True)
        target = F.one_hot(target_cls, model.num_classes).float()
        opt = torch.optim.Adam([z], lr=lr, betas=(0.5, 0.999))
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            probs = model(torch.sigmoid(z)).softmax(1)
            F.binary_cross_entropy(probs, target, reduction="sum").div(n * model.num_classes).backward()
            opt.step()
        x = torch.sigmoid(z.detach())
        with torch.no_grad():
            conf = model(x).softmax(1)[torch.arange(len(x)), target_cls]
        return x, conf

    z0 = torch.cat([torch.randn((n, *shape), generator=torch.Generator().manual_seed(s)) for s in seeds])
    all_cls = cls.repeat(len(seeds))
    x, conf = optimise(z0.to(DEV), all_cls)
    for r in range(1, restarts + 1):
        weak = (conf < 0.9).nonzero().flatten()
        if len(weak) == 0:
            break
        # fresh starts from one seed per restart round (the package restarts each set from seed + r)
        z1 = torch.randn((len(weak), *shape), generator=torch.Generator().manual_seed(777 + r)).to(DEV)
        x1, c1 = optimise(z1, all_cls[weak])
        better = c1 > conf[weak]
        x[weak[better]] = x1[better]
        conf[weak[better]] = c1[better]
    return x.view(len(seeds), n, *shape), float(conf.min())


def search(fed: dict[str, Any], v: dict[str, Any]) -> tuple[torch.Tensor, float]:
    """S cloak sets [S, K, C, H, W] (pattern logits) searched together on the snapshot."""
    snap, k, sets, multi = fed["snap"], len(fed["targets"]), v["sets"], v["multi"]
    # "pre": the feature layer before its ReLU (the zoo's `cnn` layout)
    feat = (lambda x: snap.fc[1](snap.fc[0](snap.convs(x)))) if v["feat"] == "pre" else snap.features
    if v["anchors"] == "own":  # set s from seed + 1000 s, as the package's anchors_per_set
        seeds = [v["seed"] + fed["seed"] + 1000 * s + 100000 * j for s in range(sets) for j in range(multi)]
    else:  # every set shares the federation's anchors
        seeds = [fed["seed"] + 100000 * j for _ in range(sets) for j in range(multi)]
    ax, least = anchor_inputs(snap, [*fed["targets"], fed["negative"]], seeds, v["anchor_steps"], v["anchor_lr"])
    with torch.no_grad():
        af = feat(ax.flatten(0, 1)).view(sets, multi, k + 1, -1)
    targets, negative = af[:, :, :k], af[:, :, k]  # [S, M, K, D], [S, M, D]
    pools, m = fed["pools"], v["m"]
    gen = torch.Generator(device=DEV).manual_seed(v["seed"] * 7919 + fed["seed"] + 1)
    shape = snap.input_shape
    w = torch.cat([torch.randn((1, k, *shape), generator=torch.Generator().manual_seed(v["seed"] + fed["seed"] + 1000 * s))
                   for s in range(sets)]).to(DEV).mul(v["init"]).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=v["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=v["steps"])
    labels = torch.arange(k, device=DEV).repeat_interleave(m)
    mine = labels[None, :] == torch.arange(k, device=DEV)[:, None]  # [K, B]
    swa_from = int(v["steps"] * (1 - v["swa"])) if v["swa"] > 0 else v["steps"]
    w_sum, n_sum = torch.zeros_like(w), 0
    for step in range(v["steps"]):
        pick = torch.randint(pools.shape[1], (sets, k, m), generator=gen, device=DEV)
        x = fed["fit_x"][pools[torch.arange(k, device=DEV)[None, :, None], pick].flatten(1)]  # [S, B, C, H, W]
        if v["noise"]:
            x = (x + v["noise"] * torch.randn(x.shape, generator=gen, device=DEV)).clamp(0, 1)
        cloaked = v["alpha"] * x[:, None] + (1 - v["alpha"]) * torch.sigmoid(w)[:, :, None]  # [S, K, B, ...]
        f = feat(cloaked.flatten(0, 2)).view(sets, k, k * m, -1)[:, None]
        dist = (f - targets[..., None, :]).norm(dim=-1).min(1).values  # [S, K, B], nearest of M anchors
        dist_neg = (f - negative[:, :, None, None]).norm(dim=-1).min(1).values
        pull = (dist * mine).sum(-1) / mine.sum(-1)
        push = (dist_neg * ~mine).sum(-1) / (~mine).sum(-1)
        loss = (pull + v["beta"] * push).sum()
        if v["contrast"] > 0:
            logits = (-dist / v["tau"]).permute(0, 2, 1).flatten(0, 1)
            loss = loss + v["contrast"] * k * F.cross_entropy(logits, labels.repeat(sets), reduction="sum") / (k * m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= swa_from:
            w_sum += w.detach()
            n_sum += 1
    return (w_sum / n_sum if n_sum else w.detach()), least


@torch.no_grad()
def mapped_probs(model: torch.nn.Module, fed: dict[str, Any], w: torch.Tensor, alpha: float) -> torch.Tensor:
    """[S, N, K]: probability of cloak k's mapped class for validation digit n under cloak k of set s."""
    k, xs = w.shape[1], fed["val_x"]
    tg = torch.tensor(fed["targets"], device=DEV)
    out = []
    for ws in w:
        q = alpha * xs[None] + (1 - alpha) * torch.sigmoid(ws)[:, None]
        p = model(q.flatten(0, 1)).softmax(1).view(k, len(xs), -1)
        out.append(p[torch.arange(k), :, tg].T)
    return torch.stack(out)


def evaluate(fed: dict[str, Any], v: dict[str, Any], w: torch.Tensor) -> dict[str, Any]:
    groups = [list(range(i, i + v["group"])) for i in range(0, v["sets"] - v["group"] + 1, v["group"])]
    y = fed["val_y"]
    res: dict[str, Any] = {}
    for name in ("final", "snap"):
        p = mapped_probs(fed[name], fed, w, v["alpha"])
        ens = torch.tensor([float((p[g].sum(0).argmax(1) == y).float().mean()) for g in groups])
        res[f"{name}_ens"] = round(float(ens.mean()), 4)
        if name == "final":
            logsum = [float((p[g].clamp_min(1e-12).log().sum(0).argmax(1) == y).float().mean()) for g in groups]
            res.update(
                final_ens_sd=round(float(ens.std()), 4) if len(ens) > 1 else 0.0,
                final_ens_each=[round(float(e), 4) for e in ens],
                final_single=round(float(sum((p[s].argmax(1) == y).float().mean() for s in range(len(p))) / len(p)), 4),
                final_ens_logsum=round(sum(logsum) / len(logsum), 4),  # log-probabilities summed instead
                final_all_sets=round(float((p.sum(0).argmax(1) == y).float().mean()), 4),  # one ensemble of all S
            )
    return res


def screen(inputs: Path, stage: str, out: Path, budget_s: float) -> None:
    feds = load_inputs(inputs)
    t0 = time.time()
    print(f"device {DEV}; federations {list(feds)}", flush=True)
    with out.open("a") as log:
        for name, change in STAGES[stage]:
            if time.time() - t0 > budget_s:
                print(f"budget of {budget_s:.0f} s spent before {name}", flush=True)
                break
            v = {**BASE, **change}
            row: dict[str, Any] = {"setting": name, "change": change, "stage": stage, "device": DEV}
            for fname, fed in feds.items():
                t = time.time()
                w, least = search(fed, v)
                row[fname] = {**evaluate(fed, v, w), "anchor_min": round(least, 4), "s": round(time.time() - t, 1)}
            row["mean_final_ens"] = round(sum(row[f]["final_ens"] for f in feds) / len(feds), 4)
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(name, row["mean_final_ens"], {f: row[f]["final_ens"] for f in feds}, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write the screen's inputs from HijackFL run directories")
    ex.add_argument("runs", nargs="+", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    sc = sub.add_parser("screen", help="run a stage's settings on exported federations")
    sc.add_argument("inputs", type=Path)
    sc.add_argument("--stage", choices=sorted(STAGES), default="1")
    sc.add_argument("--out", type=Path, default=Path("hijackfl_screen.jsonl"))
    sc.add_argument("--budget-s", type=float, default=float("inf"), help="start no new setting after this")
    args = parser.parse_args(argv)
    if args.cmd == "export":
        export(args.runs, args.out)
    else:
        screen(args.inputs, args.stage, args.out, args.budget_s)


if __name__ == "__main__":
    main()
