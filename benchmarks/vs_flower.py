"""siegecraft (each executor) against Flower 1.41's simulation engine on the same federated workload.

Workload: Fashion-MNIST (60,000 training images), `cnn`, 50 IID clients (the same partition for both),
10 clients per round, 5 rounds, 1 local epoch, batch 64, SGD lr 0.05 momentum 0.9, the final global
model evaluated once on the 10,000 test images. Both sides train with the same model and the same local
SGD loop (`siegecraft.core.training.local_train`), single-threaded per client worker, so the comparison is of
the engines: how clients are scheduled, how weights travel, what each round costs.

Flower runs its legacy NumPyClient API under `flwr.simulation.run_simulation` (Ray backend, 1 CPU per
client actor, a private local Ray instance). Every measurement runs in a fresh subprocess and is timed
from before the data is loaded to after the final evaluation (interpreter and imports excluded on both
sides); the systems are interleaved per repeat and medians are reported, so drift on a shared machine
hits all alike. Writes benchmarks/results/vs_flower.json.

    .venv/bin/python benchmarks/vs_flower.py                 # 3 repeats, every executor, Flower
    .venv/bin/python benchmarks/vs_flower.py --repeats 1 --limit 6000   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results" / "vs_flower.json"
CLIENTS, PER_ROUND, ROUNDS, EPOCHS, BATCH, LR, MOMENTUM, SEED = 50, 10, 5, 1, 64, 0.05, 0.9, 0
WORKERS = 2  # worker processes / Ray actors, one CPU each (this machine has 2 cores)
SYSTEMS = ("siegecraft:inline", "siegecraft:processes", "siegecraft:ray", "flower")


# -- siegecraft -----------------------------------------------------------------------------------
def siegecraft_config(executor: str, limit: int | None) -> dict[str, Any]:
    return {
        "name": f"vs-flower-{executor}", "seed": SEED,
        "data": {"dataset": "fashion_mnist", "partition": "iid", "train_limit": limit},
        "model": {"name": "cnn"},
        "train": {"lr": LR, "momentum": MOMENTUM, "batch_size": BATCH, "epochs": EPOCHS},
        "fl": {"rounds": ROUNDS, "clients": CLIENTS, "clients_per_round": PER_ROUND, "eval_every": ROUNDS},
        "runtime": {"executor": executor, "workers": WORKERS},
        "output": {"report": False},
    }


def measure_siegecraft(executor: str, limit: int | None) -> dict[str, Any]:
    from siegecraft.drivers.experiment import build_experiment
    from siegecraft.drivers.runner import run_experiment

    exp = build_experiment(siegecraft_config(executor, limit))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = run_experiment(exp, out_root=tmp)
        seconds = time.perf_counter() - t0
        rounds = [r["round_s"] for r in run.read_metrics()]
        return {"seconds": seconds, "accuracy": run.read_summary()["final"]["accuracy"], "round_s": rounds}


# -- Flower (imported by name inside Ray actors, so the data cache below lives once per actor) ---------
_CACHE: dict[str, Any] = {}


def client_data(limit: int | None) -> tuple[Any, list]:
    """The training set and the same IID partition siegecraft uses, loaded once per process."""
    if "train" not in _CACHE:
        from siegecraft.core.data.datasets import load_dataset
        from siegecraft.core.data.partition import partition

        train = load_dataset("fashion_mnist", "train")
        if limit:
            train = train.subset(list(range(limit)))
        _CACHE["train"] = train
        _CACHE["parts"] = partition(train.y, CLIENTS, "iid", seed=SEED)
    return _CACHE["train"], _CACHE["parts"]


def new_model() -> Any:
    import torch

    from siegecraft.core.models import build_model

    torch.manual_seed(SEED)
    return build_model("cnn", in_channels=1, num_classes=10, image_size=28)


def get_ndarrays(model: Any) -> list:
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_ndarrays(model: Any, arrays: list) -> None:
    import torch

    state = {k: torch.from_numpy(a.copy()) for k, a in zip(model.state_dict(), arrays)}
    model.load_state_dict(state, strict=True)


def flower_client_fn(context: Any) -> Any:
    """A NumPyClient for partition `partition-id`: the same local SGD loop siegecraft's clients run."""
    import torch
    from flwr.client import NumPyClient

    from siegecraft.core.training import TrainConfig, local_train
    from siegecraft.engines.federated.sampling import client_seed

    torch.set_num_threads(1)
    cid = int(context.node_config["partition-id"])
    limit = int(os.environ.get("BENCH_LIMIT", "0")) or None  # set by the driver before Ray starts

    class BenchClient(NumPyClient):
        def fit(self, parameters: list, config: dict) -> tuple[list, int, dict]:
            train, parts = client_data(limit)
            data = train.subset(parts[cid])
            model = _CACHE.setdefault("model", new_model())
            set_ndarrays(model, parameters)
            cfg = TrainConfig(lr=LR, momentum=MOMENTUM, batch_size=BATCH, epochs=EPOCHS)
            stats = local_train(model, data, cfg, seed=client_seed(SEED, int(config["round"]), cid))
            return get_ndarrays(model), len(data), {"loss": stats["loss"]}

    return BenchClient().to_client()


