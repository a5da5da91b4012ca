"""The one local SGD loop and `evaluate()`, shared by every topology.

Federated clients, enclave trainers, serverless workers and benchmarks all call these two
functions, so a change to the training recipe lands everywhere at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from siegecraft.core.data.image_dataset import ImageDataset


def increasing_milestones(milestones: list[float]) -> list[float]:
    """Validate a step schedule: positive and strictly increasing milestones."""
    if any(m <= 0 for m in milestones) or any(b <= a for a, b in itertools.pairwise(milestones)):
        raise ValueError(f"must be positive and strictly increasing, got {milestones}")
    return milestones


def scheduled_lr(lr: float, progress: float, decay: float, milestones: list[float], gamma: float) -> float:
    """lr * decay^progress, times gamma for every milestone <= progress (the `[train]` schedule)."""
    passed = sum(1 for m in milestones if progress >= m)
    if decay != 1.0 and progress > 0:
        lr = lr * decay**progress
    return lr * gamma**passed if passed else lr


class TrainConfig(BaseModel):
    """The one `[train]` section every topology reads: optimiser, batch size, amount of work, schedule.

    `epochs` are local epochs per round (federated) or passes over the data per worker (hogwild) or in
    all (serverless); `steps`, when set, replaces `epochs` (federated). The learning rate follows
    `lr_at(progress)`, where progress counts rounds done (federated) or epochs done (hogwild,
    serverless): lr * lr_decay^progress, times lr_gamma for every milestone already passed.
    """

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(1, ge=1)
    steps: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    lr_decay: float = Field(1.0, gt=0, le=1, description="lr is multiplied by this per round (or epoch)")
    lr_milestones: list[float] = Field(
        default_factory=list, description="progress (rounds or epochs, fractions allowed) where lr *= lr_gamma"
    )
    lr_gamma: float = Field(0.1, gt=0)

    _increasing = field_validator("lr_milestones")(increasing_milestones)

    def lr_at(self, progress: float) -> float:
        """The learning rate after `progress` rounds or epochs."""
        return scheduled_lr(self.lr, progress, self.lr_decay, self.lr_milestones, self.lr_gamma)

    def for_round(self, rnd: int) -> TrainConfig:
        """The settings of federated round `rnd` (1-based): lr at progress rnd - 1, the rest unchanged."""
        lr = self.lr_at(rnd - 1)
        return self if lr == self.lr else self.model_copy(update={"lr": lr})

    def high_lr_until(self) -> float:
        """End of the initial (highest) learning-rate phase, in progress units."""
        return self.lr_milestones[0] if self.lr_milestones else float(self.epochs)


@dataclass
class EvalResult:
    """Accuracy, mean loss, per-class accuracy and how often each label is predicted."""

    accuracy: float
    loss: float
    per_class_accuracy: list[float]
    prediction_rate: list[float]

    def as_dict(self, prefix: str = "") -> dict[str, object]:
        return {
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}loss": self.loss,
            f"{prefix}per_class_accuracy": self.per_class_accuracy,
            f"{prefix}prediction_rate": self.prediction_rate,
        }


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One shuffled epoch of index batches (the last one may be short)."""
    perm = torch.randperm(n, generator=generator)
    return list(perm.split(batch_size))


def local_train(
    model: nn.Module,
    data: ImageDataset,
    cfg: TrainConfig,
    *,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, float]:
    """Train `model` in place with SGD on `data`; returns mean loss, steps and samples seen.

    The batch order depends only on `seed`, so a client's update is reproducible from
    (weights, data, config, seed) alone - which is what lets executors be swapped freely.
    """
    if len(data) == 0:
        raise ValueError(f"cannot train on an empty dataset ({data.name})")
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer or torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    model.train()
    total_loss, steps, samples = 0.0, 0, 0
    budget = cfg.steps
    epochs = cfg.epochs if budget is None else 10**9
    for _ in range(epochs):
        for idx in batch_order(len(data), cfg.batch_size, gen):
            xb, yb = data.x[idx], data.y[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total_loss += loss.detach().item() * len(idx)
            samples += len(idx)
            steps += 1
            if budget is not None and steps >= budget:
                return {"loss": total_loss / samples, "steps": steps, "samples": samples}
    return {"loss": total_loss / max(samples, 1), "steps": steps, "samples": samples}


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Logits for `x` in eval mode, batched to bound memory."""
    model.eval()
    return torch.cat([model(xb) for xb in x.split(batch_size)]) if len(x) else torch.empty(0)


def evaluate(model: nn.Module, data: ImageDataset, *, batch_size: int = 512) -> EvalResult:
    """Accuracy, loss, per-class accuracy and per-label prediction rate of `model` on `data`."""
    logits = predict_logits(model, data.x, batch_size=batch_size)
    k = data.num_classes
    loss = float(F.cross_entropy(logits, data.y)) if len(data) else float("nan")
    pred = logits.argmax(1)
    correct = pred == data.y
    per_class = []
    for c in range(k):
        mask = data.y == c
        per_class.append(float(correct[mask].float().mean()) if mask.any() else float("nan"))
    rate = (torch.bincount(pred, minlength=k).float() / max(len(pred), 1))[:k].tolist()
    return EvalResult(float(correct.float().mean()), loss, per_class, rate)
