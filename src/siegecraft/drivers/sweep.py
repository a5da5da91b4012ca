"""Parameter sweeps: run the product of `--grid key=v1,v2` axes, one run directory each.

Every grid point is an ordinary `--set` override list on the base config, validated before any work
starts. The sweep directory holds the runs, `sweep.csv` (one row per run: grid values, final scalar
metrics, wall time, run directory), `sweep.json` (the grid and base overrides, to reproduce it) and
`sweep.png` (drawn by `core.results.batch_report`). Runs are planned, executed (in this process, on a
local process pool or as Ray tasks on a local or remote cluster) and collected by `drivers.batch`.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from siegecraft.core.config import ConfigError, apply_overrides, parse_override, read_toml
from siegecraft.core.results.batch_report import SeriesRun, compared_metric, sweep_figure
from siegecraft.drivers.batch import Job, choose_executor, execute, make_batch_dir, plan_jobs

Progress = Callable[..., None]


@dataclass(frozen=True)
class GridAxis:
    """One swept key and the values it takes, in the order given, as written (TOML text)."""

    key: str
    texts: tuple[str, ...]

    @property
    def values(self) -> tuple[Any, ...]:
        """The values as typed TOML (the same reading `--set` uses)."""
        return tuple(parse_override(f"{self.key}={t}")[1] for t in self.texts)


@dataclass
class SweepRun:
    """One finished grid point."""

    index: int
    point: dict[str, Any]
    run_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]


@dataclass
class SweepResult:
    path: Path
    csv_file: Path
    figure: Path | None
    runs: list[SweepRun]


def split_values(text: str) -> list[str]:
    """Split on top-level commas, keeping commas inside [...], {...} and quotes: `1,[2,3],"a,b"`."""
    parts, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p.strip() for p in parts]


def parse_grid(items: Sequence[str]) -> list[GridAxis]:
    """`["fl.rounds=1,2", "train.lr=0.01,0.1"]` -> one axis per key, values kept as written."""
    axes, seen = [], set()
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: must look like key.path=v1,v2")
        key, raw = (s.strip() for s in item.split("=", 1))
        texts = split_values(raw)
        if not key or not raw or any(t == "" for t in texts):
            raise ConfigError(f"--grid {item!r}: needs a key and non-empty values, e.g. fl.rounds=1,2")
        if key in seen:
            raise ConfigError(f"--grid {item!r}: key {key!r} given twice; allowed: each key once")
        seen.add(key)
        axes.append(GridAxis(key, tuple(texts)))
    if not axes:
        raise ConfigError("--grid: none given; a sweep needs at least one --grid key=v1,v2")
    return axes


def grid_points(axes: Sequence[GridAxis]) -> list[dict[str, Any]]:
    """The Cartesian product of the axes as typed values, first axis slowest."""
    return [dict(zip([a.key for a in axes], combo, strict=True)) for combo in itertools.product(*(a.values for a in axes))]


def grid_overrides(axes: Sequence[GridAxis]) -> list[list[str]]:
    """The same product as `--set` overrides (`key=text`), in the order of `grid_points`."""
    return [[f"{a.key}={t}" for a, t in zip(axes, combo, strict=True)]
            for combo in itertools.product(*(a.texts for a in axes))]


def point_label(point: dict[str, Any]) -> str:
    """`{"train.lr": 0.1, "fl.rounds": 2}` -> "lr=0.1 rounds=2" (last key component only)."""
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())


def plan_sweep(
    raw: dict[str, Any], axes: Sequence[GridAxis], overrides: Sequence[str] = (), plugins: Sequence[str] = ()
) -> list[Job]:
    """One validated job per grid point (its run named `<name>-<index>`); any bad point fails them all."""
    base = apply_overrides(raw, list(overrides))
    name = base.get("name", "experiment")
    items = []
    for i, (point, sets) in enumerate(zip(grid_points(axes), grid_overrides(axes), strict=True)):
        label = f"grid point {i} ({point_label(point)})"
        try:
            items.append((label, {**apply_overrides(base, sets), "name": f"{name}-{i:03d}"}))
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}") from None
    return plan_jobs(items, plugins)


def run_sweep(
    config: str | Path,
    grid: Sequence[str],
    *,
    overrides: Sequence[str] = (),
    out_root: str | Path | None = None,
    use_ray: bool = False,
    address: str | None = None,
    workers: int = 1,
    plugins: Sequence[str] = (),
    progress: Progress | None = None,
) -> SweepResult:
    """Validate every grid point, run them all, then write sweep.csv, sweep.json and sweep.png.

    `workers` > 1 runs that many points at once on local processes; `use_ray`/`address` runs them as
    Ray tasks. `plugins` are imported here and wherever a point runs.
    """
    executor = choose_executor(workers, use_ray=use_ray, address=address)
    axes = parse_grid(grid)
    raw = read_toml(config)
    jobs = plan_sweep(raw, axes, overrides, plugins)
    name = apply_overrides(raw, list(overrides)).get("name", "experiment")
    out = make_batch_dir(out_root or jobs[0].experiment.output.root, f"{name}-sweep")
    (out / "sweep.json").write_text(json.dumps(
        {"config": str(Path(config).resolve()), "overrides": list(overrides), "plugins": list(plugins),
         "grid": {a.key: list(a.values) for a in axes}}, indent=2) + "\n")
    results = execute(jobs, out, executor, plugins=plugins, progress=progress)
    runs = [SweepRun(i, point, r.run_dir, r.summary, r.metrics)
            for i, (point, r) in enumerate(zip(grid_points(axes), results, strict=True))]
    csv_file = write_sweep_csv(runs, [a.key for a in axes], out / "sweep.csv")
    figure = sweep_figure([SeriesRun(point_label(r.point), r.summary.get("final", {}), r.metrics) for r in runs],
                          out / "sweep.png")
    return SweepResult(out, csv_file, figure, runs)


def _scalar_finals(summary: dict[str, Any]) -> dict[str, Any]:
    final = summary.get("final", {})
    return {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def write_sweep_csv(runs: Sequence[SweepRun], keys: Sequence[str], path: Path) -> Path:
    """One row per run: index, grid values, final scalar metrics (union over runs), wall time, run_dir."""
    metric_cols: list[str] = []
    for r in runs:
        metric_cols += [k for k in _scalar_finals(r.summary) if k not in metric_cols]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", *keys, *metric_cols, "wall_time_s", "run_dir"])
        for r in runs:
            finals = _scalar_finals(r.summary)
            writer.writerow([r.index, *(_cell(r.point[k]) for k in keys), *(finals.get(k, "") for k in metric_cols),
                             r.summary.get("wall_time_s", ""), r.run_dir])
    return path


def sweep_table(result: SweepResult) -> Table:
    """A rich table of the runs: grid values, the compared metric, wall time."""
    metric = compared_metric([r.summary.get("final", {}) for r in result.runs])
    keys = list(result.runs[0].point) if result.runs else []
    table = Table(title=f"sweep ({len(result.runs)} runs)")
    for col in ["run", *keys, *([metric] if metric else []), "wall_time_s"]:
        table.add_column(col, justify="right")
    for r in result.runs:
        value = r.summary.get("final", {}).get(metric) if metric else None
        shown = [f"{value:.4f}" if isinstance(value, float) else str(value)] if metric else []
        table.add_row(str(r.index), *(str(r.point[k]) for k in keys), *shown,
                      f"{r.summary.get('wall_time_s', float('nan')):.1f}")
    return table
