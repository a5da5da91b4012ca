"""Feature squeezing (Xu et al., NDSS 2018): inference-time detection of crafted inputs.

A benign input gives nearly the same softmax before and after it is "squeezed" (fewer colour bits,
median smoothing); a crafted (adversarial, cloaked, reprogrammed) input relies on fine pixel detail and
moves. The score of an input is the largest L1 distance between the raw softmax and each squeezed one.
Inputs are images in [0, 1] pixel space, [B, C, H, W]. The two squeezers double as preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siegecraft.core.registry import Registry

Squeezer = Callable[[Tensor], Tensor]
_SCORE_CHUNK = 1024  # inputs scored per forward pass, to bound memory on large sets


def reduce_bit_depth(x: Tensor, bits: int) -> Tensor:
    """Quantise [0, 1] pixels to `bits` bits per channel (2**bits levels), keeping the [0, 1] scale."""
    if not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"reduce_bit_depth: bits must be an int in [1, 16], got {bits!r}")
    levels = 2**bits - 1
    return torch.round(x.clamp(0.0, 1.0) * levels) / levels


def median_smooth(x: Tensor, k: int) -> Tensor:
    """Per-channel k x k median filter of [B, C, H, W] images, edge-replicated so the size is kept.

    For an even k the window reaches one pixel further right/down than left/up, and the upper of the
    two middle values is taken (the convention of scipy.ndimage.median_filter used by the paper).
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"median_smooth: kernel size k must be an int >= 1, got {k!r}")
    if x.ndim != 4:
        raise ValueError(f"median_smooth: expected [B, C, H, W] images, got shape {tuple(x.shape)}")
    if k == 1:
        return x.clone()
    before, after = (k - 1) // 2, k // 2
    padded = F.pad(x, (before, after, before, after), mode="replicate")
    windows = padded.unfold(2, k, 1).unfold(3, k, 1)  # [B, C, H, W, k, k]
    flat = windows.reshape(*x.shape, k * k)
    return flat.sort(dim=-1).values[..., (k * k) // 2]


class FeatureSqueezer:
    """Detector scoring inputs by how much squeezing changes the model's softmax.

    `bit_depth` (bits kept, 0 disables) and `median_kernel` (window size, 0 disables) choose the
    squeezers; at least one must be on. Use `fit_threshold` on clean inputs, then `detect`.
    """

    def __init__(self, bit_depth: int = 4, median_kernel: int = 2) -> None:
        squeezers: dict[str, Squeezer] = {}
        if bit_depth:
            reduce_bit_depth(torch.zeros(1), bit_depth)  # validates bit_depth early
            squeezers[f"bit_depth_{bit_depth}"] = lambda x: reduce_bit_depth(x, bit_depth)
        if median_kernel:
            if not isinstance(median_kernel, int) or median_kernel < 1:
                raise ValueError(f"FeatureSqueezer: median_kernel must be an int >= 0, got {median_kernel!r}")
            squeezers[f"median_{median_kernel}x{median_kernel}"] = lambda x: median_smooth(x, median_kernel)
        if not squeezers:
            raise ValueError("FeatureSqueezer: enable at least one squeezer (bit_depth > 0 or median_kernel > 0)")
        self.bit_depth = bit_depth
        self.median_kernel = median_kernel
        self.squeezers = squeezers

    def __repr__(self) -> str:
        return f"FeatureSqueezer(bit_depth={self.bit_depth}, median_kernel={self.median_kernel})"

    @torch.no_grad()
    def scores(self, model: nn.Module, x: Tensor) -> Tensor:
        """Score per input [B]: max over squeezers of ||softmax(model(x)) - softmax(model(squeeze(x)))||_1."""
        if x.ndim != 4:
            raise ValueError(f"FeatureSqueezer.scores: expected [B, C, H, W] images, got shape {tuple(x.shape)}")
        was_training = model.training
        model.eval()
        try:
            parts = [self._score_chunk(model, x[i : i + _SCORE_CHUNK]) for i in range(0, len(x), _SCORE_CHUNK)]
        finally:
            model.train(was_training)
        return torch.cat(parts) if parts else torch.zeros(0)

    def _score_chunk(self, model: nn.Module, x: Tensor) -> Tensor:
        raw = F.softmax(model(x), dim=1)
        dists = [(raw - F.softmax(model(squeeze(x)), dim=1)).abs().sum(1) for squeeze in self.squeezers.values()]
        return torch.stack(dists).amax(0).float().cpu()

    def fit_threshold(self, model: nn.Module, clean_x: Tensor, fpr: float = 0.05) -> float:
        """The (1 - fpr) quantile of clean scores: at most `fpr` of clean inputs score above it."""
        if not 0.0 <= fpr < 1.0:
            raise ValueError(f"fit_threshold: fpr must be in [0, 1), got {fpr}")
        if len(clean_x) == 0:
            raise ValueError("fit_threshold: need at least one clean input")
        return float(torch.quantile(self.scores(model, clean_x), 1.0 - fpr, interpolation="higher"))

    def detect(self, model: nn.Module, x: Tensor, threshold: float) -> Tensor:
        """Boolean flag per input [B]: True where the score exceeds `threshold` (judged crafted)."""
        return self.scores(model, x) > threshold


def squeeze_inputs(x: Tensor, *, bit_depth: int = 0, median_kernel: int = 0) -> Tensor:
    """Preprocessing defense: apply bit-depth reduction then median smoothing (0 skips a step)."""
    out = reduce_bit_depth(x, bit_depth) if bit_depth else x
    return median_smooth(out, median_kernel) if median_kernel else out


INPUT_DEFENSES: Registry[object] = Registry("input defense")
INPUT_DEFENSES.register("feature_squeezing")(FeatureSqueezer)
INPUT_DEFENSES.register("bit_depth")(reduce_bit_depth)
INPUT_DEFENSES.register("median_smoothing")(median_smooth)
