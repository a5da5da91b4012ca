"""Cloaks: one learnable pattern per hijacking class, blended into the input.

x' = alpha * x + (1 - alpha) * sigmoid(W_k): a convex blend, so cloaked pixels stay in [0, 1] and alpha
is the whole budget (no epsilon ball). HijackFL trains W_k in feature space:
  || Phi(x'_k) - anchor[map(k)] ||_2 + beta * || Phi(x'_other) - anchor[negative] ||_2,
where x'_other are the other hijacking classes' samples under cloak k. The negative term is what makes a
cloak class-selective. All K cloaks are optimised in one batched forward pass per step.

Execution asks which cloak brings an input closest to its mapped class, a K-way decision, while the loss
above trains K independent yes/no cloaks. `contrast` > 0 adds a term for the K-way decision, still in
feature space: every cloak is applied to every sample of a class-balanced batch, and for a sample of
class j the distances d_k = || Phi(x'_k) - anchor[map(k)] || over the K cloaks are scored as logits
-d_k / tau with cross-entropy to j (so cloak j must bring the sample closer to its anchor than any other
cloak brings it to theirs). `contrast = 0` is the authors' loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from siegecraft.attacks.hijackfl.anchors import FeatureScale
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel

__all__ = ["BlendPatterns", "ClassSampler", "CloakSchedule", "CloakView", "blend", "cloak_loss", "search_cloaks"]


@dataclass
class BlendPatterns:
    """K patterns W [K, C, H, W] and the blend weight alpha of the raw input."""

    weights: torch.Tensor
    alpha: float

    @classmethod
    def init(cls, k: int, input_shape: tuple[int, int, int], alpha: float, seed: int) -> BlendPatterns:
        gen = torch.Generator().manual_seed(seed)
        return cls(torch.randn((k, *input_shape), generator=gen) * 0.1, alpha)

    def __len__(self) -> int:
        return self.weights.shape[0]

    def images(self) -> torch.Tensor:
        """The patterns as images in [0, 1]: sigmoid(W)."""
        return torch.sigmoid(self.weights)

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """`x` blended with pattern `k`."""
        return blend(x, self.weights[k], self.alpha)


def blend(x: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * x + (1.0 - alpha) * torch.sigmoid(w)


@dataclass
class CloakSchedule:
    """Adam with an optional cosine decay; an epoch is one pass over a class's samples."""

    epochs: int = 100
    lr: float = 5e-3
    batch_size: int = 64
    schedule: str = "constant"
    max_steps: int | None = None

    def total_steps(self, per_class: int, per_step: int | None = None) -> int:
        """Steps for `epochs` passes over `per_class` samples, `per_step` (default batch_size) per step."""
        steps = self.epochs * max(1, math.ceil(per_class / (per_step or self.batch_size)))
        return min(steps, self.max_steps) if self.max_steps is not None else steps

    def optimizer(self, params: list[torch.Tensor], steps: int) -> tuple[torch.optim.Optimizer, Callable[[], None]]:
        opt = torch.optim.Adam(params, lr=self.lr)
        if self.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
            return opt, sched.step
        return opt, lambda: None


