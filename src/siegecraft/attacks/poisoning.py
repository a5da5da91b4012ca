"""Classic federated poisoning attacks as client roles: the context every robust defense is judged in.

- `label_flip`: train honestly on wrongly labelled data (every class c -> C-1-c, or one source -> target).
- `sign_flip`: upload the honest update reversed and scaled by `scale`.
- `gaussian_noise`: upload random noise (or add it to the honest update).
- `backdoor`: model replacement (Bagdasaryan et al., 2020) with a pixel trigger: train on data where part
  of the samples carry a small bright square and the target label, then boost the update so that it
  replaces the global model after averaging.

Every attack reports `attack_success` after evaluated rounds and in the final summary: for the backdoor
the share of triggered non-target test inputs classified as the target; for targeted label flipping the
share of source-class inputs classified as the target (all-class flipping: the share classified as
their flipped label); for the untargeted sign-flip and noise attacks the test error rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, model_validator

from siegecraft.core.models import load_flat_params
from siegecraft.core.training import predict_logits
from siegecraft.engines.federated.extensions import ATTACKS, Adversary, AttackOptions, FederationContext
from siegecraft.engines.federated.sampling import client_seed, sample_clients

if TYPE_CHECKING:
    from siegecraft.core.data.image_dataset import ImageDataset
    from siegecraft.core.models import SiegeModel
    from siegecraft.engines.federated.client import ClientUpdate


class PoisoningAdversary(Adversary):
    """Shared plumbing: an evaluation replica, and `attack_success` after every evaluated round."""

    success_metric = "attack_success"

    _model: SiegeModel | None = None

    def setup(self, ctx: FederationContext) -> None:
        self._model = ctx.model_factory()

    def attack_success(self, model: SiegeModel, test: ImageDataset) -> float:
        """The attack's own success metric on the test set (see the module docstring)."""
        raise NotImplementedError

    def on_round_end(self, ctx: FederationContext, rnd: int, global_weights: torch.Tensor) -> dict[str, Any]:
        fl = ctx.exp.fl
        if self._model is None or not (rnd % fl.eval_every == 0 or rnd == fl.rounds):
            return {}
        load_flat_params(self._model, global_weights)
        return {"attack_success": self.attack_success(self._model, ctx.test_set)}

    def finish(self, ctx: FederationContext, final_model: SiegeModel) -> dict[str, Any]:
        return {"attack_success": self.attack_success(final_model, ctx.test_set)}


def _predict(model: SiegeModel, x: torch.Tensor) -> torch.Tensor:
    return predict_logits(model, x).argmax(1) if len(x) else torch.zeros(0, dtype=torch.long)


def _rate(hits: torch.Tensor) -> float:
    return float(hits.float().mean()) if hits.numel() else float("nan")


def _with_labels(data: ImageDataset, x: torch.Tensor, y: torch.Tensor, tag: str) -> ImageDataset:
    return type(data)(x, y, data.num_classes, f"{data.name}-{tag}", data.classes)


def _scaled(update: ClientUpdate, factor: float) -> ClientUpdate:
    return dataclasses.replace(update, update=update.update * factor)


# -- label flipping ---------------------------------------------------------------------------------
class LabelFlipOptions(AttackOptions):
    source: int | None = Field(None, ge=0, description="flip only this class (with target); None: all")
    target: int | None = Field(None, ge=0)
    boost: float = Field(1.0, gt=0, description="scale of the uploaded update")

    @model_validator(mode="after")
    def _pair(self) -> LabelFlipOptions:
        if (self.source is None) != (self.target is None):
            raise ValueError("label_flip: set both source and target, or neither (flip every class)")
        return self


def flip_labels(y: torch.Tensor, num_classes: int, source: int | None = None, target: int | None = None) -> torch.Tensor:
    """c -> num_classes-1-c for every label, or only `source` -> `target`."""
    if source is None or target is None:
        return num_classes - 1 - y
    return torch.where(y == source, torch.full_like(y, target), y)


