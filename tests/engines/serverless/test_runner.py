"""The `[serverless]` section, the experiment files, and `run_serverless` end to end on a tiny dataset."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from siegecraft.core.results import RunDir
from siegecraft.drivers.experiment import build_experiment, load_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.serverless.config import ServerlessConfig
from siegecraft.engines.serverless.runner import run_serverless

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments" / "serverless"


def test_config_rejects_both_targets_bad_tiers_and_too_little_concurrency() -> None:
    with pytest.raises(ValidationError, match="not both"):
        ServerlessConfig(deadline_s=10, budget_usd=1)
    with pytest.raises(ValidationError, match="must lie in the platform"):
        ServerlessConfig(deadline_s=10, planner={"memory_mb": [64, 1024]})
    with pytest.raises(ValidationError, match="concurrency"):
        ServerlessConfig(workers=8, emulated={"concurrency": 4})
    with pytest.raises(ValidationError, match="fault injection needs platform"):
        ServerlessConfig(platform="lithops", faults={"rate": 0.1})
    with pytest.raises(ValidationError, match="needs store = 'redis'"):  # else silently unused
        ServerlessConfig(redis_url="redis://redis.internal:6379/0")
    assert ServerlessConfig(budget_usd=0.1).adaptive and not ServerlessConfig().adaptive


@pytest.mark.parametrize("name", ["fmnist_deadline.toml", "fmnist_budget.toml"])
def test_experiment_files_validate(name: str) -> None:
    exp = load_experiment(EXPERIMENTS / name)
    cfg = exp.settings()
    assert exp.topology == "serverless" and exp.data.dataset == "fashion_mnist" and exp.model.name == "cnn"
    assert cfg.adaptive


def test_run_serverless_writes_metrics_figures_and_a_summary(tmp_path: Path) -> None:
    exp = build_experiment({
        "name": "tiny-serverless", "seed": 1, "topology": "serverless",
        "data": {"dataset": "digits", "train_limit": 384, "test_limit": 100},
        "model": {"name": "cnn", "options": {"width": 4, "hidden": 16}},
        "output": {"report": False},
        "train": {"epochs": 2},
        "serverless": {"deadline_s": 120, "store": "memory",
                       "planner": {"workers": [1, 2], "memory_mb": [1024, 1769], "batch_size": [16, 32],
                                     "trials": 12, "profile_iterations": 2}},
    })  # fmt: skip
    calls: list[dict] = []
    (tmp_path / "run").mkdir()
    summary = run_serverless(exp, RunDir.open(tmp_path / "run"), progress=lambda **kw: calls.append(kw))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["phase"] == "train"]
    assert [r["epoch"] for r in train] == [0, 1] and [c["step"] for c in calls] == [1, 2]
    assert all(r["reason"].startswith("deadline") and r["accuracy"] is not None for r in train)
    assert summary["deadline_met"] == (summary["elapsed_s"] <= 120)
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in lines))
    assert summary["profiling_cost_usd"] > 0 and summary["epochs"] == 2
    assert all(Path(p).stat().st_size > 0 for p in summary["figures"]) and len(summary["figures"]) == 3


def test_train_lr_drives_serverless_workers(tmp_path: Path) -> None:
    """`[train] lr` is the learning rate every function worker applies: a different lr, a different model."""
    def final_loss(lr: float) -> float:
        exp = build_experiment({
            "name": "tiny-lr", "seed": 1, "topology": "serverless",
            "data": {"dataset": "digits", "train_limit": 128, "test_limit": 64},
            "model": {"name": "cnn", "options": {"width": 4, "hidden": 16}},
            "train": {"epochs": 1, "lr": lr, "batch_size": 32}, "output": {"report": False},
            "serverless": {"store": "memory", "workers": 2, "emulated": {"concurrency": 4}},
        })  # fmt: skip
        run = run_experiment(exp, out_root=tmp_path / f"lr{lr}")
        return json.loads(run.summary_file.read_text())["final"]["test_loss"]

    assert final_loss(0.01) != final_loss(0.3)


def test_without_lithops_the_package_works_and_platform_lithops_is_a_user_error(monkeypatch) -> None:
    # `make test` installs lithops, so its absence is simulated: `import lithops` fails, find_spec finds none.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setitem(sys.modules, "lithops", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lithops" else real_find_spec(name, *a))
    from siegecraft.engines.serverless.lithops_platform import LithopsPlatform

    assert ServerlessConfig().platform == "emulated"
    with pytest.raises(ValidationError, match=r"needs the lithops package: pip install"):
        ServerlessConfig(platform="lithops")
    with pytest.raises(ImportError):
        LithopsPlatform()
