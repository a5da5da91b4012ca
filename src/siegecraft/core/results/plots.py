"""Standard figures drawn from metrics.jsonl; every topology gets them for free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _series(records: list[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[y]) for r in records if r.get(x) is not None and isinstance(r.get(y), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def line_figure(records: list[dict[str, Any]], x: str, ys: list[str], path: Path, title: str) -> Path | None:
    """One line per metric in `ys` against `x`; None when no record has them."""
    drawn = False
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for y in ys:
        xs, vs = _series(records, x, y)
        if xs:
            ax.plot(xs, vs, marker="o", ms=3, label=y)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel(x)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar_figure(values: list[float], path: Path, title: str, xlabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.bar(range(len(values)), values)
    ax.set_xticks(range(len(values)))
    ax.set_xlabel(xlabel)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def standard_figures(records: list[dict[str, Any]], figures: Path) -> list[Path]:
    """Accuracy and loss over rounds/epochs, and the final per-class accuracy."""
    if not records:
        return []
    x = "round" if any("round" in r for r in records) else "epoch" if any("epoch" in r for r in records) else "step"
    out = [
        line_figure(records, x, ["accuracy"], figures / "accuracy.png", "test accuracy"),
        line_figure(records, x, ["loss", "train_loss"], figures / "loss.png", "loss"),
    ]
    last = next((r for r in reversed(records) if r.get("per_class_accuracy")), None)
    if last:
        vals = [v if v is not None else 0.0 for v in last["per_class_accuracy"]]
        out.append(bar_figure(vals, figures / "per_class_accuracy.png", "final per-class accuracy", "class"))
    return [p for p in out if p is not None]
