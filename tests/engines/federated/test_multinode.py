"""A federated run on a local two-node Ray cluster, joined by `runtime.address`, equals `inline` bit for bit.

Issue #22: a head and a second node started with `ray start` on 127.0.0.1 (own temp directories, one CPU
each), `workers = 2` one-CPU actors, so Ray must place one actor on each node. The cluster helpers are the
ones `benchmarks/multinode.py` (the script a user runs) uses. Slow (two Ray nodes take 10-20 s to start):
`pytest -m slow tests/engines/federated/test_multinode.py`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.drivers.test_server_kill import group_members

ray = pytest.importorskip("ray")


def load_benchmark() -> ModuleType:
    """benchmarks/multinode.py as a module (benchmarks/ is a folder of scripts, not a package)."""
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "multinode.py"
    spec = importlib.util.spec_from_file_location("multinode_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is being built
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_node_cluster_run_matches_inline_with_actors_on_both_nodes(tmp_path: Path) -> None:
    bench = load_benchmark()
    if ray.is_initialized():
        ray.shutdown()
    with bench.local_cluster(nodes=2, cpus_per_node=1) as cluster:
        assert all(group_members(pid) for pid in cluster.node_pids), "a node's processes are not running"
        ray.init(address=cluster.address, logging_level="WARNING")
        node_ids = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        ray.shutdown()
        got = bench.compare_with_inline(cluster.address, tmp_path, rounds=2, clients=4)
    assert got["identical_to_inline"]
    assert len(node_ids) == 2 and sorted(got["actor_nodes"]) == node_ids  # one actor on each node
    leftovers = {pid: group_members(pid) for pid in cluster.node_pids}
    assert not any(leftovers.values()), f"processes of the stopped cluster survive: {leftovers}"
