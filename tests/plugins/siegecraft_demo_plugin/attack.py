"""`demo_boost`: the attacker uploads its honest update multiplied by `factor`.

A boosted update dominates a plain mean. Its success metric, `boost_influence`, is the cosine between how
far the global model moved over the run and the sum of everything the attacker uploaded: near 1 when
the attacker steered the federation, lower when a defense damped its uploads. Each evaluated round also
reports that round's cosine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from siegecraft.core.config import FieldError
from siegecraft.core.models import SiegeModel, flat_params
from siegecraft.engines.federated.client import ClientUpdate
from siegecraft.engines.federated.extensions import ATTACKS, Adversary, AttackOptions, FederationContext


class BoostOptions(AttackOptions):
    factor: float = Field(5.0, gt=0, description="multiplier of the honest update")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flat vectors (0.0 when either is zero)."""
    return float(F.cosine_similarity(a, b, dim=0, eps=1e-12))


@ATTACKS.register("demo_boost")
class Boost(Adversary):
    """Upload `factor` x the honest update."""

    options_model = BoostOptions
    options: BoostOptions
    success_metric = "boost_influence"

    def __init__(self, clients: list[int], options: BoostOptions) -> None:
        super().__init__(clients, options)
        self._start: torch.Tensor | None = None  # the global weights before round 1
        self._total: torch.Tensor | None = None  # sum of all uploads
        self._round: dict[str, torch.Tensor] = {}  # this round's start weights and uploads

    @classmethod
    def check(cls, options: AttackOptions, exp: Any) -> None:
        if len(set(exp.attack.clients)) >= exp.fl.clients:
            raise FieldError(("attack", "clients"), exp.attack.clients,
                             f"demo_boost needs at least one benign client (fl.clients = {exp.fl.clients})")

    def setup(self, ctx: FederationContext) -> None:
        self._start = flat_params(ctx.model_factory())

    def client_update(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        honest = benign()
        upload = honest.update * self.options.factor
        self._round.setdefault("start", global_weights.clone())
        self._round["upload"] = self._round.get("upload", torch.zeros_like(upload)) + upload
        self._total = upload.clone() if self._total is None else self._total + upload
        return dataclasses.replace(honest, update=upload)

    def on_round_end(self, ctx: FederationContext, rnd: int, global_weights: torch.Tensor) -> dict[str, Any]:
        done, self._round = self._round, {}
        if not done:
            return {}
        return {"boost_influence": cosine(global_weights - done["start"], done["upload"])}

    def finish(self, ctx: FederationContext, final_model: SiegeModel) -> dict[str, Any]:
        if self._start is None or self._total is None:
            return {"boost_influence": 0.0}  # never sampled: no influence
        return {"boost_influence": cosine(flat_params(final_model) - self._start, self._total)}
