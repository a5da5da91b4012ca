"""The run's timeline figure: accuracy, target-label prediction rate and margin over time, events marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def timeline_figure(
    records: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]], path: Path, *, target: int, title: str
) -> Path:
    """Three stacked panels against wall time; vertical lines at the attack's events."""
    rows = [r for r in records if "accuracy" in r]
    t = [r["t"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(t, [r["accuracy"] for r in rows], marker=".", color="tab:blue")
    axes[0].set_ylabel("validation accuracy")
    if rows:
        n_labels = len(rows[0]["prediction_rate"])
        for label in range(n_labels):
            if label != target:
                axes[1].plot(t, [r["prediction_rate"][label] for r in rows], color="0.8", lw=0.8)
    axes[1].plot(t, [r["target_rate"] for r in rows], marker=".", color="tab:red", label=f"label {target}")
    axes[1].set_ylabel("prediction rate")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[2].plot(t, [r["target_margin"] for r in rows], marker=".", color="tab:purple")
    axes[2].axhline(0.0, color="0.5", lw=0.8)
    axes[2].set_ylabel(f"margin to label {target}")
    axes[2].set_xlabel("time since start (s)")
    for i, ev in enumerate(events):
        for ax in axes:
            ax.axvline(ev["t"], color="tab:orange", ls="--", lw=0.8)
        # staggered labels: attack events often come within a fraction of a second of each other
        axes[0].annotate(ev["event"], (ev["t"], 0.97 - 0.16 * (i % 5)), xycoords=("data", "axes fraction"),
                         fontsize=7, va="top", ha="right", color="tab:orange",
                         bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    axes[0].set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