class ClassSampler:
    """Per class c < k: random batches of c's samples and of the other classes' samples, or balanced
    batches of every class."""

    def __init__(self, data: ImageDataset, k: int, seed: int) -> None:
        self.x = data.x
        self.own = [(data.y == c).nonzero().flatten() for c in range(k)]
        self.other = [(data.y != c).nonzero().flatten() for c in range(k)]
        self.gen = torch.Generator().manual_seed(seed)

    def _pick(self, pool: torch.Tensor, n: int) -> torch.Tensor:
        return self.x[pool[torch.randint(len(pool), (n,), generator=self.gen)]]

    def batches(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positives and negatives, [k, n, C, H, W] each."""
        pos = torch.stack([self._pick(p, n) for p in self.own])
        neg = torch.stack([self._pick(p, n) for p in self.other])
        return pos, neg

    def shifted(self, x: torch.Tensor, s: int) -> torch.Tensor:
        """Each image of `x` translated by its own random offset of up to `s` pixels (zero fill)."""
        if s <= 0:
            return x
        h, w = x.shape[-2:]
        padded = F.pad(x, (s, s, s, s))
        dy, dx = torch.randint(0, 2 * s + 1, (2, len(x)), generator=self.gen).tolist()
        return torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(zip(dy, dx))])

    def noisy(self, x: torch.Tensor, std: float) -> torch.Tensor:
        """`x` plus N(0, std^2) per pixel, clamped to [0, 1] (unchanged when `std` is 0)."""
        if std <= 0:
            return x
        return (x + std * torch.randn(x.shape, generator=self.gen)).clamp(0.0, 1.0)

    def balanced(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`m` random samples of each class, [k * m, C, H, W] grouped by class, and their labels [k * m]."""
        labels = torch.arange(len(self.own)).repeat_interleave(m)
        return torch.cat([self._pick(p, m) for p in self.own]), labels


@dataclass
class CloakView:
    """One model the cloaks are fitted to, with its anchors (already in the space of `scale`)."""

    model: SiegeModel
    targets: torch.Tensor
    negative: torch.Tensor
    scale: FeatureScale


def cloak_loss(
    dist: torch.Tensor, dist_neg: torch.Tensor, labels: torch.Tensor, *, beta: float, contrast: float, tau: float
) -> torch.Tensor:
    """HijackFL's loss on a batch where every cloak saw every sample.

    `dist[k, i]` is the distance of sample i under cloak k to cloak k's target anchor, `dist_neg[k, i]` to
    the negative anchor. Per cloak: mean pull over its own class + beta * mean push over the others,
    summed over cloaks; plus `contrast` * K * cross-entropy of the K-way decision (logits -dist / tau).
    """
    k = dist.shape[0]
    own = labels[None, :] == torch.arange(k)[:, None]  # [K, B]
    pull = (dist * own).sum(1) / own.sum(1)
    push = (dist_neg * ~own).sum(1) / (~own).sum(1).clamp_min(1)
    value = (pull + beta * push).sum()
    if contrast > 0:
        value = value + contrast * k * F.cross_entropy(-dist.T / tau, labels)
    return value


def search_cloaks(
    model: SiegeModel,
    data: ImageDataset,
    targets: torch.Tensor,
    negative: torch.Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 1.0,
    contrast: float = 0.0,
    tau: float = 1.0,
    schedule: CloakSchedule | None = None,
    scale: FeatureScale | None = None,
    shift: int = 0,
    noise: float = 0.0,
    extra_views: Sequence[CloakView] = (),
    seed: int = 0,
) -> tuple[BlendPatterns, list[float]]:
    """HijackFL's cloak search on the snapshot `model`; returns the cloaks and the loss per step.

    `targets` [K, D] are the anchors of each hijacking class's mapped class, `negative` [D] the negative
    anchor; both are already in the (optionally standardised) space of `scale`. Each step draws
    round(batch_size / K) samples of every class and applies every cloak to all of them, so each cloak
    sees about `batch_size` cloaked images per step (its own class and all the others). `shift` > 0
    translates every drawn sample by up to that many pixels first, so a cloak cannot fit the exact
    positions of a few hundred digits; `noise` > 0 adds Gaussian noise of that std to every drawn sample
    (clamped to [0, 1]) for the same reason. `extra_views` are further models (with their own anchors) the
    same cloaks must work on; the loss is the mean over the snapshot and them.
    """
    schedule = schedule or CloakSchedule()
    k = data.num_classes
    scale = scale or FeatureScale.identity(targets.shape[1])
    cloaks = BlendPatterns.init(k, model.input_shape, alpha, seed)
    w = cloaks.weights.requires_grad_(True)
    per_class = int(torch.bincount(data.y, minlength=k).min())
    m = max(1, min(round(schedule.batch_size / k), per_class))
    steps = schedule.total_steps(per_class, m)
    opt, step_lr = schedule.optimizer([w], steps)
    sampler = ClassSampler(data, k, seed + 1)
    views = [CloakView(model, targets, negative, scale), *extra_views]
    for view in views:
        view.model.eval()
    losses = []
    for _ in range(steps):
        x, labels = sampler.balanced(m)
        x = sampler.noisy(sampler.shifted(x, shift), noise)
        cloaked = blend(x[None], w[:, None], alpha).flatten(0, 1)  # [K * B, C, H, W]: cloak k, sample i
        value = torch.zeros(())
        for view in views:
            feats = view.scale(view.model.features(cloaked)).view(k, len(x), -1)
            dist = (feats - view.targets[:, None]).norm(dim=-1)
            dist_neg = (feats - view.negative).norm(dim=-1)
            value = value + cloak_loss(dist, dist_neg, labels, beta=beta, contrast=contrast, tau=tau)
        value = value / len(views)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        step_lr()
        losses.append(float(value.detach()) / k)
    cloaks.weights = w.detach()
    return cloaks, losses