@ATTACKS.register("label_flip")
class LabelFlip(PoisoningAdversary):
    """Honest training on flipped labels."""

    options_model = LabelFlipOptions
    options: LabelFlipOptions

    def client_update(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        del benign
        o = self.options
        data = ctx.trainer.client_data(client_id)
        poisoned = _with_labels(data, data.x, flip_labels(data.y, data.num_classes, o.source, o.target), "flipped")
        return _scaled(ctx.trainer.train(client_id, rnd, global_weights, data=poisoned), o.boost)

    def attack_success(self, model: SiegeModel, test: ImageDataset) -> float:
        o = self.options
        if o.source is not None:
            mask = test.y == o.source
            return _rate(_predict(model, test.x[mask]) == o.target)
        flipped = flip_labels(test.y, test.num_classes)
        mask = flipped != test.y
        return _rate(_predict(model, test.x[mask]) == flipped[mask])


# -- untargeted byzantine uploads -----------------------------------------------------------------
class UntargetedAdversary(PoisoningAdversary):
    """Success of an untargeted attack: the test error rate of the model it poisoned."""

    def attack_success(self, model: SiegeModel, test: ImageDataset) -> float:
        return _rate(_predict(model, test.x) != test.y)


class SignFlipOptions(AttackOptions):
    scale: float = Field(4.0, gt=0, description="upload -scale * honest update")


@ATTACKS.register("sign_flip")
class SignFlip(UntargetedAdversary):
    """Reverse (and amplify) the honest update, pushing the model uphill."""

    options_model = SignFlipOptions
    options: SignFlipOptions

    def client_update(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        del ctx, client_id, rnd, global_weights
        return _scaled(benign(), -self.options.scale)


class GaussianNoiseOptions(AttackOptions):
    sigma: float = Field(1.0, gt=0, description="standard deviation per coordinate")
    mode: Literal["replace", "add"] = "replace"


@ATTACKS.register("gaussian_noise")
class GaussianNoise(UntargetedAdversary):
    """Upload N(0, sigma^2) noise instead of (or on top of) the honest update; seeded per client and round."""

    options_model = GaussianNoiseOptions
    options: GaussianNoiseOptions

    def client_update(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        honest = benign()
        gen = torch.Generator().manual_seed(client_seed(ctx.exp.seed, rnd, client_id) + 7)
        noise = torch.randn(global_weights.shape, generator=gen, dtype=global_weights.dtype) * self.options.sigma
        update = noise if self.options.mode == "replace" else honest.update + noise
        return dataclasses.replace(honest, update=update)


# -- model-replacement backdoor -------------------------------------------------------------------
class BackdoorOptions(AttackOptions):
    target: int = Field(0, ge=0, description="label the trigger should produce")
    trigger_size: int = Field(3, ge=1, description="side of the square trigger, in pixels")
    trigger_value: float = Field(1.0, ge=0, le=1, description="pixel value of the trigger")
    poison_fraction: float = Field(0.5, gt=0, le=1, description="share of the attacker's samples triggered")
    boost: float | None = Field(None, gt=0, description="None: n_round / (n_attackers_in_round * server_lr)")
    rounds: list[int] = Field(default_factory=list, description="attack only in these rounds; [] = every round")


def apply_trigger(x: torch.Tensor, size: int = 3, value: float = 1.0) -> torch.Tensor:
    """A copy of [B, C, H, W] images with a size x size square of `value` one pixel from the bottom-right."""
    h, w = x.shape[-2:]
    if size + 1 > min(h, w):
        raise ValueError(f"a {size}px trigger does not fit {h}x{w} images")
    out = x.clone()
    out[..., h - size - 1 : h - 1, w - size - 1 : w - 1] = value
    return out


@ATTACKS.register("backdoor")
class Backdoor(PoisoningAdversary):
    """Pixel-trigger backdoor made to survive averaging by boosting the attackers' update."""

    options_model = BackdoorOptions
    options: BackdoorOptions

    def poison(self, data: ImageDataset, seed: int) -> ImageDataset:
        """The attacker's data with `poison_fraction` of it triggered and relabelled to the target."""
        o = self.options
        n = max(1, round(o.poison_fraction * len(data)))
        idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
        x, y = data.x.clone(), data.y.clone()
        x[idx] = apply_trigger(data.x[idx], o.trigger_size, o.trigger_value)
        y[idx] = o.target
        return _with_labels(data, x, y, "backdoor")

    def boost_for(self, ctx: FederationContext, rnd: int) -> float:
        """Model replacement: scale so the attackers' share of the average equals one full model step."""
        if self.options.boost is not None:
            return self.options.boost
        fl = ctx.exp.fl
        sampled = sample_clients(rnd, fl.clients, fl.per_round(), method=fl.sampling, seed=ctx.exp.seed)
        attackers = max(1, len(self.clients.intersection(sampled)))
        return len(sampled) / (attackers * fl.server_lr)

    def client_update(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        if self.options.rounds and rnd not in self.options.rounds:
            return benign()
        data = self.poison(ctx.trainer.client_data(client_id), client_seed(ctx.exp.seed, 0, client_id))
        update = ctx.trainer.train(client_id, rnd, global_weights, data=data)
        return _scaled(update, self.boost_for(ctx, rnd))

    def attack_success(self, model: SiegeModel, test: ImageDataset) -> float:
        o = self.options
        mask = test.y != o.target
        triggered = apply_trigger(test.x[mask], o.trigger_size, o.trigger_value)
        return _rate(_predict(model, triggered) == o.target)
