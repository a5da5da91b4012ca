"""The `SiegeModel` contract shared by every zoo model, and flat-vector weight transport.

Every model is a feature extractor plus a linear head; attacks (HijackFL, UAPs) hook the penultimate
features, and the federated engine moves weights as one flat float32 vector.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


def check_int(owner: str, key: str, value: Any, minimum: int) -> int:
    """Return `value` as an int if it is an integer >= minimum, else raise ValueError naming owner and key."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {key} must be an int >= {minimum}, got {value!r}")
    return int(value)


class SiegeModel(nn.Module):
    """Base class: `forward(x) == classifier(features(x))`; subclasses build `features` and `self.head`.

    `features` returns the penultimate representation [B, feature_dim] (globally pooled for conv nets);
    `classifier` maps it to logits [B, num_classes] through the linear `self.head`.
    """

    min_image_size: ClassVar[int] = 8
    feature_dim: int
    num_classes: int
    in_channels: int
    image_size: int
    head: nn.Module

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, feature_dim: int) -> None:
        super().__init__()
        owner = type(self).__name__
        self.in_channels = check_int(owner, "in_channels", in_channels, 1)
        self.num_classes = check_int(owner, "num_classes", num_classes, 1)
        self.image_size = check_int(owner, "image_size", image_size, self.min_image_size)
        self.feature_dim = check_int(owner, "feature_dim", feature_dim, 1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image, e.g. for building probes, triggers or reprogramming masks."""
        return (self.in_channels, self.image_size, self.image_size)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate representation [B, feature_dim]."""
        raise NotImplementedError

    def classifier(self, f: Tensor) -> Tensor:
        """Logits [B, num_classes] from features [B, feature_dim]."""
        return self.head(f)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, num_classes]; always `classifier(features(x))`, so feature hooks see every call."""
        return self.classifier(self.features(x))


def _flat_tensors(model: nn.Module) -> list[Tensor]:
    """Parameters and floating buffers in state_dict order; integer buffers (BN counters) are skipped."""
    return [t for t in model.state_dict(keep_vars=True).values() if t.is_floating_point()]


def num_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Length of `flat_params(model)` (parameters + float buffers), or only trainable parameters."""
    if trainable_only:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    return sum(t.numel() for t in _flat_tensors(model))


@torch.no_grad()
def flat_params(model: nn.Module) -> Tensor:
    """A 1-D float32 copy of all parameters and floating buffers, in state_dict order."""
    tensors = _flat_tensors(model)
    if not tensors:
        return torch.zeros(0, dtype=torch.float32)
    return torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])


@torch.no_grad()
def load_flat_params(model: nn.Module, flat: Tensor) -> None:
    """Write a vector produced by `flat_params` back into `model`, in place (inverse of flat_params)."""
    tensors = _flat_tensors(model)
    expected = sum(t.numel() for t in tensors)
    if flat.dim() != 1 or flat.numel() != expected:
        raise ValueError(f"flat vector has shape {tuple(flat.shape)}; this model needs ({expected},)")
    chunks = torch.split(flat.detach(), [t.numel() for t in tensors])
    for tensor, chunk in zip(tensors, chunks):
        tensor.detach().copy_(chunk.reshape(tensor.shape))
