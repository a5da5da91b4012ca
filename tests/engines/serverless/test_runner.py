"""The `[serverless]` section, the experiment files, and `run_serverless` end to end on a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from siegecraft.engines.serverless.config import ServerlessConfig

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments" / "serverless"


def test_config_rejects_both_targets_bad_tiers_and_too_little_concurrency() -> None:
    with pytest.raises(ValidationError, match="not both"):
        ServerlessConfig(deadline_s=10, budget_usd=1)
    with pytest.raises(ValidationError, match="outside"):
        ServerlessConfig(deadline_s=10, planner={"memory_mb": [64, 1024]})
    with pytest.raises(ValidationError, match="concurrency"):
        ServerlessConfig(workers=8, emulated={"concurrency": 4})
    with pytest.raises(ValidationError, match="faults"):
        ServerlessConfig(platform="lithops", faults={"rate": 0.1})
    assert ServerlessConfig(budget_usd=0.1).adaptive and not ServerlessConfig().adaptive


@pytest.mark.parametrize("name", ["fmnist_deadline.toml", "fmnist_budget.toml"])
def test_experiment_files_validate(name: str) -> None:
    from siegecraft.drivers.experiment import load_experiment

    exp = load_experiment(EXPERIMENTS / name)
    cfg = ServerlessConfig.model_validate(exp.serverless)
    assert exp.topology == "serverless" and exp.data.dataset == "fashion_mnist" and exp.model.name == "cnn"
    assert cfg.adaptive


def test_run_serverless_writes_metrics_figures_and_a_summary(tmp_path: Path) -> None:
    from siegecraft.drivers.experiment import build_experiment
    from siegecraft.engines.serverless.runner import run_serverless

    exp = build_experiment({
        "name": "tiny-serverless", "seed": 1, "topology": "serverless",
        "data": {"dataset": "digits", "train_limit": 384, "test_limit": 100},
        "model": {"name": "cnn", "options": {"width": 4, "hidden": 16}},
        "output": {"report": False},
        "serverless": {"epochs": 2, "deadline_s": 120, "store": "memory",
                       "planner": {"workers": [1, 2], "memory_mb": [1024, 1769], "batch_size": [16, 32],
                                     "trials": 12, "profile_iterations": 2}},
    })  # fmt: skip
    calls: list[dict] = []
    summary = run_serverless(exp, tmp_path / "run", progress=lambda **kw: calls.append(kw))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["phase"] == "train"]
    assert [r["epoch"] for r in train] == [0, 1] and [c["step"] for c in calls] == [1, 2]
    assert all(r["reason"].startswith("deadline") and r["accuracy"] is not None for r in train)
    assert summary["deadline_met"] == (summary["elapsed_s"] <= 120)
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in lines))
    assert summary["profiling_cost_usd"] > 0 and summary["epochs"] == 2
    assert all(Path(p).stat().st_size > 0 for p in summary["figures"]) and len(summary["figures"]) == 3
