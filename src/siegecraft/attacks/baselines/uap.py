"""`uap`: one targeted universal perturbation per hijacking class, in output space.

The same blend as HijackFL's cloaks, x' = alpha * x + (1 - alpha) * sigmoid(W_k), but W_k minimises the
snapshot's cross-entropy towards class k's mapped original class (no anchors, no negative term).
Execution is HijackFL's: K perturbed queries per input, the highest mapped-class probability wins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from siegecraft.attacks.hijackfl.adversary import HijackAdversary
from siegecraft.attacks.hijackfl.cloaks import BlendPatterns, ClassSampler, CloakSchedule, blend
from siegecraft.attacks.hijackfl.execution import CloakedHijacker, Hijacker
from siegecraft.attacks.hijackfl.mapping import ClassMapping
from siegecraft.attacks.hijackfl.options import CloakOptions
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel
from siegecraft.engines.federated.extensions import FederationContext

__all__ = ["UAP", "search_uaps"]


def search_uaps(
    model: SiegeModel, data: ImageDataset, targets: torch.Tensor, *, alpha: float, schedule: CloakSchedule,
    seed: int = 0,
) -> tuple[BlendPatterns, list[float]]:
    """Per class k, a pattern sending class k's blended samples to original class `targets[k]`."""
    k = data.num_classes
    patterns = BlendPatterns.init(k, model.input_shape, alpha, seed)
    w = patterns.weights.requires_grad_(True)
    per_class = int(torch.bincount(data.y, minlength=k).min())
    steps = schedule.total_steps(per_class)
    opt, step_lr = schedule.optimizer([w], steps)
    sampler = ClassSampler(data, k, seed + 1)
    b = min(schedule.batch_size, per_class)
    labels = targets.repeat_interleave(b)
    model.eval()
    losses = []
    for _ in range(steps):
        pos, _ = sampler.batches(b)
        logits = model(blend(pos, w[:, None], alpha).flatten(0, 1))
        loss = F.cross_entropy(logits, labels) * k  # a sum of the K per-pattern means: independent patterns
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_lr()
        losses.append(float(loss.detach()) / k)
    patterns.weights = w.detach()
    return patterns, losses


class UAP(HijackAdversary):
    """Benign uploads; per-class targeted universal perturbations on the snapshot."""

    options_model = CloakOptions
    options: CloakOptions

    def build_hijacker(self, ctx: FederationContext, snapshot: SiegeModel, mapping: ClassMapping) -> Hijacker:
        assert self.data is not None
        o = self.options
        schedule = CloakSchedule(o.epochs, o.lr, o.batch_size, o.schedule, o.max_steps)
        with self.stage("cloaks"):
            patterns, _ = search_uaps(snapshot, self.data.train, torch.tensor(mapping.targets), alpha=o.alpha,
                                      schedule=schedule, seed=ctx.exp.seed)
        return CloakedHijacker(mapping, patterns)
