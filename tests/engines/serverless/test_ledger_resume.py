"""A driver killed (SIGKILL) mid-plan loses no billed money or time: `--resume` totals equal the ledger (slow-ish).

The driver is the real CLI (`siegecraft run`) with a private Redis; the resume goes through `run_experiment`
in this process, which reuses that Redis (the killed driver could not stop it) and stops it at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from siegecraft.core.config import to_toml
from siegecraft.drivers.experiment import load_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.serverless.billing import read_ledger
from siegecraft.engines.serverless.runner import LEDGER_FILE, STORE_FILE

ROOT = Path(__file__).resolve().parents[3]


def redis_raw() -> dict[str, Any]:
    """Digits, a tiny cnn, 2 workers x batch 16, one iteration per invocation (many bills per plan)."""
    return {
        "name": "ledger-kill",
        "seed": 0,
        "topology": "serverless",
        "data": {"dataset": "digits", "train_limit": 256, "test_limit": 64},
        "model": {"name": "cnn", "options": {"width": 4}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9},
        "serverless": {"platform": "emulated", "store": "redis", "workers": 2, "memory_mb": 1769,
                       "iterations_per_invocation": 1, "emulated": {"concurrency": 4}},
        "output": {"report": False},
    }  # fmt: skip


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_until(cond: Any, proc: subprocess.Popen, what: str, limit_s: float = 90.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert proc.poll() is None, f"the driver exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_killed_driver_resume_keeps_every_billed_invocation(tmp_path: Path) -> None:
    cfg = tmp_path / "job.toml"
    cfg.write_text(to_toml(redis_raw()))
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "siegecraft.drivers.cli", "run", str(cfg), "--out", str(runs), "-q"], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: any(runs.glob("*/metrics.jsonl")), proc, "the first plan was recorded")
        run_dir = next(runs.glob("*/metrics.jsonl")).parent
        ledger = run_dir / LEDGER_FILE
        recorded = lines(ledger)
        wait_until(lambda: lines(ledger) >= recorded + 3, proc, "three more invocations were billed")
        os.kill(proc.pid, signal.SIGKILL)  # mid-plan: these bills are in no metrics record or state
    finally:
        proc.wait(timeout=30)
    before = read_ledger(ledger)
    before_metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    redis = json.loads((run_dir / STORE_FILE).read_text())
    assert alive(redis["pid"]), "the killed driver's redis should have outlived it"
    assert sum(b["cost_usd"] for b in before) > before_metrics[-1]["spent_usd"]  # what used to be lost

    run_experiment(load_experiment(cfg), resume=run_dir)

    after = read_ledger(ledger)
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len({b["id"] for b in after}) == len(after), "duplicate ledger ids"
    assert [b["id"] for b in after[: len(before)]] == [b["id"] for b in before], "a billed line was lost"
    assert final["invocations"] == len(after) > len(before)
    assert final["cost_usd"] == pytest.approx(sum(b["cost_usd"] for b in after), rel=1e-12)
    assert final["billed_s"] == pytest.approx(sum(b["billed_ms"] for b in after) / 1000.0)
    assert final["cold_starts"] == sum(b["cold"] for b in after)
    assert final["cost_usd"] >= sum(b["cost_usd"] for b in before)
    assert final["elapsed_s"] >= before_metrics[-1]["elapsed_s"]
    assert metrics[-1]["spent_usd"] == pytest.approx(final["cost_usd"], rel=1e-12)
    assert sum(r["cost_usd"] for r in metrics) == pytest.approx(final["cost_usd"], rel=1e-9)
    assert final["epochs"] == 2
    assert not alive(redis["pid"]), "the resumed run must stop the redis it reused"
    assert not (run_dir / STORE_FILE).exists()
