"""`siegecraft run CFG --resume RUN_DIR` refuses a config that differs from the run directory's, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from siegecraft.core.config import ConfigError, to_toml
from siegecraft.drivers.cli import app
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import check_resume_config
from siegecraft.engines.serverless import runner as serverless_runner
from tests.conftest import tiny_raw
from tests.drivers.test_user_errors import error_text, patched, serverless_raw


def saved_run(tmp_path: Path) -> Path:
    """A run directory holding the resolved config the runner writes (no training needed)."""
    run = tmp_path / "runs" / "tiny-serverless-20260101-000000"
    run.mkdir(parents=True)
    exp = build_experiment(patched(serverless_raw(), {"serverless": {"store": "redis"}}))
    (run / "config.toml").write_text(to_toml(exp.model_dump(mode="json")))
    return run


def test_resume_with_a_changed_config_is_one_line_exit_2_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = saved_run(tmp_path)
    before = sorted(p.name for p in run.iterdir())

    def no_redis(*a: object, **k: object) -> None:
        raise AssertionError("a refused resume started a redis-server")

    monkeypatch.setattr(serverless_runner, "start_redis", no_redis)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(to_toml(patched(serverless_raw(), {"serverless": {"store": "redis"}})))
    argv = ["run", str(cfg), "--resume", str(run), "-q", "--set", "serverless.workers=4", "--set", "train.lr=0.1",
            "--set", "output.report=true"]  # fmt: skip
    result = CliRunner().invoke(app, argv)
    err = error_text(result)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(err.splitlines()) == 1, err
    line = err.strip()
    assert line.startswith(f"error: --resume {str(run)!r}: config differs from the run directory's: "), line
    assert "serverless.workers = 4 (run directory: 2)" in line, line
    assert "train.lr = 0.1 (run directory: 0.05)" in line, line
    assert "output.report" not in line, line  # output.* may change on resume
    assert "allowed: the run directory's config.toml" in line, line
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written: no figures/, no metrics


def test_same_config_and_output_or_tracking_changes_pass(tmp_path: Path) -> None:
    run = saved_run(tmp_path)
    base = patched(serverless_raw(), {"serverless": {"store": "redis"}})
    assert check_resume_config(build_experiment(base), run) is None
    moved = patched(base, {"output": {"root": "elsewhere", "report": True}, "tracking": {"mlflow_experiment": "x"}})
    assert check_resume_config(build_experiment(moved), run) is None
    with pytest.raises(ConfigError, match=r"seed = 1 \(run directory: 0\)"):
        check_resume_config(build_experiment(patched(base, {"seed": 1})), run)
    with pytest.raises(ConfigError, match=r"serverless.job_id = 'j' \(run directory: unset\)"):
        check_resume_config(build_experiment(patched(base, {"serverless": {"job_id": "j"}})), run)


def test_federated_resume_may_extend_rounds_only(tmp_path: Path) -> None:
    run = tmp_path / "fed"
    run.mkdir()
    (run / "config.toml").write_text(to_toml(build_experiment(tiny_raw(fl={"rounds": 2})).model_dump(mode="json")))
    assert check_resume_config(build_experiment(tiny_raw(fl={"rounds": 4})), run) is None
    with pytest.raises(ConfigError, match=r"fl.clients = 5 \(run directory: 4\).*only output\.\*, tracking\.\*, fl\.rounds"):
        check_resume_config(build_experiment(tiny_raw(fl={"rounds": 4, "clients": 5})), run)
