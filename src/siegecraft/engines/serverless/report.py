"""Figures of a serverless run: cost and time against the deadline or budget, and the chosen configurations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _cumulative(records: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    return [0.0] + [r["elapsed_s"] for r in records], [0.0] + [r["spent_usd"] for r in records]


def cost_time_figure(
    records: list[dict[str, Any]], path: Path, *, deadline_s: float | None, budget_usd: float | None
) -> Path:
    """Cumulative cost against elapsed time, one marker per plan, with the deadline or budget drawn in."""
    fig, ax = plt.subplots(figsize=(6, 4))
    t, c = _cumulative(records)
    ax.plot(t, c, "-", color="tab:blue", label="actual (cumulative)")
    for kind, marker in (("profile", "s"), ("train", "o")):
        pts = [(r["elapsed_s"], r["spent_usd"]) for r in records if r["phase"] == kind]
        if pts:
            ax.plot(*zip(*pts), marker, color="tab:blue", label=f"{kind} plans")
    proj = [(r["projected_finish_s"], r["projected_cost_usd"]) for r in records if r["projected_finish_s"]]
    if proj:
        ax.plot(*zip(*proj), "x", color="tab:orange", label="projection at each decision")
    if deadline_s:
        ax.axvline(deadline_s, color="tab:red", linestyle="--", label=f"deadline {deadline_s:.0f} s")
    if budget_usd:
        ax.axhline(budget_usd, color="tab:red", linestyle="--", label=f"budget ${budget_usd:.4f}")
    ax.set_xlabel("elapsed time (s)")
    ax.set_ylabel("cost (USD)")
    ax.set_title("cost and time against the target")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def projection_figure(
    records: list[dict[str, Any]], path: Path, *, deadline_s: float | None, budget_usd: float | None
) -> Path:
    """Per epoch: projected and actual finish time (deadline mode) or total cost (budget mode)."""
    train = [r for r in records if r["phase"] == "train"]
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in train]
    if budget_usd:
        ax.plot(
            epochs,
            [r["projected_cost_usd"] or float("nan") for r in train],
            "x--",
            label="projected total cost",
        )
        ax.plot(epochs, [r["spent_usd"] for r in train], "o-", label="spent so far")
        ax.axhline(budget_usd, color="tab:red", linestyle="--", label="budget")
        ax.set_ylabel("USD")
    else:
        ax.plot(
            epochs, [r["projected_finish_s"] or float("nan") for r in train], "x--", label="projected finish"
        )
        ax.plot(epochs, [r["elapsed_s"] for r in train], "o-", label="actual elapsed")
        if deadline_s:
            ax.axhline(deadline_s, color="tab:red", linestyle="--", label="deadline")
        ax.set_ylabel("seconds")
    ax.set_xlabel("epoch")
    ax.set_title("projection after each decision vs actual")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def config_figure(records: list[dict[str, Any]], path: Path) -> Path:
    """Workers, memory and batch size of every plan (profiling probes first)."""
    fig, axes = plt.subplots(3, 1, figsize=(6, 5), sharex=True)
    x = list(range(len(records)))
    for ax, key in zip(axes, ("workers", "memory_mb", "batch_size")):
        ax.step(x, [r[key] for r in records], where="post", marker="o")
        ax.set_ylabel(key)
    axes[-1].set_xticks(x, [f"{r['phase'][0]}{r['epoch']}" for r in records], fontsize=7)
    axes[-1].set_xlabel("plan (p = profiling probe, t = training epoch)")
    fig.suptitle("configuration chosen per plan")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def serverless_figures(
    records: list[dict[str, Any]], figures: str | Path, *, deadline_s: float | None = None,
    budget_usd: float | None = None,
) -> list[Path]:  # fmt: skip
    """Write the three figures into `figures` and return their paths."""
    out = Path(figures)
    out.mkdir(parents=True, exist_ok=True)
    if not records:
        return []
    kw = {"deadline_s": deadline_s, "budget_usd": budget_usd}
    return [
        cost_time_figure(records, out / "serverless_cost_time.png", **kw),
        projection_figure(records, out / "serverless_projection.png", **kw),
        config_figure(records, out / "serverless_configs.png"),
    ]
