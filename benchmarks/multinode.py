"""A federated run on a local two-node Ray cluster, checked bit for bit against `inline` (issue #22).

Starts a Ray head and a second node on 127.0.0.1 with `ray start`, each with its own temp directory and
`--num-cpus 1`; the run joins through `runtime.address` with `workers = 2`, and as every actor asks for one
CPU, Ray must put one actor on each node, so clients train on both. The final weights are compared with an
`inline` run of the same config (`torch.equal`, one torch thread in both). Only the processes of this
cluster are stopped afterwards (`ray stop` would stop every Ray on the machine, so it is not used).
If `benchmarks/citadel_network.py` exists (Citadel over a network transport), its `measure()` adds
`citadel_network_vs_shm` and `citadel_same_aggregate`; otherwise both are null with a reason.
Writes benchmarks/results/multinode.json.

    .venv/bin/python benchmarks/multinode.py [--rounds 2] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch

from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated import engine

OUT = Path(__file__).resolve().parent / "results" / "multinode.json"
NODES = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"no Ray head listening on port {port} after {timeout_s} s")


def stop_node(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """End one `ray start --block` node and everything it started (its own session, so its own group)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # --block: the node stops its raylet, GCS, workers on SIGTERM
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever it left in its group (only this node's processes)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout_s)


@dataclass
class LocalCluster:
    """A running local cluster: the address a driver joins, and the pid of each node's `ray start`."""

    address: str
    node_pids: list[int] = field(default_factory=list)  # each also the id of that node's process group


@contextmanager
def local_cluster(nodes: int = NODES, cpus_per_node: int = 1) -> Iterator[LocalCluster]:
    """A Ray cluster of `nodes` nodes on 127.0.0.1 (a head, then `nodes - 1` joining it), stopped on exit.

    Each node has its own short temp directory (Unix socket paths must stay under 107 characters) and runs
    in its own session, so stopping it kills only its processes, never another user's Ray. Sets
    RAY_AUTH_MODE=disabled (Ray 2.6x's default token auth is not found by a local driver) for the nodes
    and for this process, and RAY_ADDRESS to the cluster; both are restored on exit.
    """
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        raise FileNotFoundError("the `ray` command is not installed (pip install 'siegecraft[ray]')")
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", f"--num-cpus={cpus_per_node}", "--num-gpus=0", "--node-ip-address=127.0.0.1",
              "--disable-usage-stats", "--object-store-memory=200000000"]
    procs: list[subprocess.Popen[bytes]] = []
    temp_dirs = [tempfile.mkdtemp(prefix=f"rn{i}", dir="/tmp") for i in range(nodes)]
    try:
        procs.append(subprocess.Popen(
            [ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp_dirs[0]}",
             *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for_port(port, 120)
        for tmp in temp_dirs[1:]:
            procs.append(subprocess.Popen(
                [ray_cli, "start", f"--address={address}", f"--temp-dir={tmp}", *common],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        os.environ["RAY_ADDRESS"] = address
        wait_for_nodes(address, nodes, 120, procs)
        yield LocalCluster(address, [p.pid for p in procs])
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for proc in reversed(procs):  # the joining nodes first, the head last
            stop_node(proc)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for tmp in temp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)


def wait_for_nodes(address: str, nodes: int, timeout_s: float, procs: list[subprocess.Popen[bytes]]) -> None:
    """Block until `nodes` nodes are alive in the cluster (a joining node takes seconds to register)."""
    ray.init(address=address, logging_level="WARNING", include_dashboard=False)
    try:
        deadline = time.monotonic() + timeout_s
        while sum(n["Alive"] for n in ray.nodes()) < nodes:
            dead = [p.args for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"Ray cluster: {sum(n['Alive'] for n in ray.nodes())} of {nodes} nodes up; "
                                   f"exited: {dead}")
            time.sleep(0.5)
    finally:
        ray.shutdown()


@contextmanager
def recording_actor_nodes() -> Iterator[list[str]]:
    """Collect the Ray node of every actor of each RayExecutor the federated engine builds meanwhile.

    Wraps the engine's `build_executor`; the node ids are read on the executor's first dispatch, when its
    actors exist (each actor gets a client as soon as it is idle, so every actor trains clients).
    """
    nodes: list[str] = []
    original: Callable[..., Any] = engine.build_executor

    def build(name: str, **options: Any) -> Any:
        executor = original(name, **options)
        if name == "ray":
            def record(ex: Any) -> None:
                if not nodes:
                    nodes.extend(ray.get([a.node_id.remote() for a in ex.actors]))
            executor.on_dispatch = record
        return executor

    engine.build_executor = build
    try:
        yield nodes
    finally:
        engine.build_executor = original


def config(executor: str, rounds: int, clients: int, address: str | None = None) -> dict[str, Any]:
    """A small digits run (seconds on 2 cores), the same for every executor."""
    runtime: dict[str, Any] = {"executor": executor, "workers": NODES}
    if address is not None:
        runtime["address"] = address
    return {
        "name": f"multinode-{executor}", "seed": 3,
        "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 1.0, "min_partition_size": 20},
        "model": {"name": "cnn", "options": {"width": 16, "hidden": 64}},
        "train": {"lr": 0.05, "momentum": 0.9, "batch_size": 32, "epochs": 2},
        "fl": {"rounds": rounds, "clients": clients},
        "runtime": runtime, "output": {"report": False},
    }


def compare_with_inline(address: str, out_root: Path, rounds: int, clients: int) -> dict[str, Any]:
    """Run inline and on the cluster; the final weights compared bit for bit, and where the actors ran."""
    torch.set_num_threads(1)  # the actors train with one thread; float sums then match bit for bit
    inline = run_experiment(build_experiment(config("inline", rounds, clients)), out_root=out_root / "inline")
    with recording_actor_nodes() as nodes:
        t0 = time.perf_counter()
        ray_run = run_experiment(build_experiment(config("ray", rounds, clients, address)), out_root=out_root / "ray")
        seconds = time.perf_counter() - t0
    same = torch.equal(torch.load(inline.path / "final_weights.pt"), torch.load(ray_run.path / "final_weights.pt"))
    return {"identical_to_inline": same, "actor_nodes": list(nodes), "ray_run_s": seconds}


def citadel_network() -> dict[str, Any]:
    """Citadel over a network transport against shared memory, from benchmarks/citadel_network.py if present."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from citadel_network import measure  # type: ignore[import-not-found]
    except ImportError as err:
        reason = f"benchmarks/citadel_network.py not available ({err})"
        return {"citadel_network_vs_shm": None, "citadel_same_aggregate": None, "citadel_reason": reason}
    got = measure()
    return {"citadel_network_vs_shm": got["citadel_network_vs_shm"],
            "citadel_same_aggregate": got["citadel_same_aggregate"], "citadel": got}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with local_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        got = compare_with_inline(cluster.address, Path(tmp), args.rounds, args.clients)
    placed = {node: got["actor_nodes"].count(node) for node in got["actor_nodes"]}
    result = {
        "nodes": NODES, "clients_per_node": args.clients / NODES,  # nominal: one actor per node, each
        # taking the next client when idle, so the split per round follows the actors' speed
        "actors_per_node": placed, "distinct_actor_nodes": len(placed),
        "identical_to_inline": got["identical_to_inline"], "ray_run_s": got["ray_run_s"],
        "cluster_total_s": time.perf_counter() - t0, "rounds": args.rounds, "clients": args.clients,
        **citadel_network(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(json.dumps(result, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
