"""An in-memory labelled image set: the one dataset type every topology, model and attack consumes.

Every method returns a new `ImageDataset` and never modifies tensors in place, so datasets may share
tensor storage safely (loaders rely on this; callers should not write into `x`/`y` in place either).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights: the usual RGB -> grey conversion; they sum to 1 so [0, 1] stays [0, 1].
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_RESIZE_CHUNK = 8192  # images resized per interpolate call, to bound peak memory on 60k-image sets


def _as_index(idx: Any) -> torch.Tensor:
    """Indices (list, numpy array, tensor, or boolean mask) as an int64 tensor."""
    t = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
    if t.dtype == torch.bool:
        return t.nonzero().flatten()
    if t.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if t.is_floating_point():
        raise TypeError(f"indices must be integers or a boolean mask, got dtype {t.dtype}")
    return t.long().flatten()


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear antialiased resize of [N, C, H, W] to size x size, in chunks written into one output."""
    out = x.new_empty((len(x), x.shape[1], size, size))
    for start in range(0, len(x), _RESIZE_CHUNK):
        chunk = x[start : start + _RESIZE_CHUNK]
        out[start : start + len(chunk)] = F.interpolate(
            chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return out


@dataclass(repr=False)
class ImageDataset:
    """Images `x` (float32 [N, C, H, W], [0, 1] unless normalised) with int64 labels `y` [N]."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str
    classes: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"ImageDataset.x must be [N, C, H, W], got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise ValueError(f"ImageDataset.y must be [N={len(self.x)}], got shape {tuple(self.y.shape)}")
        if self.y.dtype != torch.long:
            self.y = self.y.long()
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"{len(self.classes)} class names given for num_classes={self.num_classes}")

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, shape={self.shape}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image: (C, H, W)."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def _with(self, x: torch.Tensor, y: torch.Tensor, **changes: Any) -> ImageDataset:
        fields = {
            "num_classes": self.num_classes,
            "name": self.name,
            "classes": list(self.classes) if self.classes is not None else None,
        }
        fields.update(changes)
        return ImageDataset(x=x, y=y, **fields)

    def subset(self, idx: Any) -> ImageDataset:
        """The samples at `idx` (list, numpy array, tensor or boolean mask), in that order."""
        index = _as_index(idx)
        return self._with(self.x[index], self.y[index])

    def adapt(self, channels: int, size: int) -> ImageDataset:
        """Convert to `channels` (1 <-> 3) and resize to `size` x `size` (bilinear, antialiased).

        Grey -> RGB repeats the channel; RGB -> grey takes BT.601 luma. Both are convex combinations,
        and the result is clamped to the input's value range, so [0, 1] pixels stay in [0, 1].
        """
        c, h, w = self.shape
        if channels != c and (c, channels) not in ((1, 3), (3, 1)):
            raise ValueError(f"adapt: can convert 1 <-> 3 channels only, not {c} -> {channels}")
        if size < 1:
            raise ValueError(f"adapt: size must be >= 1, got {size}")
        x = self.x
        if len(x) == 0:
            return self._with(x.new_zeros((0, channels, size, size)), self.y)
        lo, hi = float(x.min()), float(x.max())
        if (c, channels) == (3, 1):
            weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * weights).sum(dim=1, keepdim=True)
        if (h, w) != (size, size):
            x = _resize(x, size)
        if x is not self.x:  # a fresh tensor: clamp away float rounding in place
            x.clamp_(lo, hi)
        if (c, channels) == (1, 3):  # repeat last, so the work above runs on one channel
            x = x.expand(-1, 3, -1, -1).contiguous()
        return self._with(x, self.y)

    def normalize(self, mean: Sequence[float], std: Sequence[float]) -> ImageDataset:
        """Per-channel `(x - mean) / std`; one value broadcasts to every channel."""
        c = self.shape[0]
        if len(mean) not in (1, c) or len(std) not in (1, c):
            raise ValueError(f"normalize: need 1 or {c} values, got mean={list(mean)} std={list(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"normalize: std must be > 0, got {list(std)}")
        m = torch.tensor(list(mean), dtype=self.x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=self.x.dtype).view(1, -1, 1, 1)
        return self._with((self.x - m) / s, self.y)

    def take_per_class(self, n: int, seed: int) -> ImageDataset:
        """Up to `n` random samples of each class, chosen by `seed`, kept in dataset order."""
        if n < 0:
            raise ValueError(f"take_per_class: n must be >= 0, got {n}")
        rng = np.random.default_rng(seed)
        labels = self.y.numpy()
        chosen = [rng.permutation(np.flatnonzero(labels == k))[:n] for k in range(self.num_classes)]
        return self.subset(np.sort(np.concatenate(chosen)))

    def filter_classes(self, classes: Sequence[int], relabel: bool = True) -> ImageDataset:
        """Keep only samples of `classes`; with `relabel`, class `classes[i]` becomes label i."""
        wanted = [int(k) for k in classes]
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"filter_classes: duplicate classes in {wanted}")
        bad = [k for k in wanted if not 0 <= k < self.num_classes]
        if bad:
            raise ValueError(f"filter_classes: classes {bad} outside 0..{self.num_classes - 1}")
        keep = torch.isin(self.y, torch.tensor(wanted, dtype=torch.long))
        kept = self.subset(keep)
        if not relabel:
            return kept
        mapping = torch.full((self.num_classes,), -1, dtype=torch.long)
        mapping[torch.tensor(wanted, dtype=torch.long)] = torch.arange(len(wanted))
        names = [self.classes[k] for k in wanted] if self.classes is not None else None
        return kept._with(kept.x, mapping[kept.y], num_classes=len(wanted), classes=names)
