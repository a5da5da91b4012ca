"""Parameter sweeps: run the product of `--grid key=v1,v2` axes, one run directory each.

Every grid point is validated before any work starts. The sweep directory holds the runs, `sweep.csv`
(one row per run: grid values, final scalar metrics, wall time, run directory), `sweep.json` (the grid
and base overrides, to reproduce it) and `sweep.png` (final accuracy per run and accuracy per round).
Runs go one after another in this process, or as Ray tasks (one CPU each) on a local or remote cluster;
with a remote cluster the output folder must be storage every node can write.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomllib

from siegecraft.core.config import ConfigError, apply_overrides, parse_override
from siegecraft.drivers.experiment import Experiment, build_experiment

METRIC_PREFERENCE = ("accuracy", "main_accuracy", "loss")


@dataclass(frozen=True)
class GridAxis:
    """One swept key and the values it takes, in the order given."""

    key: str
    values: tuple[Any, ...]


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


def parse_grid(items: list[str]) -> list[GridAxis]:
    """`["fl.rounds=1,2", "train.lr=0.01,0.1"]` -> axes with TOML-typed values."""
    axes, seen = [], set()
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r} must look like key.path=v1,v2")
        key, raw = item.split("=", 1)
        key = key.strip()
        values = split_values(raw)
        if not key or not raw.strip() or any(v == "" for v in values):
            raise ConfigError(f"--grid {item!r}: needs a key and non-empty values, e.g. fl.rounds=1,2")
        if key in seen:
            raise ConfigError(f"--grid: key {key!r} given twice")
        seen.add(key)
        axes.append(GridAxis(key, tuple(parse_override(f"{key}={v}")[1] for v in values)))
    if not axes:
        raise ConfigError("a sweep needs at least one --grid key=v1,v2")
    return axes


def grid_points(axes: list[GridAxis]) -> list[dict[str, Any]]:
    """The Cartesian product of the axes, first axis slowest."""
    return [dict(zip([a.key for a in axes], combo)) for combo in itertools.product(*(a.values for a in axes))]


def with_point(raw: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """A copy of `raw` with each dotted key of `point` set to its value (tables created as needed)."""
    out = copy.deepcopy(raw)
    for key, value in point.items():
        *tables, last = key.split(".")
        node = out
        for part in tables:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--grid {key}: {part!r} is a value, not a table")
        node[last] = value
    return out


def plan_sweep(raw: dict[str, Any], axes: list[GridAxis], overrides: list[str] | None = None) -> list[Experiment]:
    """One validated Experiment per grid point (named `<name>-<index>`); any bad point fails them all."""
    base = apply_overrides(raw, overrides or [])
    name = base.get("name", "experiment")
    plans = []
    for i, point in enumerate(grid_points(axes)):
        try:
            plans.append(build_experiment(with_point(base, {**point, "name": f"{name}-{i:03d}"})))
        except ConfigError as err:
            raise ConfigError(f"grid point {i} ({point_label(point)}): {err}") from None
    return plans


def read_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None


def sweep_dir(root: str | Path, name: str) -> Path:
    """A fresh `root/<name>-sweep-<time>/`."""
    base = Path(root) / f"{name}-sweep-{datetime.now():%Y%m%d-%H%M%S}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


def run_one(exp: Experiment, out_root: str) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """Run one grid point; returns what the sweep table needs, so it also works from a Ray task."""
    from siegecraft.drivers.runner import run_experiment

    run = run_experiment(exp, out_root=out_root)
    return str(run.path), run.read_summary(), run.read_metrics()


def _run_on_ray(plans: list[Experiment], out: Path, address: str | None, progress: Callable[..., None]) -> list:
    from siegecraft.engines.federated.executors.ray_cluster import connect_ray, import_ray

    ray = import_ray()
    owns = connect_ray(address)
    try:
        task = ray.remote(num_cpus=1)(run_one)
        refs = {task.remote(exp, str(out)): i for i, exp in enumerate(plans)}
        results: list[Any] = [None] * len(plans)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                results[refs[ref]] = ray.get(ref)
            progress(step=len(plans) - len(pending), total=len(plans))
        return results
    finally:
        if owns:
            ray.shutdown()


def run_sweep(
    config: str | Path,
    grid: list[str],
    *,
    overrides: list[str] | None = None,
    out_root: str | Path | None = None,
    use_ray: bool = False,
    address: str | None = None,
    progress: Callable[..., None] | None = None,
) -> SweepResult:
    """Validate every grid point, run them all, then write sweep.csv, sweep.json and sweep.png."""
    progress = progress or (lambda **_: None)
    axes = parse_grid(grid)
    raw = read_config(config)
    plans = plan_sweep(raw, axes, overrides)
    out = sweep_dir(out_root or plans[0].output.root, apply_overrides(raw, overrides or []).get("name", "experiment"))
    (out / "sweep.json").write_text(json.dumps(
        {"config": str(Path(config).resolve()), "overrides": overrides or [],
         "grid": {a.key: list(a.values) for a in axes}}, indent=2) + "\n")
    if use_ray:
        results = _run_on_ray(plans, out, address, progress)
    else:
        results = []
        for i, exp in enumerate(plans):
            results.append(run_one(exp, str(out)))
            progress(step=i + 1, total=len(plans))
    points = grid_points(axes)
    runs = [SweepRun(i, points[i], Path(p), s, m) for i, (p, s, m) in enumerate(results)]
    csv_file = write_sweep_csv(runs, [a.key for a in axes], out / "sweep.csv")
    return SweepResult(out, csv_file, sweep_figure(runs, out / "sweep.png"), runs)


def _scalar_finals(summary: dict[str, Any]) -> dict[str, Any]:
    final = summary.get("final", {})
    return {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool)) or v is None}


def write_sweep_csv(runs: list[SweepRun], keys: list[str], path: Path) -> Path:
    """One row per run: index, grid values, final scalar metrics (union over runs), wall time, run_dir."""
    metric_cols: list[str] = []
    for r in runs:
        metric_cols += [k for k in _scalar_finals(r.summary) if k not in metric_cols]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", *keys, *metric_cols, "wall_time_s", "run_dir"])
        for r in runs:
            finals = _scalar_finals(r.summary)
            writer.writerow([r.index, *(json.dumps(r.point[k]) if isinstance(r.point[k], (list, dict)) else r.point[k]
                                        for k in keys),
                             *(finals.get(k, "") for k in metric_cols), r.summary.get("wall_time_s", ""), r.run_dir])
    return path


def point_label(point: dict[str, Any]) -> str:
    """`{"train.lr": 0.1, "fl.rounds": 2}` -> "lr=0.1 rounds=2" (last key component only)."""
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())


def compared_metric(runs: list[SweepRun]) -> str | None:
    """The final metric to compare runs on: accuracy when present, else the first numeric one."""
    finals = [_scalar_finals(r.summary) for r in runs]
    numeric = [k for f in finals for k, v in f.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return next((m for m in METRIC_PREFERENCE if m in numeric), numeric[0] if numeric else None)


def sweep_figure(runs: list[SweepRun], path: Path) -> Path | None:
    """Left: the compared final metric per run; right: that metric per round (or epoch) of every run."""
    from matplotlib.ticker import MaxNLocator

    from siegecraft.core.results.plots import plt

    metric = compared_metric(runs)
    if metric is None:
        return None
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [point_label(r.point) for r in runs]
    values = [r.summary.get("final", {}).get(metric) for r in runs]
    bars.bar(range(len(runs)), [v if isinstance(v, (int, float)) else 0.0 for v in values])
    bars.set_xticks(range(len(runs)), labels, rotation=30, ha="right", fontsize=8)
    bars.set_ylabel(f"final {metric}")
    bars.set_title(f"final {metric} per run")
    for r, label in zip(runs, labels):
        step = next((k for k in ("round", "epoch", "step") if any(k in m for m in r.metrics)), None)
        pts = [(m[step], m[metric]) for m in r.metrics if step and isinstance(m.get(metric), (int, float))]
        if pts:
            lines.plot(*zip(*pts), marker="o", ms=3, label=label)
            lines.set_xlabel(step)
    lines.xaxis.set_major_locator(MaxNLocator(integer=True))
    lines.set_ylabel(metric)
    lines.set_title(f"{metric} per round")
    lines.grid(alpha=0.3)
    if lines.lines:
        lines.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_table(result: SweepResult) -> Any:
    """A rich table of the runs: grid values, the compared metric, wall time."""
    from rich.table import Table

    metric = compared_metric(result.runs)
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
