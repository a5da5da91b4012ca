"""The Flower bridge: the quickstart federation on both engines, and the bridge's cost over plain Flower.

1. Accuracy side by side: experiments/quickstart.toml (10 Fashion-MNIST clients, Dirichlet 0.5, cnn,
   5 FedAvg rounds, client 3 a HijackFL adversary) run as is with `[fl] engine = "siegecraft"` and with
   `engine = "flower"` (Flower 1.41's `run_simulation`, Ray backend), once each: final clean accuracy and
   hijacking accuracy (`hijack_acc`, with cloaks).
2. Overhead: the same federation without the attack, (a) through the bridge (`engine = "flower"`: the
   SiegecraftStrategy, siegecraft sampling, SiegecraftClient, the run directory) and (b) as plain Flower
   (a NumPyClient running the same local SGD loop on the same partition, Flower's FedAvg, the same
   central evaluation every round). Each measurement runs in a fresh interpreter, timed from before the
   data is loaded to after the final evaluation (Ray start and stop included on both sides; report.html
   off, since it is the driver's, not the bridge's); the two are interleaved per repeat and the ratio of
   medians bridge / plain is reported (target <= 1.10).
Writes benchmarks/results/flower_bridge.json.

    .venv/bin/python benchmarks/flower_bridge.py                      # 3 overhead repeats
    .venv/bin/python benchmarks/flower_bridge.py --repeats 1 --limit 6000   # a quick smoke run
    .venv/bin/python benchmarks/flower_bridge.py --overhead-limit 10000     # full quickstart; lighter repeats
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

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results" / "flower_bridge.json"
QUICKSTART = ROOT / "experiments" / "quickstart.toml"
WORKERS = 2  # Ray actors, one CPU each (this machine has 2 cores)


def quickstart(engine: str, *, attack: bool, limit: int | None) -> dict[str, Any]:
    """The quickstart's raw config on `engine`, with or without its HijackFL client."""
    from siegecraft.core.config import read_toml

    raw = read_toml(QUICKSTART)
    raw["fl"] = {**raw["fl"], "engine": engine}
    raw["runtime"] = {"workers": WORKERS}
    if not attack:
        raw.pop("attack", None)
        raw["output"] = {"report": False}
    if limit:
        raw["data"] = {**raw["data"], "train_limit": limit}
    return raw


def measure_engine(engine: str, attack: bool, limit: int | None) -> dict[str, Any]:
    """One siegecraft run (either engine): wall time, accuracy and (with the attack) hijacking accuracy."""
    from siegecraft.drivers.experiment import build_experiment
    from siegecraft.drivers.runner import run_experiment

    exp = build_experiment(quickstart(engine, attack=attack, limit=limit))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = run_experiment(exp, out_root=tmp)
        seconds = time.perf_counter() - t0
        final = run.read_summary()["final"]
    return {"seconds": seconds, "accuracy": final["accuracy"], "hijack_acc": final.get("hijack_acc")}


# -- plain Flower: the same federation without the bridge (imported by name inside Ray actors) -------------
_CACHE: dict[str, Any] = {}


def plain_workload(limit: int | None) -> Any:
    """The quickstart's experiment object, its data, the partition and model factory (once per process)."""
    if "work" not in _CACHE:
        from siegecraft.core.data.partition import partition
        from siegecraft.core.workload import build_workload
        from siegecraft.drivers.experiment import build_experiment

        exp = build_experiment(quickstart("siegecraft", attack=False, limit=limit))
        work = build_workload(exp)
        d = exp.data
        _CACHE.update(exp=exp, work=work,
                      parts=partition(work.train.y, exp.fl.clients, d.partition, seed=exp.seed, **d.partition_params()))
    return _CACHE["exp"], _CACHE["work"], _CACHE["parts"]


