"""Hijacking metrics: accuracy, confusion matrix, and how visible a cloak is (SSIM, L2 to the raw image)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["accuracy", "confusion_matrix", "mean_l2", "mean_ssim", "ssim"]


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean()) if len(y) else float("nan")


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """[k, k] counts: rows are true hijacking classes, columns predicted ones."""
    cm = torch.zeros(k, k, dtype=torch.long)
    cm.index_put_((y.long(), pred.long()), torch.ones_like(y, dtype=torch.long), accumulate=True)
    return cm


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Per-image structural similarity [B] (Wang et al. 2004, Gaussian window, mean over channels)."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"ssim needs two [B, C, H, W] tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    c = a.shape[1]
    size = min(window, a.shape[-1], a.shape[-2])
    w = _gaussian_window(size, sigma).to(a.dtype).expand(c, 1, size, size)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def mean_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(ssim(a, b).mean()) if len(a) else float("nan")


def mean_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image L2 distance (pixels in [0, 1])."""
    return float((a - b).flatten(1).norm(dim=1).mean()) if len(a) else float("nan")