def measure_flower(limit: int | None) -> dict[str, Any]:
    import vs_flower as bench  # by module name, so Ray actors import it instead of unpickling copies
    from flwr.client import ClientApp
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from siegecraft.core.data.datasets import load_dataset
    from siegecraft.core.training import evaluate

    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    test = load_dataset("fashion_mnist", "test")
    eval_model = bench.new_model()

    def evaluate_fn(server_round: int, parameters: list, config: dict) -> tuple[float, dict] | None:
        if server_round != ROUNDS:  # like siegecraft's eval_every=ROUNDS: only the final model
            return None
        bench.set_ndarrays(eval_model, parameters)
        res = evaluate(eval_model, test)
        result["accuracy"] = res.accuracy
        return res.loss, {"accuracy": res.accuracy}

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(
            fraction_fit=PER_ROUND / CLIENTS, min_fit_clients=PER_ROUND, min_available_clients=CLIENTS,
            fraction_evaluate=0.0, min_evaluate_clients=0, evaluate_fn=evaluate_fn,
            on_fit_config_fn=lambda rnd: {"round": rnd},
            initial_parameters=ndarrays_to_parameters(bench.get_ndarrays(bench.new_model())),
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=ROUNDS))

    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"address": "local", "num_cpus": WORKERS, "logging_level": "ERROR"},
    }
    if limit:
        os.environ["BENCH_LIMIT"] = str(limit)
    run_simulation(ServerApp(server_fn=server_fn), ClientApp(client_fn=bench.flower_client_fn),
                   num_supernodes=CLIENTS, backend_config=backend)
    result["seconds"] = time.perf_counter() - t0
    return result


# -- driver ---------------------------------------------------------------------------------------
def measure_one(system: str, limit: int | None) -> dict[str, Any]:
    """Wall time and accuracy of one system, plus the CPU seconds its whole process tree used."""
    from scaling import TreeMonitor  # the sibling benchmark's /proc sampler

    monitor = TreeMonitor()
    monitor.start()
    try:
        result = measure_flower(limit) if system == "flower" else measure_siegecraft(system.split(":", 1)[1], limit)
    finally:
        monitor.stop()
    return {**result, "cpu_s": monitor.cpu_s}


def run_child(system: str, limit: int | None, timeout: float) -> dict[str, Any]:
    """One measurement in a fresh interpreter; the last 'RESULT ' line of its output is the answer."""
    cmd = [sys.executable, __file__, "--one", system] + (["--limit", str(limit)] if limit else [])
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{system} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    per_system = {
        name: {"median_s": statistics.median(r["seconds"] for r in rs), "runs_s": [r["seconds"] for r in rs],
               "median_cpu_s": statistics.median(r["cpu_s"] for r in rs), "accuracy": [r["accuracy"] for r in rs]}
        for name, rs in runs.items() if rs
    }
    for name, rs in runs.items():  # steady state: rounds 2.. of every run (round 1 includes workers booting)
        later = [s for r in rs for s in r.get("round_s", [])[1:]]
        if later:
            per_system[name]["median_round_s"] = statistics.median(later)
    ours = {k: v for k, v in per_system.items() if k.startswith("siegecraft:")}
    best = min(ours, key=lambda k: ours[k]["median_s"])
    out: dict[str, Any] = {"best_executor": best.split(":", 1)[1], "siegecraft_s": ours[best]["median_s"],
                           "siegecraft_acc": statistics.median(ours[best]["accuracy"])}
    if "flower" in per_system:
        fl = per_system["flower"]
        out.update({"flower_s": fl["median_s"], "flower_acc": statistics.median(fl["accuracy"]),
                    "speedup": fl["median_s"] / ours[best]["median_s"],
                    "cpu_ratio": fl["median_cpu_s"] / ours[best]["median_cpu_s"]})
        out["accuracy_gap_points"] = 100 * (out["siegecraft_acc"] - out["flower_acc"])
    if "siegecraft:ray" in per_system and "siegecraft:processes" in per_system:  # issue #22's report key
        ray_s, proc_s = per_system["siegecraft:ray"], per_system["siegecraft:processes"]
        out["ray_vs_processes"] = ray_s["median_s"] / proc_s["median_s"]
        if "median_round_s" in ray_s and "median_round_s" in proc_s:  # per-round cost, without the fixed costs
            out["ray_vs_processes_round"] = ray_s["median_round_s"] / proc_s["median_round_s"]
    out["systems"] = per_system
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training samples (smoke runs)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per measurement")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure_one(args.one, args.limit)), flush=True)
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    load_before = os.getloadavg()
    for rep in range(args.repeats):
        for system in systems:
            res = run_child(system, args.limit, args.timeout)
            runs[system].append(res)
            print(f"repeat {rep + 1} {system:22s} {res['seconds']:7.1f} s  cpu {res['cpu_s']:7.1f} s  "
                  f"accuracy {res['accuracy']:.4f}  (load {os.getloadavg()[0]:.1f})", flush=True)
    result = summarise(runs)
    result["workload"] = {"dataset": "fashion_mnist", "train_limit": args.limit, "model": "cnn", "clients": CLIENTS,
                          "clients_per_round": PER_ROUND, "rounds": ROUNDS, "local_epochs": EPOCHS,
                          "batch_size": BATCH, "lr": LR, "momentum": MOMENTUM, "workers": WORKERS,
                          "repeats": args.repeats, "partition": "iid"}
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    if "speedup" in result:
        print(f"best siegecraft executor: {result['best_executor']} {result['siegecraft_s']:.1f} s "
              f"(acc {result['siegecraft_acc']:.4f}); Flower {result['flower_s']:.1f} s "
              f"(acc {result['flower_acc']:.4f}); speedup {result['speedup']:.2f}x (target >= 2); "
              f"Flower uses {result['cpu_ratio']:.2f}x the CPU seconds")
    if "ray_vs_processes" in result:
        print(f"ray / processes: {result['ray_vs_processes']:.2f}x (target <= 1.2); per round (rounds 2..): "
              f"{result.get('ray_vs_processes_round', float('nan')):.2f}x")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
