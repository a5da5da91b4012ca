"""Tracking sinks: TensorBoard event files and an MLflow local file store, fed by a tiny run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from siegecraft.core.config import ConfigError
from siegecraft.core.results import RunDir
from siegecraft.core.results.tracking import Tracker, TrackingSink, flatten, is_file_store, scalar_metrics
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from tests.conftest import tiny_raw


class RecordingSink(TrackingSink):
    def __init__(self) -> None:
        self.rounds: list[tuple[int, dict[str, float]]] = []
        self.closed: bool | None = None

    def log_round(self, record: dict[str, Any], step: int) -> None:
        self.rounds.append((step, scalar_metrics(record)))

    def close(self, ok: bool) -> None:
        self.closed = ok


def test_scalars_flattening_and_store_kinds() -> None:
    record = {"round": 3, "accuracy": 0.5, "loss": float("nan"), "clients": [1, 2], "ok": True, "n": 4}
    assert scalar_metrics(record) == {"accuracy": 0.5, "n": 4.0}
    assert flatten({"a": {"b": 1, "c": [1, 2], "d": None, "e": {}}, "s": "x"}) == {
        "a.b": "1", "a.c": "[1, 2]", "a.e": "{}", "s": "x"}
    assert is_file_store("file:///tmp/mlruns") and is_file_store("./mlruns")
    assert not is_file_store("http://localhost:5000") and not is_file_store("sqlite:///m.db")


def test_run_dir_feeds_every_record_to_the_tracker(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "t")
    sink = RecordingSink()
    tracker = Tracker([sink])
    run.listeners.append(tracker.log_round)
    run.log_metrics({"round": 2, "accuracy": 0.25})
    run.log_metrics({"accuracy": 0.5})  # no step key: numbered by arrival
    tracker.close(False)
    assert sink.rounds == [(2, {"accuracy": 0.25}), (2, {"accuracy": 0.5})] and sink.closed is False


def test_missing_tracker_package_fails_at_config_time(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracking.*siegecraft\[track\]"):
        build_experiment(tiny_raw(tracking={"mlflow": "file:///tmp/x"}))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, str]:
    """One tiny 2-round run (single-threaded torch: fast on a loaded machine) feeding both sinks."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    tmp = tmp_path_factory.mktemp("tracked")
    uri = (tmp / "mlruns").as_uri()
    raw = tiny_raw(fl={"rounds": 2}, output={"report": True},
                   tracking={"tensorboard": True, "mlflow": uri, "mlflow_experiment": "t"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_experiment(build_experiment(raw), out_root=tmp / "runs"), uri
    finally:
        torch.set_num_threads(threads)


def test_tensorboard_event_files_hold_the_round_metrics(tracked: tuple[RunDir, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = tracked
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    acc = events.Scalars("accuracy")
    assert [e.step for e in acc] == [1, 2]
    assert [e.value for e in acc] == pytest.approx([r["accuracy"] for r in run.read_metrics()])
    assert "final/accuracy" in events.Tags()["scalars"]


def test_mlflow_file_store_gets_params_round_metrics_and_the_report(tracked: tuple[RunDir, str]) -> None:
    from mlflow.tracking import MlflowClient

    run, uri = tracked
    client = MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == run.path.name
    assert found.data.params["fl.rounds"] == "2" and found.data.params["seed"] == "3"
    history = sorted(client.get_metric_history(found.info.run_id, "accuracy"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([r["accuracy"] for r in run.read_metrics()])
    assert found.data.metrics["final.accuracy"] == pytest.approx(run.read_summary()["final"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"report.html", "summary.json", "metrics.jsonl"} <= artifacts
