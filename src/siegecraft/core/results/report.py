"""report.html: a self-contained page (summary table, figures embedded as base64) and the CLI table."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader
from rich.table import Table

from siegecraft.core.results.plots import standard_figures
from siegecraft.core.results.rundir import RunDir


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The scalar entries of `summary["final"]`, formatted, in insertion order."""
    final = summary.get("final", {})
    return [(k, format_value(v)) for k, v in final.items() if isinstance(v, (int, float, str, bool)) or v is None]


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary.get('name', 'run')} ({summary.get('topology', '?')})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary_rows(summary):
        table.add_row(k, v)
    if "wall_time_s" in summary:
        table.add_row("wall_time_s", format_value(summary["wall_time_s"]))
    return table


def build_report(run: RunDir) -> Path:
    """(Re)draw the standard figures and write report.html embedding every figure in figures/."""
    summary = run.read_summary()
    standard_figures(run.read_metrics(), run.figures)
    order = summary.get("figure_order", [])
    figs = sorted(run.figures.glob("*.png"), key=lambda p: (order.index(p.name) if p.name in order else 99, p.name))
    figures = [(p.stem.replace("_", " "), base64.b64encode(p.read_bytes()).decode()) for p in figs]
    env = Environment(loader=PackageLoader("siegecraft.core.results", "templates"), autoescape=True)
    html = env.get_template("report.html.j2").render(
        name=summary.get("name", run.path.name),
        topology=summary.get("topology", "?"),
        seed=summary.get("seed", "?"),
        wall=format_value(summary.get("wall_time_s", float("nan"))),
        table=summary_rows(summary),
        figures=figures,
        versions=json.dumps(summary.get("versions", {}), indent=2),
        config=run.config_file.read_text() if run.config_file.exists() else "",
    )
    run.report_file.write_text(html)
    return run.report_file
