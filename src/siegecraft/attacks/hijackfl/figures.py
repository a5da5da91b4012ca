"""Figures every hijacking run writes into the run's figures/ folder (report.html embeds them all)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

__all__ = ["confusion_figure", "image_grid", "loss_figure"]


def _as_image(t: torch.Tensor) -> tuple[object, str | None]:
    """[C, H, W] in [0, 1] -> an array imshow accepts, and the colour map for grey images."""
    t = t.detach().clamp(0, 1)
    if t.shape[0] == 1:
        return t[0].numpy(), "gray"
    return t.permute(1, 2, 0).numpy(), None


def image_grid(
    images: torch.Tensor,
    path: Path,
    title: str,
    *,
    ncols: int,
    labels: Sequence[str] | None = None,
    wrong: Sequence[bool] | None = None,
) -> Path:
    """Images [N, C, H, W] in rows of `ncols`, each optionally captioned (red captions mark `wrong`)."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.1 * ncols, 1.2 * nrows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img, cmap = _as_image(images[i])
        ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
        if labels is not None:
            colour = "red" if wrong is not None and wrong[i] else "black"
            ax.set_title(labels[i], fontsize=7, color=colour)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_figure(cm: torch.Tensor, path: Path, title: str) -> Path:
    """Row-normalised confusion matrix of the hijacking task (rows true, columns predicted)."""
    rates = cm.float() / cm.sum(1, keepdim=True).clamp_min(1)
    k = cm.shape[0]
    fig, ax = plt.subplots(figsize=(0.45 * k + 2, 0.45 * k + 1.6))
    im = ax.imshow(rates.numpy(), vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted hijacking class")
    ax.set_ylabel("true hijacking class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def loss_figure(losses: Sequence[float], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(losses) + 1), losses)
    ax.set_xlabel("step")
    ax.set_ylabel("loss per cloak")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
