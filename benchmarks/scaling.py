"""Scaling with the number of clients: 10, 100, 1,000 and 10,000 clients, 10 of them per round.

Workload: Fashion-MNIST (60,000 images) split IID over N clients, `cnn`, each sampled client runs a
fixed 20 local SGD steps of batch 32, so every round does the same compute whatever N is, as long as
a client holds >= 32 samples: at 10,000 clients a client holds 6, and `local_train` cycles its one short
batch, so each of the 20 steps is a batch of 6 (about 1/5 of the compute per step; see `samples_per_step`);
4 rounds, evaluation only after the last. Reported per executor and N:
- seconds per round: median `round_s` of the rounds without evaluation (round 1 reported apart: warm-up);
- peak memory: the largest summed PSS (proportional set size: shared pages such as the forked training
  set counted once) of the run's process and all its descendants, sampled every 0.25 s from /proc
  (Linux), plus the main process's peak RSS.
The check: going from 10 to 1,000 clients adds 990 idle clients; a model copy per client would add
990 x the model's size, while siegecraft should add only their index arrays (the partitions of the
same 60,000 samples). `model_copies_in_growth` = memory growth / model size says which happened.
Each configuration runs 3 times, each in a fresh subprocess; medians are reported. Writes benchmarks/results/scaling.json.

    .venv/bin/python benchmarks/scaling.py                       # inline and processes
    .venv/bin/python benchmarks/scaling.py --executors ray       # Ray actors live outside this tree:
                                                                 # their memory is not in the figure
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results" / "scaling.json"
CLIENT_COUNTS = (10, 100, 1000, 10000)
MEDIAN_KEYS = ("s_per_round", "first_round_s", "peak_pss_mb", "peak_rss_main_mb", "cpu_s", "total_s")
PER_ROUND, ROUNDS, STEPS, BATCH, LR, SEED, WORKERS = 10, 4, 20, 32, 0.05, 0, 2


def config(executor: str, clients: int) -> dict[str, Any]:
    return {
        "name": f"scaling-{executor}-{clients}", "seed": SEED,
        "data": {"dataset": "fashion_mnist", "partition": "iid"},
        "model": {"name": "cnn"},
        "train": {"lr": LR, "batch_size": BATCH, "steps": STEPS},
        "fl": {"rounds": ROUNDS, "clients": clients, "clients_per_round": PER_ROUND, "eval_every": ROUNDS},
        "runtime": {"executor": executor, "workers": WORKERS},
        "output": {"report": False},
    }


# -- memory of a process tree, from /proc ------------------------------------------------------------
def descendants(root: int) -> list[int]:
    """`root` and every process below it (by parent pid), from one scan of /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree += frontier
    return tree


def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class TreeMonitor:
    """Samples this process tree in a background thread: peak summed PSS, and CPU seconds used.

    CPU time is kept per pid at its largest sample, so helpers that exit early still count (up to the
    last sample before they exit), minus what the process had used before `start()` (imports); it
    measures the work a system does, which a loaded machine does not distort the way it distorts wall time.
    """

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s, self.peak, self.cpu, self.before = every_s, 0, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        tree = descendants(os.getpid())
        self.peak = max(self.peak, sum(pss_bytes(p) for p in tree))
        for p in tree:
            self.cpu[p] = max(self.cpu.get(p, 0.0), cpu_seconds(p))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def start(self) -> None:
        self.before = {p: cpu_seconds(p) for p in descendants(os.getpid())}
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def cpu_s(self) -> float:
        return sum(used - self.before.get(p, 0.0) for p, used in self.cpu.items())


