"""The command line, end to end on a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from siegecraft.core.config import to_toml
from siegecraft.drivers.cli import app
from tests.conftest import tiny_raw
from tests.drivers.test_user_errors import serverless_raw

runner = CliRunner()


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(to_toml(raw))
    return path


def test_run_writes_a_complete_run_directory(tmp_path: Path) -> None:
    cfg = _write(tmp_path, tiny_raw(output={"report": True}))
    res = runner.invoke(app, ["run", str(cfg), "--set", "fl.rounds=2", "--out", str(tmp_path / "runs"), "--quiet"])
    assert res.exit_code == 0, res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.toml", "metrics.jsonl", "summary.json", "figures", "report.html"} <= names
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seed"] == 3 and "torch" in summary["versions"] and summary["wall_time_s"] > 0
    assert 0 <= summary["final"]["accuracy"] <= 1
    assert "rounds = 2" in (run_dir / "config.toml").read_text()
    assert "accuracy" in res.output
    rebuilt = runner.invoke(app, ["report", str(run_dir)])
    assert rebuilt.exit_code == 0 and "report.html" in rebuilt.output


def test_bad_config_fails_before_work(tmp_path: Path) -> None:
    cfg = _write(tmp_path, tiny_raw())
    res = runner.invoke(app, ["run", str(cfg), "--set", "fl.rounds=-2", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert "fl.rounds = -2" in res.output
    assert not (tmp_path / "runs").exists()


def test_data_partition_prints_class_counts(tmp_path: Path) -> None:
    cfg = _write(tmp_path, tiny_raw())
    res = runner.invoke(app, ["data", "partition", str(cfg)])
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") >= 5


def test_data_list_names_datasets() -> None:
    res = runner.invoke(app, ["data", "list"])
    assert res.exit_code == 0 and "fashion_mnist" in res.output and "digits" in res.output


def test_serverless_redis_start_and_stop() -> None:
    import shutil
    import socket

    import pytest

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not installed")
    res = runner.invoke(app, ["serverless", "redis", "start"])
    assert res.exit_code == 0, res.output
    pidfile = res.output.split("pidfile")[-1].strip()
    port = int(res.output.split("redis://127.0.0.1:")[1].split()[0])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(16).startswith(b"+PONG")
    res = runner.invoke(app, ["serverless", "redis", "stop", pidfile])
    assert res.exit_code == 0 and "stopped" in res.output, res.output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_memory_tier_too_small_is_one_line_naming_the_key_and_exit_2(tmp_path: Path) -> None:
    """A run-time failure that a setting fixes (the torch worker cannot fit 128 MB) is reported like a config
    error: one line on stderr naming the key to change, exit 2, no traceback."""
    raw = serverless_raw()
    raw["serverless"]["memory_mb"] = 128
    res = runner.invoke(app, ["run", str(_write(tmp_path, raw)), "--out", str(tmp_path / "runs"), "--quiet"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error:") and "out of memory" in lines[0] and "serverless.memory_mb" in lines[0]
    assert "Traceback" not in res.output
