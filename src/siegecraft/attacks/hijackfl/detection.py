"""Feature-squeezing detection of the attack's queries, at a threshold fixed on clean inputs.

The defender picks the threshold so that at most `fpr` of clean original-task inputs are flagged; we
report that rate measured on held-out clean inputs and the rate at which the attack's queries are flagged.
"""

from __future__ import annotations

import torch

from siegecraft.core.models import SiegeModel
from siegecraft.defenses.input_squeezing import FeatureSqueezer

__all__ = ["squeeze_detection"]


def squeeze_detection(
    model: SiegeModel,
    clean_x: torch.Tensor,
    queries: torch.Tensor,
    *,
    bit_depth: int = 4,
    median_kernel: int = 2,
    fpr: float = 0.05,
) -> dict[str, float]:
    """Fit the threshold on half of `clean_x`, measure false positives on the other half, and detection
    on `queries` [Q, B, C, H, W]: per query, and per input (flagged when any of its Q queries is)."""
    squeezer = FeatureSqueezer(bit_depth=bit_depth, median_kernel=median_kernel)
    half = len(clean_x) // 2
    threshold = squeezer.fit_threshold(model, clean_x[:half], fpr=fpr)
    held_out = squeezer.detect(model, clean_x[half:], threshold).float()
    flags = squeezer.detect(model, queries.flatten(0, 1), threshold).view(queries.shape[:2])
    return {
        "squeeze_threshold": threshold,
        "squeeze_clean_fpr": float(held_out.mean()),
        "squeeze_detect_rate": float(flags.float().mean()),
        "squeeze_detect_any": float(flags.any(0).float().mean()),
    }