def get_arrays(model: Any) -> list:
    """The model's state_dict tensors as ndarrays: what a typical Flower PyTorch client sends."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_arrays(model: Any, arrays: list) -> None:
    import torch

    model.load_state_dict({k: torch.from_numpy(a.copy()) for k, a in zip(model.state_dict(), arrays)}, strict=True)


def plain_client_fn(context: Any) -> Any:
    """A hand-written Flower NumPyClient: load the weights, run the local SGD loop, return the weights."""
    import torch
    from flwr.client import NumPyClient

    from siegecraft.core.training import local_train
    from siegecraft.engines.federated.sampling import client_seed

    torch.set_num_threads(1)
    cid = int(context.node_config["partition-id"])
    limit = int(os.environ.get("BENCH_LIMIT", "0")) or None

    class PlainClient(NumPyClient):
        def fit(self, parameters: list, config: dict) -> tuple[list, int, dict]:
            exp, work, parts = plain_workload(limit)
            model = _CACHE.setdefault("model", work.model_factory())
            set_arrays(model, parameters)
            data = work.train.subset(parts[cid])
            stats = local_train(model, data, exp.train.for_round(int(config["round"])),
                                seed=client_seed(exp.seed, int(config["round"]), cid))
            return get_arrays(model), len(data), {"loss": stats["loss"]}

    return PlainClient().to_client()


def measure_plain(limit: int | None) -> dict[str, Any]:
    import flower_bridge as bench  # by module name, so Ray actors import it instead of unpickling copies
    from flwr.client import ClientApp
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from siegecraft.core.training import evaluate

    if limit:
        os.environ["BENCH_LIMIT"] = str(limit)  # read by the actors, which Ray starts after this
    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    exp, work, _ = bench.plain_workload(limit)
    eval_model = work.model_factory()
    rounds, clients = exp.fl.rounds, exp.fl.clients

    def evaluate_fn(rnd: int, parameters: list, config: dict) -> tuple[float, dict] | None:
        if rnd == 0:
            return None
        bench.set_arrays(eval_model, parameters)
        res = evaluate(eval_model, work.test)
        result["accuracy"] = res.accuracy
        return res.loss, {"accuracy": res.accuracy}

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(fraction_fit=1.0, min_fit_clients=clients, min_available_clients=clients,
                          fraction_evaluate=0.0, min_evaluate_clients=0, evaluate_fn=evaluate_fn,
                          on_fit_config_fn=lambda rnd: {"round": rnd},
                          initial_parameters=ndarrays_to_parameters(bench.get_arrays(eval_model)))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"address": "local", "num_cpus": WORKERS, "logging_level": "ERROR",
                             "include_dashboard": False}}
    run_simulation(ServerApp(server_fn=server_fn), ClientApp(client_fn=bench.plain_client_fn),
                   num_supernodes=clients, backend_config=backend)
    result["seconds"] = time.perf_counter() - t0
    return result


# -- driver ---------------------------------------------------------------------------------------
def measure_one(system: str, limit: int | None) -> dict[str, Any]:
    if system == "plain":
        return measure_plain(limit)
    engine, _, kind = system.partition(":")
    return measure_engine(engine, kind == "hijack", limit)


def run_child(system: str, limit: int | None, timeout: float) -> dict[str, Any]:
    """One measurement in a fresh interpreter; the last 'RESULT ' line of its output is the answer."""
    cmd = [sys.executable, __file__, "--one", system] + (["--limit", str(limit)] if limit else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{system} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="overhead repeats (bridge and plain interleaved)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training samples (smoke runs)")
    ap.add_argument("--overhead-limit", type=int, default=None,
                    help="training samples for the overhead repeats only (default: --limit)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per measurement")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure_one(args.one, args.limit)), flush=True)
        return
    load_before = os.getloadavg()
    engines = {}
    for engine in ("siegecraft", "flower"):
        engines[engine] = run_child(f"{engine}:hijack", args.limit, args.timeout)
        print(f"quickstart on {engine:10s} {engines[engine]['seconds']:7.1f} s  accuracy "
              f"{engines[engine]['accuracy']:.4f}  hijack_acc {engines[engine]['hijack_acc']}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"bridge": [], "plain": []}
    overhead_limit = args.overhead_limit or args.limit
    for rep in range(args.repeats):
        for system, child in (("bridge", "flower:plain"), ("plain", "plain")):
            res = run_child(child, overhead_limit, args.timeout)
            runs[system].append(res)
            print(f"repeat {rep + 1} {system:7s} {res['seconds']:7.1f} s  accuracy {res['accuracy']:.4f}  "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    median = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    result = {
        "accuracy": {k: v["accuracy"] for k, v in engines.items()},
        "hijack_acc": {k: v["hijack_acc"] for k, v in engines.items()},
        "bridge_overhead": median["bridge"] / median["plain"],
        "pair_ratios": [b["seconds"] / p["seconds"] for b, p in zip(runs["bridge"], runs["plain"])],
        "bridge_overhead_target": 1.10,
        "engine_seconds": {k: v["seconds"] for k, v in engines.items()},
        "overhead_runs": {k: {"median_s": median[k], "runs_s": [r["seconds"] for r in v],
                              "accuracy": [r["accuracy"] for r in v]} for k, v in runs.items()},
        "workload": {"config": "experiments/quickstart.toml", "train_limit": args.limit,
                     "overhead_train_limit": overhead_limit, "workers": WORKERS, "repeats": args.repeats,
                     "overhead_without_attack": True},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"accuracy siegecraft {result['accuracy']['siegecraft']:.4f} / flower {result['accuracy']['flower']:.4f}; "
          f"hijack_acc siegecraft {result['hijack_acc']['siegecraft']} / flower {result['hijack_acc']['flower']}; "
          f"bridge / plain Flower = {result['bridge_overhead']:.3f}x (target <= 1.10); per repeat "
          f"{', '.join(f'{r:.2f}' for r in result['pair_ratios'])}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
