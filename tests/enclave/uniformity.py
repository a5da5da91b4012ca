"""Uniformity statistics shared by the Citadel tests (a masked vector must look like random bytes)."""

from __future__ import annotations

import numpy as np
from scipy import stats

# The masks come from the OS generator, so uniformity tests are random: with this threshold a
# correct implementation fails about once in a million runs, while an unmasked encoding scores
# p-values many orders of magnitude smaller.
UNIFORM_ALPHA = 1e-6


def byte_uniformity_p(values: np.ndarray) -> float:
    """Chi-square p-value of the byte histogram of `values` against the uniform distribution."""
    counts = np.bincount(np.ascontiguousarray(values).view(np.uint8), minlength=256)
    return float(stats.chisquare(counts).pvalue)


def ks_uniform_p(values: np.ndarray, bits: int) -> float:
    """Kolmogorov-Smirnov p-value of the integers in `values` scaled to [0, 1) against U(0, 1)."""
    return float(stats.kstest(values.astype(np.float64) / 2.0**bits, "uniform").pvalue)
