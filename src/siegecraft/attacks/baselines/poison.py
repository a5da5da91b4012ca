"""`poison`: the data-poisoning hijack in the style of Salem et al., adapted to federated learning.

From its attack round on, the attacker trains on its own data plus the hijacking samples relabelled to
their mapped original classes, and scales its update by a model-replacement factor (default 10) so it
survives averaging. Inference sends the raw hijacking input and reads the most probable mapped class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from siegecraft.attacks.hijackfl.adversary import HijackAdversary
from siegecraft.attacks.hijackfl.execution import Hijacker, RawHijacker
from siegecraft.attacks.hijackfl.mapping import ClassMapping, greedy_mapping, index_mapping
from siegecraft.attacks.hijackfl.options import HijackOptions
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel
from siegecraft.engines.federated.extensions import FederationContext

if TYPE_CHECKING:
    from siegecraft.engines.federated.client import ClientUpdate

__all__ = ["Poison", "PoisonOptions", "concat"]


class PoisonOptions(HijackOptions):
    """The poisoning baseline's dials."""

    scale: float = Field(10.0, gt=0, description="model-replacement factor applied to the poisoned update")
    mapping: Literal["greedy", "index"] = Field("greedy", description="greedy (as HijackFL) or Salem's by index")


def concat(a: ImageDataset, b: ImageDataset, name: str) -> ImageDataset:
    """The samples of `a` followed by those of `b` (same input shape and label space)."""
    return ImageDataset(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), a.num_classes, name, a.classes)


class Poison(HijackAdversary):
    """Poisoned, scaled uploads from the attack round on; raw-input queries at inference."""

    options_model = PoisonOptions
    options: PoisonOptions

    def __init__(self, clients: list[int], options: PoisonOptions) -> None:
        super().__init__(clients, options)
        self.poison_set: ImageDataset | None = None

    def map_classes(self, counts: torch.Tensor, negative: int | None) -> ClassMapping:
        if self.options.mapping == "index":
            return index_mapping(*counts.shape)
        return greedy_mapping(counts, negative)

    def poison_inputs(self, ctx: FederationContext, snapshot: SiegeModel) -> torch.Tensor:
        """The inputs trained under mapped labels (the raw hijacking samples here)."""
        del ctx, snapshot
        assert self.data is not None
        return self.data.train.x

    def build_hijacker(self, ctx: FederationContext, snapshot: SiegeModel, mapping: ClassMapping) -> Hijacker:
        assert self.data is not None
        with self.stage("poison_data"):
            x = self.poison_inputs(ctx, snapshot)
        y = mapping.original_labels(self.data.train.y)
        self.poison_set = ImageDataset(x, y, mapping.num_original, f"{self.data.train.name}-poison")
        return self.inference_hijacker(ctx, mapping)

    def inference_hijacker(self, ctx: FederationContext, mapping: ClassMapping) -> Hijacker:
        del ctx
        return RawHijacker(mapping)

    def upload(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        if self.poison_set is None:
            return benign()
        with self.stage("poisoned_training"):
            data = concat(ctx.trainer.client_data(client_id), self.poison_set, "poisoned")
            honest = ctx.trainer.train(client_id, rnd, global_weights, data=data)
        return dataclasses.replace(honest, update=honest.update * self.options.scale)
