"""FLTrust (Cao et al., NDSS 2021): trust each client by how well its update agrees with the server's own.

The server keeps a small clean root dataset (taken from the training split and withheld from every
client), trains on it each round from the same global weights, and uses that update g0 as a compass:
trust_i = ReLU(cos(g_i, g0)); each g_i is rescaled to ||g0|| (so no client wins by magnitude) and the
trust scores become the aggregation weights. Around FedAvg's weighted mean this is exactly FLTrust.
"""

from __future__ import annotations

import torch
from pydantic import Field

from siegecraft.engines.federated.wrappers import STRATEGY_DEFENSES, StrategyWrapper, WrapperOptions


def trust_scores(updates: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """ReLU of the cosine similarity between each update row and the server's reference update."""
    ref_norm = reference.norm()
    norms = updates.norm(dim=1)
    cos = (updates @ reference) / (norms * ref_norm).clamp_min(torch.finfo(updates.dtype).tiny)
    return cos.clamp_min(0.0)


def rescale_to(updates: torch.Tensor, norm: float | torch.Tensor) -> torch.Tensor:
    """Each row scaled to L2 norm `norm` (all-zero rows stay zero)."""
    norms = updates.norm(dim=1, keepdim=True)
    return updates * (norm / norms.clamp_min(torch.finfo(updates.dtype).tiny))


def fltrust_aggregate(updates: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The FLTrust rule on its own: sum_i trust_i * rescaled g_i / sum_i trust_i (zero if nobody is trusted)."""
    ts = trust_scores(updates, reference)
    if float(ts.sum()) == 0.0:
        return torch.zeros_like(reference)
    return (ts / ts.sum()) @ rescale_to(updates, reference.norm())


class FLTrustOptions(WrapperOptions):
    root_size: int = Field(300, ge=1, description="root samples the server takes from the training split")


@STRATEGY_DEFENSES.register("fltrust")
class FLTrust(StrategyWrapper):
    """Rescale updates to the server update's norm, weight them by trust, drop the untrusted ones."""

    options_model = FLTrustOptions
    options: FLTrustOptions
    needs_root_data = True
    reference: torch.Tensor | None = None

    def begin_round(self, rnd: int, global_weights: torch.Tensor) -> None:
        super().begin_round(rnd, global_weights)
        assert self.ctx.server_update is not None  # wrap_strategy refuses to build FLTrust without it
        self.reference = self.ctx.server_update(rnd, global_weights)

    def screen(self, updates: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ref = self.reference
        if ref is None:
            raise RuntimeError("FLTrust.combine called before begin_round: no server reference update")
        ts = trust_scores(updates, ref)
        keep = ts > 0
        self.metrics = {"trusted": int(keep.sum()), "trust_scores": [round(float(t), 4) for t in ts]}
        return rescale_to(updates[keep], ref.norm()), ts[keep]
