"""Run directories and the self-contained report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from siegecraft.core.results import RunDir, build_report
from siegecraft.core.results.rundir import _jsonable


def test_rundir_layout_and_metrics_roundtrip(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "demo")
    again = RunDir.create(tmp_path, "demo")
    assert run.path != again.path and run.figures.is_dir() and run.checkpoints.is_dir()
    run.log_metrics({"round": 1, "accuracy": 0.5, "vec": torch.tensor([1.0, 2.0])})
    run.log_metrics({"round": 2, "accuracy": float("nan")})
    records = run.read_metrics()
    assert records == [{"round": 1, "accuracy": 0.5, "vec": [1.0, 2.0]}, {"round": 2, "accuracy": None}]
    for line in run.metrics_file.read_text().splitlines():
        json.loads(line)  # strict JSON, no NaN tokens
    run.truncate_metrics(lambda r: r["round"] <= 1)
    assert len(run.read_metrics()) == 1


def test_jsonable_handles_nested_non_finite() -> None:
    assert _jsonable({"a": [math.inf, 1.0], "b": torch.tensor(2.0)}) == {"a": [None, 1.0], "b": 2.0}


def test_report_embeds_figures_and_summary(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "rep")
    for r in range(1, 4):
        run.log_metrics({"round": r, "accuracy": 0.3 * r, "loss": 1.0 / r, "per_class_accuracy": [0.5, 0.9]})
    run.write_summary({"name": "rep", "topology": "federated", "seed": 0, "final": {"accuracy": 0.9, "hijack_acc": 0.7}})
    run.write_config('name = "rep"\n')
    html = build_report(run).read_text()
    assert html.count("data:image/png;base64,") == 3  # accuracy, loss, per-class
    assert "hijack_acc" in html and "0.7000" in html and 'name = &#34;rep&#34;' in html
    assert "src=\"http" not in html  # self-contained
