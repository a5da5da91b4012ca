"""`reprogram`: adversarial reprogramming, one program for every hijacking class.

x' = alpha * x + (1 - alpha) * sigmoid(W) with a single W trained by cross-entropy on the mapped labels
of all hijacking samples; one query per input, decoded by the most probable mapped class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from siegecraft.attacks.hijackfl.adversary import HijackAdversary
from siegecraft.attacks.hijackfl.cloaks import BlendPatterns, ClassSampler, CloakSchedule, blend
from siegecraft.attacks.hijackfl.execution import Hijacker, ProgramHijacker
from siegecraft.attacks.hijackfl.mapping import ClassMapping
from siegecraft.attacks.hijackfl.options import CloakOptions
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel
from siegecraft.engines.federated.extensions import FederationContext

__all__ = ["Reprogram", "search_program"]


def search_program(
    model: SiegeModel, data: ImageDataset, targets: torch.Tensor, *, alpha: float, schedule: CloakSchedule,
    seed: int = 0,
) -> tuple[BlendPatterns, list[float]]:
    """One pattern making the snapshot answer class k's blended samples with `targets[k]`, for all k.

    Each step sees one class-balanced batch (`batch_size` samples of every class), as the cloak search does.
    """
    k = data.num_classes
    program = BlendPatterns.init(1, model.input_shape, alpha, seed)
    w = program.weights.requires_grad_(True)
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
        loss = F.cross_entropy(model(blend(pos.flatten(0, 1), w[0], alpha)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_lr()
        losses.append(float(loss.detach()))
    program.weights = w.detach()
    return program, losses


class Reprogram(HijackAdversary):
    """Benign uploads; one adversarial program learnt on the snapshot."""

    options_model = CloakOptions
    options: CloakOptions

    def build_hijacker(self, ctx: FederationContext, snapshot: SiegeModel, mapping: ClassMapping) -> Hijacker:
        assert self.data is not None
        o = self.options
        schedule = CloakSchedule(o.epochs, o.lr, o.batch_size, o.schedule, o.max_steps)
        with self.stage("cloaks"):
            program, _ = search_program(snapshot, self.data.train, torch.tensor(mapping.targets), alpha=o.alpha,
                                        schedule=schedule, seed=ctx.exp.seed)
        return ProgramHijacker(mapping, program)
