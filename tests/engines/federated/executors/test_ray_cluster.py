"""The Ray executor joins a cluster it did not start (`address = "auto"`) and leaves it running.

Slow (a Ray head takes seconds to start): run with `pytest -m slow tests/engines/federated/executors/test_ray_cluster.py`.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from tests.conftest import tiny_raw
from tests.engines.federated.test_multinode import load_benchmark

ray = pytest.importorskip("ray")
_bench = load_benchmark()  # benchmarks/multinode.py: the port helpers a user's script and this test share


@pytest.fixture
def ray_head(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Ray head started the way an operator would (`ray start --head`), stopped afterwards."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray_cli is None:
        pytest.skip("the `ray` command is not installed next to this interpreter")
    if ray.is_initialized():
        ray.shutdown()
    port = _bench.free_port()
    # Ray >= 2.5x defaults to token auth, whose token a driver started here does not find: a local test
    # cluster runs without it (head and driver alike; set before Popen, which inherits the environment)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _bench.wait_for_port(port, 90)
        yield f"127.0.0.1:{port}", head
    finally:
        if ray.is_initialized():
            ray.shutdown()
        head.send_signal(signal.SIGTERM)  # --block: the head cleans up its own processes on exit
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


@pytest.mark.slow
def test_ray_executor_joins_an_existing_cluster_by_auto_address(
    tmp_path: Path, ray_head: tuple[str, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, head = ray_head
    monkeypatch.setenv("RAY_ADDRESS", address)  # what "auto" resolves first, as on a cluster node
    weights = {}
    for executor in ("inline", "ray"):
        runtime = {"executor": executor, "workers": 2, **({"address": "auto"} if executor == "ray" else {})}
        run = run_experiment(build_experiment(tiny_raw(fl={"rounds": 2}, runtime=runtime)), out_root=tmp_path / executor)
        weights[executor] = torch.load(run.path / "final_weights.pt")
    assert torch.equal(weights["inline"], weights["ray"])
    assert head.poll() is None, "the executor must leave a cluster it joined running"
    ray.init(address="auto", logging_level="WARNING")  # and the cluster still takes new drivers
    assert ray.cluster_resources().get("CPU") == 2
