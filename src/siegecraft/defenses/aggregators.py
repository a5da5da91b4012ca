"""Robust aggregation rules over a stack of client updates (the mean is the federated engine's own).

Each rule takes `updates` [n_clients, n_params] and `weights` [n_clients] (sample counts) and
returns one update vector. Robust rules ignore weights where the rule itself has none.
"""

from __future__ import annotations

import torch

from siegecraft.engines.federated.aggregation import AGGREGATORS, weighted_mean
from siegecraft.engines.federated.aggregation import check_stack as _check


@AGGREGATORS.register("median")
def coordinate_median(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median (the mean of the two middle values for even n)."""
    _check(updates, weights)
    return updates.quantile(0.5, dim=0) if updates.shape[0] > 1 else updates[0].clone()


@AGGREGATORS.register("trimmed_mean")
def trimmed_mean(updates: torch.Tensor, weights: torch.Tensor, *, beta: float = 0.1) -> torch.Tensor:
    """Coordinate-wise mean after dropping the `beta` fraction largest and smallest values."""
    _check(updates, weights)
    if not 0 <= beta < 0.5:
        raise ValueError(f"trimmed_mean beta must be in [0, 0.5), got {beta}")
    n = updates.shape[0]
    k = int(beta * n)
    if k == 0:
        return updates.mean(0)
    return updates.sort(dim=0).values[k : n - k].mean(0)


def krum_scores(updates: torch.Tensor, f: int) -> torch.Tensor:
    """Krum score per client: sum of squared distances to its n - f - 2 nearest neighbours."""
    n = updates.shape[0]
    m = n - f - 2
    if m < 1:
        raise ValueError(f"Krum needs n > f + 2 clients (n={n}, f={f})")
    d = torch.cdist(updates, updates).pow(2)
    d.fill_diagonal_(float("inf"))
    return d.topk(m, dim=1, largest=False).values.sum(1)


@AGGREGATORS.register("krum")
def krum(updates: torch.Tensor, weights: torch.Tensor, *, f: int = 1) -> torch.Tensor:
    """Krum: the single update closest to its neighbours."""
    _check(updates, weights)
    return updates[int(krum_scores(updates, f).argmin())].clone()


@AGGREGATORS.register("multi_krum")
def multi_krum(updates: torch.Tensor, weights: torch.Tensor, *, f: int = 1, m: int | None = None) -> torch.Tensor:
    """Multi-Krum: the weighted mean of the `m` best-scored updates (default n - f)."""
    _check(updates, weights)
    keep = m if m is not None else updates.shape[0] - f
    idx = krum_scores(updates, f).argsort()[:keep]
    return weighted_mean(updates[idx], weights[idx])


@AGGREGATORS.register("geomedian")
def geometric_median(
    updates: torch.Tensor, weights: torch.Tensor, *, iters: int = 100, eps: float = 1e-8, tol: float = 1e-7
) -> torch.Tensor:
    """Weighted geometric median by Weiszfeld's iterations (smoothed by `eps`)."""
    _check(updates, weights)
    w = weights.to(updates.dtype)
    z = weighted_mean(updates, weights)
    for _ in range(iters):
        dist = (updates - z).norm(dim=1).clamp_min(eps)
        beta = w / dist
        z_new = (beta / beta.sum()) @ updates
        if (z_new - z).norm() <= tol * max(1.0, float(z.norm())):
            return z_new
        z = z_new
    return z
