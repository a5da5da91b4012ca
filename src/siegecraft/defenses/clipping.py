"""Norm clipping of client updates, with a fixed bound or one adapted to each round's updates.

Clipping bounds what any one client can move the model, which is what boosted (model-replacement) and
large-noise uploads rely on; direction is kept, so honest updates below the bound pass unchanged.
"""

from __future__ import annotations

import torch
from pydantic import Field

from siegecraft.engines.federated.wrappers import STRATEGY_DEFENSES, StrategyWrapper, WrapperOptions


def clip_rows(updates: torch.Tensor, max_norm: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each row to L2 norm <= max_norm; returns (clipped rows, boolean mask of rows that were scaled)."""
    norms = updates.norm(dim=1)
    bound = torch.as_tensor(max_norm, dtype=updates.dtype)
    clipped = norms > bound
    scale = torch.where(clipped, bound / norms.clamp_min(torch.finfo(updates.dtype).tiny), torch.ones_like(norms))
    return updates * scale[:, None], clipped


class NormClipOptions(WrapperOptions):
    max_norm: float = Field(1.0, gt=0, description="L2 bound on each client's update")


@STRATEGY_DEFENSES.register("norm_clip")
class NormClip(StrategyWrapper):
    """Fixed clipping: every update is scaled down to norm <= `max_norm`."""

    options_model = NormClipOptions
    options: NormClipOptions

    def screen(self, updates: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, clipped = clip_rows(updates, self.options.max_norm)
        self.metrics = {"clip_bound": self.options.max_norm, "clipped": int(clipped.sum())}
        return out, weights


class AdaptiveClipOptions(WrapperOptions):
    quantile: float = Field(0.5, gt=0, le=1, description="which quantile of this round's update norms")
    multiplier: float = Field(1.0, gt=0, description="bound = multiplier * that quantile")


@STRATEGY_DEFENSES.register("adaptive_norm_clip")
class AdaptiveNormClip(StrategyWrapper):
    """Adaptive clipping: the bound is `multiplier` x the `quantile` of this round's update norms.

    With the median (the default) a minority of clients cannot raise the bound, however large their
    uploads, and no fixed bound has to be tuned to the model and learning rate.
    """

    options_model = AdaptiveClipOptions
    options: AdaptiveClipOptions

    def screen(self, updates: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bound = self.options.multiplier * updates.norm(dim=1).quantile(self.options.quantile)
        out, clipped = clip_rows(updates, bound)
        self.metrics = {"clip_bound": float(bound), "clipped": int(clipped.sum())}
        return out, weights
