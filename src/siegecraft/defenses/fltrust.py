"""FLTrust (Cao et al., NDSS 2021): trust each client by how well its update agrees with the server's own.

The server keeps a small clean root dataset (taken from the training split and withheld from every
client), trains on it each round from the same global weights, and uses that update g0 as a compass:
trust_i = ReLU(cos(g_i, g0)); each g_i is rescaled to ||g0|| (so no client wins by magnitude) and the
trust scores become the aggregation weights. Around FedAvg's weighted mean this is exactly FLTrust.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from siegecraft.defenses.wrappers import STRATEGY_DEFENSES, StrategyWrapper, WrapperOptions

if TYPE_CHECKING:
    from siegecraft.data import ImageDataset


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


def root_size_needed(names: list[str], options: dict[str, Any]) -> int:
    """How many root samples the listed defenses need (0: none asks for a root dataset)."""
    sizes = [
        STRATEGY_DEFENSES.get(n).options_model.model_validate(options.get(n, {})).root_size  # type: ignore[attr-defined]
        for n in names
        if STRATEGY_DEFENSES.get(n).needs_root_data
    ]
    return max(sizes, default=0)


def split_root_dataset(train: ImageDataset, size: int, *, seed: int) -> tuple[ImageDataset, ImageDataset | None]:
    """(client training set, server root set): `size` random samples go to the server, none to clients."""
    if size == 0:
        return train, None
    if size >= len(train):
        raise ValueError(f"a server root dataset of {size} samples leaves nothing for the clients ({len(train)} in all)")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 65_537 + 17))
    root_idx, rest = perm[:size].sort().values, perm[size:].sort().values
    return train.subset(rest), train.subset(root_idx)
