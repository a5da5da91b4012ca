"""`demo_capped_mean`: cap each update's L2 norm, then take the sample-weighted mean.

Capping depends on each update on its own, so the rule is not a weighted sum of the updates: it is not
marked `linear`, and a zero-sum secure aggregation (which reveals only the sum) refuses it.
"""

from __future__ import annotations

import torch

from siegecraft.engines.federated.aggregation import AGGREGATORS, check_stack


@AGGREGATORS.register("demo_capped_mean")
def capped_mean(updates: torch.Tensor, weights: torch.Tensor, *, max_norm: float | None = None) -> torch.Tensor:
    """Scale every update down to at most `max_norm` (default: the median update norm), then average."""
    check_stack(updates, weights)
    norms = updates.norm(dim=1)
    cap = torch.as_tensor(max_norm, dtype=norms.dtype) if max_norm is not None else norms.median()
    if cap <= 0:
        raise ValueError(f"demo_capped_mean: max_norm must be > 0, got {float(cap)}")
    scale = torch.clamp(cap / norms.clamp_min(1e-12), max=1.0)
    w = weights.to(updates.dtype)
    return (w / w.sum()) @ (updates * scale[:, None])
