"""The run's private redis-server is stopped on every exit path the driver lives through.

Normal end with a real run (after a SIGKILLed driver) is covered by test_ledger_resume.py; here the training
is replaced by a stub that fails, is interrupted, or receives SIGTERM, and the recorded pid must be gone.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.serverless import runner
from siegecraft.engines.serverless.runner import STORE_FILE, ServerlessResult, StoreLease

from .conftest import tiny_data
from .test_ledger_resume import alive, redis_raw


def leases(monkeypatch: pytest.MonkeyPatch) -> list[StoreLease]:
    """Record every lease `run_serverless` provisions."""
    seen: list[StoreLease] = []
    real = runner.provision_store

    def spy(*args: Any, **kw: Any) -> StoreLease:
        seen.append(real(*args, **kw))
        return seen[-1]

    monkeypatch.setattr(runner, "provision_store", spy)
    return seen


def stub(behaviour: str) -> Any:
    """A `train_serverless` that fails, is interrupted, is sent SIGTERM, or returns an empty result."""

    def train(*args: Any, **kw: Any) -> ServerlessResult:
        kw["store"].put("probe", b"1")  # the store really is up
        if behaviour == "exception":
            raise RuntimeError("boom")
        if behaviour == "interrupt":
            raise KeyboardInterrupt
        if behaviour == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM did not end the run")
        return ServerlessResult({"cost_usd": 0.0}, [], None)  # type: ignore[arg-type]

    return train


@pytest.mark.parametrize(("behaviour", "raised"), [("exception", RuntimeError), ("interrupt", KeyboardInterrupt),
                                                   ("sigterm", SystemExit), ("normal", None)])  # fmt: skip
def test_private_redis_is_stopped_on_exit(
    behaviour: str, raised: type[BaseException] | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = leases(monkeypatch)
    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(runner, "train_serverless", stub(behaviour))
    monkeypatch.setattr(runner, "serverless_figures", lambda *a, **k: [])
    exp = build_experiment(redis_raw())
    if raised is None:
        run = run_experiment(exp, out_root=tmp_path)
        assert run.read_summary()["final"]["cost_usd"] == 0.0
    else:
        with pytest.raises(raised):
            run_experiment(exp, out_root=tmp_path)
    assert len(seen) == 1 and seen[0].redis is not None
    assert not alive(seen[0].redis.pid), f"redis-server {seen[0].redis.pid} still running after {behaviour}"
    assert not list(tmp_path.glob(f"*/{STORE_FILE}"))
    assert signal.getsignal(signal.SIGTERM) is handler  # the driver's SIGTERM handler is only there during a run


def test_train_serverless_stops_its_own_redis_when_the_platform_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = leases(monkeypatch)

    def broken(cfg: Any) -> Any:
        raise OSError("no platform")

    monkeypatch.setattr(runner, "build_platform", broken)
    exp = build_experiment(redis_raw())
    with pytest.raises(OSError, match="no platform"):
        runner.train_serverless(exp.settings(), tiny_data(n=64), model_options={"width": 4})
    assert len(seen) == 1 and seen[0].redis is not None
    assert not alive(seen[0].redis.pid)
