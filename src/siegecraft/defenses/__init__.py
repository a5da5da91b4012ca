"""Defenses: add-ons that implement the engines' defense contracts.

Importing this package registers every built-in defense: robust aggregators (median, trimmed_mean,
krum, multi_krum, geomedian) and strategy wrappers (norm_clip, adaptive_norm_clip, fltrust) in the
federated engine, asynchronous defenses in the Hogwild engine, and inference-time input defenses.
`defense_catalog()` lists them all with where each acts.
"""

from siegecraft.defenses import aggregators, async_defenses, clipping, fltrust, input_squeezing  # noqa: F401
from siegecraft.defenses.catalog import defense_catalog

__all__ = ["defense_catalog"]
