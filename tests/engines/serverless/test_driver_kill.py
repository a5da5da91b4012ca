"""A driver process killed with SIGKILL mid-job is resumed by a new driver from the Redis store (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.redis_server import RedisHandle
from siegecraft.engines.serverless.runner import train_serverless
from siegecraft.engines.serverless.store import connect

from .conftest import tiny_data

DRIVER = """
import sys, pathlib
from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.runner import train_serverless
from siegecraft.engines.serverless.store import StoreSpec, connect
from tests.engines.serverless.conftest import tiny_data

def mark(record):
    pathlib.Path(sys.argv[2]).write_text(str(record["epoch"]))

if __name__ == "__main__":
    cfg = ServerlessConfig(workers=4, memory_mb=1024, batch_size=8, epochs=4, lr=0.1, sync=sys.argv[3])
    with connect(StoreSpec("redis", "127.0.0.1", int(sys.argv[1]))) as store:
        train_serverless(cfg, tiny_data(n=192), job_id="killed-" + sys.argv[3], store=store, on_record=mark,
                         model_options={"width": 4, "hidden": 16})
"""


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["scatter_reduce", "hierarchical"])
def test_sigkilled_driver_resumes_to_the_same_weights(
    redis_server: RedisHandle, tmp_path: Path, sync: str
) -> None:
    cfg = ServerlessConfig(workers=4, memory_mb=1024, batch_size=8, epochs=4, lr=0.1, sync=sync)
    data, options = tiny_data(n=192), {"width": 4, "hidden": 16}
    with connect(redis_server.spec) as store:
        reference = train_serverless(cfg, data, job_id=f"kill-ref-{sync}", store=store, model_options=options)
    script, marker = tmp_path / "driver.py", tmp_path / "epoch"
    script.write_text(DRIVER)
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen([sys.executable, str(script), str(redis_server.port), str(marker), sync], cwd=root,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the driver never finished an epoch"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    with connect(redis_server.spec) as store:
        assert store.get(f"killed-{sync}/state") is not None
        resumed = train_serverless(cfg, data, job_id=f"killed-{sync}", store=store, model_options=options)
    assert np.array_equal(resumed.weights, reference.weights)
    assert [r["epoch"] for r in resumed.records] == [0, 1, 2, 3]
