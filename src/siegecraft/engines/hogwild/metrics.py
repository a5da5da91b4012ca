"""Evaluation of the shared model during a run: accuracy, per-label prediction rate, margin to the target.

The confidence margin to the target label is the mean over validation samples of
max_{j != t} p_j - p_t: it shrinks (and turns negative) as the model is pushed towards predicting t.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.training import predict_logits


def label_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, target: int) -> dict[str, Any]:
    """Accuracy, loss, prediction rate of every label, and the target label's rate and margin."""
    n = max(len(labels), 1)
    pred = logits.argmax(1)
    probs = F.softmax(logits, dim=1)
    others = probs.clone()
    others[:, target] = -1.0
    margin = others.max(1).values - probs[:, target]
    rate = (torch.bincount(pred, minlength=num_classes).float() / n)[:num_classes]
    return {
        "accuracy": float((pred == labels).float().mean()),
        "loss": float(F.cross_entropy(logits, labels)),
        "prediction_rate": [round(float(v), 6) for v in rate],
        "target_rate": float(rate[target]),
        "target_margin": float(margin.mean()),
    }


class SnapshotEvaluator:
    """Copies the shared parameters into a private model and evaluates that copy (thread-safe)."""

    def __init__(self, shared_model: nn.Module, data: ImageDataset, target: int, batch_size: int = 512) -> None:
        self.shared = shared_model
        self.model = copy.deepcopy(shared_model)
        for t in list(self.model.parameters()) + list(self.model.buffers()):
            t.data = t.data.clone()  # private memory, not the shared segment
        self.data, self.target, self.batch_size = data, target, batch_size
        self._lock = threading.Lock()

    @torch.no_grad()
    def snapshot(self) -> None:
        self.model.load_state_dict(self.shared.state_dict())

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            self.snapshot()
            logits = predict_logits(self.model, self.data.x, batch_size=self.batch_size)
            return label_metrics(logits, self.data.y, self.data.num_classes, self.target)