def samples_per_step(n: int) -> float:
    """Mean batch size over the `STEPS` steps of a client with `n` samples: epochs of batches, the last short."""
    epoch = [BATCH] * (n // BATCH) + ([n % BATCH] if n % BATCH else [])
    sizes = (epoch * (STEPS // len(epoch) + 1))[:STEPS]
    return sum(sizes) / STEPS


# -- one measurement -------------------------------------------------------------------------------
def measure(executor: str, clients: int) -> dict[str, Any]:
    from siegecraft.core.models import build_model, num_params
    from siegecraft.drivers.experiment import build_experiment
    from siegecraft.drivers.runner import run_experiment

    exp = build_experiment(config(executor, clients))
    model_bytes = 4 * num_params(build_model("cnn", in_channels=1, num_classes=10, image_size=28))
    mem = TreeMonitor()
    mem.start()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            run = run_experiment(exp, out_root=tmp)
        finally:
            mem.stop()
        seconds = time.perf_counter() - t0
        rounds = [r["round_s"] for r in run.read_metrics()]
        accuracy = run.read_summary()["final"]["accuracy"]
    return {
        "executor": executor, "clients": clients, "total_s": seconds, "round_s": rounds,
        "first_round_s": rounds[0], "s_per_round": statistics.median(rounds[1:-1]),
        "peak_pss_mb": mem.peak / 2**20, "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_mb": model_bytes / 2**20, "accuracy": accuracy, "cpu_s": mem.cpu_s,
        "samples_per_step": samples_per_step(60_000 // clients),
    }


def run_child(executor: str, clients: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", f"{executor}:{clients}"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{executor} x {clients} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Memory and time from the fewest to the most clients, per executor."""
    out = {}
    for ex in sorted({r["executor"] for r in rows}):
        mine = sorted((r for r in rows if r["executor"] == ex), key=lambda r: r["clients"])
        lo, hi = mine[0], mine[-1]
        added = hi["peak_pss_mb"] - lo["peak_pss_mb"]
        out[ex] = {
            "from_clients": lo["clients"], "to_clients": hi["clients"], "pss_growth_mb": added,
            "model_copies_in_growth": added / lo["model_mb"],
            "one_copy_per_added_client_would_add_mb": (hi["clients"] - lo["clients"]) * lo["model_mb"],
            "s_per_round_ratio": hi["s_per_round"] / lo["s_per_round"],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--executors", default="inline,processes")
    ap.add_argument("--clients", default=",".join(map(str, CLIENT_COUNTS)))
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration; medians are reported")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        executor, clients = args.one.split(":")
        print("RESULT " + json.dumps(measure(executor, int(clients))), flush=True)
        return
    rows = []
    load_before = os.getloadavg()
    for executor in [e.strip() for e in args.executors.split(",") if e.strip()]:
        for clients in [int(c) for c in args.clients.split(",")]:
            reps = [run_child(executor, clients, args.timeout) for _ in range(args.repeats)]
            row = {**reps[0], **{k: statistics.median(r[k] for r in reps) for k in MEDIAN_KEYS}}
            row["repeats"] = {k: [r[k] for r in reps] for k in MEDIAN_KEYS}
            rows.append(row)
            print(f"{executor:10s} {clients:5d} clients: {row['s_per_round']:6.2f} s/round "
                  f"(first {row['first_round_s']:.2f}), peak PSS {row['peak_pss_mb']:7.1f} MB "
                  f"(runs {', '.join(f'{v:.0f}' for v in row['repeats']['peak_pss_mb'])})", flush=True)
    result = {
        "rows": rows, "growth": growth(rows),
        "workload": {"dataset": "fashion_mnist", "model": "cnn", "clients_per_round": PER_ROUND, "rounds": ROUNDS,
                     "local_steps": STEPS, "batch_size": BATCH, "workers": WORKERS, "partition": "iid",
                     "repeats": args.repeats},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    for ex, g in result["growth"].items():
        print(f"{ex}: {g['from_clients']} -> {g['to_clients']} clients adds {g['pss_growth_mb']:.1f} MB "
              f"= {g['model_copies_in_growth']:.1f} model copies (one per added client would be "
              f"{g['one_copy_per_added_client_would_add_mb']:.0f} MB); s/round x{g['s_per_round_ratio']:.2f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
