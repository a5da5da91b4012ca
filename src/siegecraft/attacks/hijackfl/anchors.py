"""Anchor features: where each mapped original class (and the negative class) lives in feature space.

`synthetic`: optimise an input P = sigmoid(Z) until the snapshot gives the class probability ~1 (BCE
between softmax and one-hot), then take its penultimate features. `mean`: the mean feature of the
attacker's real samples of that class. `FeatureScale` optionally standardises features so that every
dimension counts in units of its spread over real inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel

__all__ = [
    "STALLED_CONFIDENCE", "FeatureScale", "batched_features", "class_confidence", "mean_anchors",
    "synthetic_anchor_inputs", "synthetic_anchors",
]

STALLED_CONFIDENCE = 0.9  # a synthetic anchor below this probability of its class has stalled


def batched_features(model: SiegeModel, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Penultimate features of `x` without gradients, in batches."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model.features(xb) for xb in x.split(batch_size)])


def synthetic_anchor_inputs(
    model: SiegeModel,
    classes: Sequence[int],
    *,
    steps: int = 500,
    lr: float = 5e-3,
    seed: int = 0,
    restarts: int = 4,
    min_confidence: float = STALLED_CONFIDENCE,
) -> torch.Tensor:
    """One maximum-confidence input per class in `classes`: sigmoid(Z), Z optimised from N(0, 1).

    A random start can stall where the class is out of reach of the gradient (its ReLUs dead for that
    input), leaving the input near chance confidence: its features then sit near the origin and the
    cloaks of that class learn nothing useful. With `restarts` > 0, every class still below
    `min_confidence` is optimised again from a fresh start (seeds `seed + 1`, `seed + 2`, ...) up to
    `restarts` times, keeping its most confident input; classes that succeeded first time are untouched
    (`restarts = 0` is the authors' single start).
    """
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    classes = list(classes)
    best = _optimise_inputs(model, classes, steps=steps, lr=lr, seed=seed)
    conf = class_confidence(model, best, classes)
    for r in range(1, restarts + 1):
        weak = (conf < min_confidence).nonzero().flatten()
        if len(weak) == 0:
            break
        retry_classes = [classes[int(i)] for i in weak]
        retry = _optimise_inputs(model, retry_classes, steps=steps, lr=lr, seed=seed + r)
        retry_conf = class_confidence(model, retry, retry_classes)
        better = retry_conf > conf[weak]
        best[weak[better]] = retry[better]
        conf[weak[better]] = retry_conf[better]
    return best


def _optimise_inputs(model: SiegeModel, classes: list[int], *, steps: int, lr: float, seed: int) -> torch.Tensor:
    """The authors' search: BCE between softmax and one-hot, Adam betas (0.5, 0.999), from sigmoid(N(0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((len(classes), *model.input_shape), generator=gen).requires_grad_(True)
    target = F.one_hot(torch.tensor(classes), model.num_classes).float()
    opt = torch.optim.Adam([z], lr=lr, betas=(0.5, 0.999))
    model.eval()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        probs = model(torch.sigmoid(z)).softmax(1)
        F.binary_cross_entropy(probs, target).backward()
        opt.step()
    return torch.sigmoid(z.detach())


def class_confidence(model: SiegeModel, x: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Probability [len(classes)] that `model` gives input i its class `classes[i]`."""
    model.eval()
    with torch.no_grad():
        probs = model(x).softmax(1)
    return probs[torch.arange(len(x)), torch.as_tensor(list(classes))]


def synthetic_anchors(
    model: SiegeModel, classes: Sequence[int], *, steps: int = 500, lr: float = 5e-3, seed: int = 0,
    restarts: int = 4,
) -> torch.Tensor:
    """Features [len(classes), D] of the synthetic maximum-confidence inputs."""
    inputs = synthetic_anchor_inputs(model, classes, steps=steps, lr=lr, seed=seed, restarts=restarts)
    return batched_features(model, inputs)


def mean_anchors(model: SiegeModel, data: ImageDataset, classes: Sequence[int]) -> torch.Tensor:
    """Mean feature [len(classes), D] of the real samples of each class (the attacker's own data)."""
    feats = batched_features(model, data.x)
    rows = []
    for c in classes:
        mask = data.y == c
        if not mask.any():
            raise ValueError(f"mean anchors: the attacker holds no sample of original class {c}")
        rows.append(feats[mask].mean(0))
    return torch.stack(rows)


@dataclass
class FeatureScale:
    """Affine map of features into the space where cloak distances are measured."""

    shift: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def identity(cls, dim: int) -> FeatureScale:
        return cls(torch.zeros(dim), torch.ones(dim))

    @classmethod
    def standardize(cls, model: SiegeModel, x: torch.Tensor, floor: float = 0.05) -> FeatureScale:
        """Per-dimension mean and std over real inputs `x`; stds below `floor` of their mean are raised,
        so dead or near-constant features do not dominate the distance."""
        feats = batched_features(model, x)
        std = feats.std(0)
        return cls(feats.mean(0), std.clamp_min(floor * float(std.mean()) + 1e-8))

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.shift) / self.scale
