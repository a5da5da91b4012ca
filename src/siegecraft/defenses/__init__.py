"""Defenses: robust aggregation, strategy wrappers (clipping, FLTrust), input squeezing, async defenses.

Names load on first use (like `siegecraft.data`), so importing the aggregators from the engine does not
pull the wrappers, which import the engine's strategies, into a cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from siegecraft.defenses.aggregators import AGGREGATORS, get_aggregator
    from siegecraft.defenses.catalog import defense_catalog
    from siegecraft.defenses.clipping import AdaptiveNormClip, NormClip, clip_rows
    from siegecraft.defenses.fltrust import FLTrust, fltrust_aggregate, trust_scores
    from siegecraft.defenses.input_squeezing import (
        INPUT_DEFENSES,
        FeatureSqueezer,
        median_smooth,
        reduce_bit_depth,
        squeeze_inputs,
    )
    from siegecraft.defenses.wrappers import STRATEGY_DEFENSES, DefenseContext, StrategyWrapper, wrap_strategy

_LAZY: dict[str, str] = {
    "AGGREGATORS": "aggregators", "get_aggregator": "aggregators",
    "defense_catalog": "catalog",
    "NormClip": "clipping", "AdaptiveNormClip": "clipping", "clip_rows": "clipping",
    "FLTrust": "fltrust", "fltrust_aggregate": "fltrust", "trust_scores": "fltrust",
    "INPUT_DEFENSES": "input_squeezing", "FeatureSqueezer": "input_squeezing", "median_smooth": "input_squeezing",
    "reduce_bit_depth": "input_squeezing", "squeeze_inputs": "input_squeezing",
    "STRATEGY_DEFENSES": "server", "DefenseContext": "wrappers", "StrategyWrapper": "wrappers",
    "wrap_strategy": "server",
}

__all__ = [
    "AGGREGATORS", "INPUT_DEFENSES", "STRATEGY_DEFENSES", "AdaptiveNormClip", "DefenseContext", "FLTrust",
    "FeatureSqueezer", "NormClip", "StrategyWrapper", "clip_rows", "defense_catalog", "fltrust_aggregate",
    "get_aggregator", "median_smooth", "reduce_bit_depth", "squeeze_inputs", "trust_scores", "wrap_strategy",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'siegecraft.defenses' has no attribute {name!r}")
    return getattr(importlib.import_module(f"siegecraft.defenses.{_LAZY[name]}"), name)
