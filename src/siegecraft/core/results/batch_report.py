"""Reports of batches of runs: the attack x defense matrix page and heatmap, and the sweep figure.

The drivers plan and run the batches; the pages and figures are drawn here, from plain data (mappings
of final metrics), so every HTML page and figure siegecraft writes comes from `core.results`.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader
from matplotlib.ticker import MaxNLocator

from siegecraft.core.results.plots import plt
from siegecraft.core.results.rundir import package_versions

METRIC_PREFERENCE = ("accuracy", "main_accuracy", "loss")  # what a sweep figure compares, when present
STEP_KEYS = ("round", "epoch", "step")


def fmt(v: Any) -> str:
    """A cell value for a table: '-' for missing, four decimals for floats."""
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


# -- matrix -------------------------------------------------------------------------------------------
def matrix_heatmap(
    attacks: Sequence[str], defenses: Sequence[str], cells: Sequence[Mapping[str, Any]], path: Path
) -> Path:
    """Two heatmaps (rows: attacks, columns: defenses) of `utility` and `attack_success`, values annotated."""
    panels = [("utility (test accuracy)", "utility", "viridis"), ("attack success", "attack_success", "magma_r")]
    rows, cols = len(attacks), len(defenses)
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.3 * cols * 2, 1.2 + 0.55 * rows), squeeze=False)
    for ax, (title, key, cmap) in zip(axes[0], panels, strict=True):
        grid = np.full((rows, cols), np.nan)
        for c in cells:
            if c.get(key) is not None:
                grid[attacks.index(c["attack"]), defenses.index(c["defense"])] = c[key]
        colours = plt.get_cmap(cmap)
        ax.imshow(np.ma.masked_invalid(grid), cmap=colours, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(cols), list(defenses), rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(rows), list(attacks), fontsize=8)
        ax.set_title(title, fontsize=10)
        for (r, k), v in np.ndenumerate(grid):
            if math.isnan(v):
                ax.text(k, r, "-", ha="center", va="center", fontsize=7)
                continue
            red, green, blue, _ = colours(v)
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # luma: white text on dark cells
            ax.text(k, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_matrix_report(
    out: Path,
    *,
    name: str,
    seed: int,
    attacks: Sequence[str],
    defenses: Sequence[str],
    cells: Sequence[Mapping[str, Any]],
    wall_s: float,
    config: str,
) -> Path:
    """`out/figures/heatmap.png` and the self-contained `out/report.html`; returns the report's path.

    Each cell maps attack, defense, utility, attack_success, success_metric, utility_drop, clients, wall_s
    and run_dir (relative to `out`, linked from the page).
    """
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    heatmap = matrix_heatmap(attacks, defenses, cells, figures / "heatmap.png")
    by_pair = {(c["attack"], c["defense"]): c for c in cells}
    grid = {a: {d: f"{fmt(by_pair[a, d].get('utility'))} / {fmt(by_pair[a, d].get('attack_success'))}"
                if (a, d) in by_pair else "-" for d in defenses} for a in attacks}
    rows = [{k: v if k in ("attack", "defense", "run_dir") else fmt(v) for k, v in c.items()} for c in cells]
    html = _env().get_template("matrix.html.j2").render(
        name=name, seed=seed, attacks=attacks, defenses=defenses, grid=grid, rows=rows, wall=f"{wall_s:.1f}",
        heatmap=base64.b64encode(heatmap.read_bytes()).decode(),
        versions=json.dumps(package_versions(), indent=2), config=config,
    )
    report = out / "report.html"
    report.write_text(html)
    return report


def _env() -> Environment:
    return Environment(loader=PackageLoader("siegecraft.core.results", "templates"), autoescape=True)


# -- sweep --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesRun:
    """One run of a sweep as the figure needs it: a label, its final metrics and its metrics records."""

    label: str
    final: Mapping[str, Any]
    metrics: Sequence[Mapping[str, Any]] = field(default_factory=list)


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compared_metric(finals: Sequence[Mapping[str, Any]]) -> str | None:
    """The final metric to compare runs on: accuracy when present, else the first numeric one."""
    numeric = [k for f in finals for k, v in f.items() if _numeric(v)]
    return next((m for m in METRIC_PREFERENCE if m in numeric), numeric[0] if numeric else None)


def sweep_figure(runs: Sequence[SeriesRun], path: Path) -> Path | None:
    """Left: the compared final metric per run; right: that metric per round (or epoch) of every run.

    None (and no file) when no run has a numeric final metric.
    """
    metric = compared_metric([r.final for r in runs])
    if metric is None:
        return None
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4))
    values = [r.final.get(metric) for r in runs]
    bars.bar(range(len(runs)), [v if _numeric(v) else 0.0 for v in values])
    bars.set_xticks(range(len(runs)), [r.label for r in runs], rotation=30, ha="right", fontsize=8)
    bars.set_ylabel(f"final {metric}")
    bars.set_title(f"final {metric} per run")
    for r in runs:
        step = next((k for k in STEP_KEYS if any(k in m for m in r.metrics)), None)
        pts = [(m[step], m[metric]) for m in r.metrics if step and step in m and _numeric(m.get(metric))]
        if pts:
            lines.plot(*zip(*pts, strict=True), marker="o", ms=3, label=r.label)
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
