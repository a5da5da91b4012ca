"""A run directory: resolved config, metrics.jsonl, summary.json, checkpoints/, figures/, report.html."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def _jsonable(v: Any) -> Any:
    """Tensors and numpy values to plain JSON; NaN/inf to None so the files stay strict JSON."""
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    if hasattr(v, "tolist") and not isinstance(v, (list, tuple, dict, str)):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers."""
    out = {"python": platform.python_version()}
    for name in ("siegecraft", "torch", "numpy", "pydantic", "scikit-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class RunDir:
    """Owns the files of one run; every writer goes through here."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.figures = self.path / "figures"
        self.checkpoints = self.path / "checkpoints"
        self.metrics_file = self.path / "metrics.jsonl"
        self.summary_file = self.path / "summary.json"
        self.config_file = self.path / "config.toml"
        self.report_file = self.path / "report.html"
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # e.g. tracking sinks, fed every record

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunDir:
        """A fresh `root/<name>-<time>/` (suffixed if the second is taken)."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{name}-{stamp}"
        path, i = base, 1
        while path.exists():
            path, i = Path(f"{base}-{i}"), i + 1
        run = cls(path)
        run.figures.mkdir(parents=True)
        run.checkpoints.mkdir()
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(Path(path))
        if not run.path.is_dir():
            raise FileNotFoundError(f"run directory not found: {run.path}")
        run.figures.mkdir(exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        return run

    def write_config(self, toml_text: str) -> None:
        self.config_file.write_text(toml_text)

    def log_metrics(self, record: dict[str, Any]) -> None:
        clean = _jsonable(record)
        with self.metrics_file.open("a") as fh:
            fh.write(json.dumps(clean, sort_keys=True) + "\n")
        for listener in self.listeners:
            listener(clean)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, keep: Any) -> None:
        """Keep only the records for which `keep(record)` is true (used when resuming)."""
        records = [r for r in self.read_metrics() if keep(r)]
        self.metrics_file.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.summary_file.write_text(json.dumps(_jsonable(summary), indent=2, sort_keys=True) + "\n")

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary_file.read_text()) if self.summary_file.exists() else {}

    def save_checkpoint(self, rnd: int, state: dict[str, Any]) -> Path:
        path = self.checkpoints / f"round-{rnd:05d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.checkpoints.glob("round-*.pt"))
        return found[-1] if found else None


class Stopwatch:
    """Wall time since construction, in seconds."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
