"""Tracking sinks: mirror a run's per-round metrics into TensorBoard and/or MLflow while it runs.

The run directory stays the source of truth; a sink only listens to `RunDir.log_metrics` and, at the
end, receives the summary and the report. `[tracking] tensorboard = true` writes event files to
`<run>/tensorboard/`; `mlflow = URI` logs the resolved config as parameters, every round's scalars
as metrics (step = round) and report.html, summary.json and metrics.jsonl as artifacts.
"""

from __future__ import annotations

import json
import math
import os
import time
from abc import ABC, abstractmethod
from typing import Any

from siegecraft.core.config import ExperimentBase as Experiment
from siegecraft.core.results.rundir import RunDir

STEP_KEYS = ("round", "epoch", "step")
MLFLOW_BATCH = 100  # MLflow accepts at most 100 params (and 1000 metrics) per log_batch call


def scalar_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric scalars of a metrics record (lists, strings and step counters left out)."""
    out = {}
    for key, value in record.items():
        if key in STEP_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def record_step(record: dict[str, Any], fallback: int) -> int:
    """The record's round/epoch/step number, or `fallback` when it has none."""
    return next((int(record[k]) for k in STEP_KEYS if isinstance(record.get(k), int)), fallback)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dict -> {"a.b": "value"}; lists and empty tables as JSON text, None left out."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{path}."))
        elif value is not None:
            out[path] = value if isinstance(value, str) else json.dumps(value)
    return out


def is_file_store(uri: str) -> bool:
    """True for a local MLflow file store URI (`file:///...` or a bare path), not a server or database."""
    return uri.startswith("file:") or "://" not in uri and not uri.startswith(("sqlite:", "databricks"))


class TrackingSink(ABC):
    """One tracker: per-round metrics as they come, then the finished run, then close."""

    @abstractmethod
    def log_round(self, record: dict[str, Any], step: int) -> None:
        """Scalars of one metrics record."""

    def finish(self, run: RunDir) -> None:
        """The run completed: summary.json and (if enabled) report.html exist."""

    def close(self, ok: bool) -> None:
        """Flush and release; `ok` is False when the run failed."""


class TensorBoardSink(TrackingSink):
    """Event files under `<run>/tensorboard/`: one scalar series per metric, final metrics, the config."""

    def __init__(self, exp: Experiment, run: RunDir) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(exp.model_dump(mode="json"), indent=2) + "\n```")

    def log_round(self, record: dict[str, Any], step: int) -> None:
        for key, value in scalar_metrics(record).items():
            self.writer.add_scalar(key, value, step)

    def finish(self, run: RunDir) -> None:
        for key, value in scalar_metrics(run.read_summary().get("final", {})).items():
            self.writer.add_scalar(f"final/{key}", value, 0)

    def close(self, ok: bool) -> None:
        self.writer.close()


class MLflowSink(TrackingSink):
    """One MLflow run per siegecraft run, through an explicit client (no global MLflow state)."""

    def __init__(self, exp: Experiment, run: RunDir, uri: str, experiment: str | None) -> None:
        if is_file_store(uri):  # asked for explicitly; MLflow >= 3.7 refuses file stores without this opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        name = experiment or exp.name
        found = self.client.get_experiment_by_name(name)
        exp_id = found.experiment_id if found else self.client.create_experiment(name)
        self.run_id = self.client.create_run(
            exp_id, run_name=run.path.name, tags={"siegecraft.run_dir": str(run.path.resolve())}
        ).info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten(exp.model_dump(mode="json")).items()]
        for i in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + MLFLOW_BATCH])

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log_round(self, record: dict[str, Any], step: int) -> None:
        self._log_metrics(scalar_metrics(record), step)

    def finish(self, run: RunDir) -> None:
        final = scalar_metrics(run.read_summary().get("final", {}))
        self._log_metrics({f"final.{k}": v for k, v in final.items()}, 0)
        for path in (run.report_file, run.summary_file, run.metrics_file, run.config_file):
            if path.exists():
                self.client.log_artifact(self.run_id, str(path))

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


class Tracker:
    """The configured sinks, fed by the run directory; a no-op when `[tracking]` enables nothing."""

    def __init__(self, sinks: list[TrackingSink]) -> None:
        self.sinks = sinks
        self.rounds = 0

    def log_round(self, record: dict[str, Any]) -> None:
        self.rounds += 1
        step = record_step(record, self.rounds)
        for sink in self.sinks:
            sink.log_round(record, step)

    def finish(self, run: RunDir) -> None:
        for sink in self.sinks:
            sink.finish(run)

    def close(self, ok: bool) -> None:
        for sink in self.sinks:
            sink.close(ok)


def start_tracking(exp: Experiment, run: RunDir) -> Tracker:
    """Open the sinks `exp.tracking` asks for and subscribe them to `run`'s metrics log."""
    cfg = exp.tracking
    sinks: list[TrackingSink] = []
    if cfg.tensorboard:
        sinks.append(TensorBoardSink(exp, run))
    if cfg.mlflow:
        sinks.append(MLflowSink(exp, run, cfg.mlflow, cfg.mlflow_experiment))
    tracker = Tracker(sinks)
    if sinks:
        run.listeners.append(tracker.log_round)
    return tracker
