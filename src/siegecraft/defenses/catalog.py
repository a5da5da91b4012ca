"""One listing of every registered defense, with where it acts: aggregation, strategy, input or async."""

from __future__ import annotations

import importlib

from siegecraft.defenses.aggregators import AGGREGATORS
from siegecraft.defenses.input_squeezing import INPUT_DEFENSES
from siegecraft.defenses.server import STRATEGY_DEFENSES

KINDS = {
    "aggregator": "[defense] aggregator: robust rule over the stack of client updates",
    "strategy": "[defense] names: wrapper that screens client updates before aggregation (federated)",
    "input": "inference-time input defense (detection or preprocessing)",
    "async": "[defense] names under topology='hogwild': reviews asynchronous updates",
}


def defense_catalog() -> dict[str, str]:
    """name -> kind for every defense (async ones appear once their module imports)."""
    out = {n: "aggregator" for n in AGGREGATORS.names()}
    out.update({n: "strategy" for n in STRATEGY_DEFENSES.names()})
    out.update({n: "input" for n in INPUT_DEFENSES.names()})
    try:  # owned by the Hogwild engine and imported lazily: it pulls the hogwild package in (first,
        # since async_defenses imported on its own meets hogwild's import cycle half-way)
        importlib.import_module("siegecraft.hogwild")
        async_defenses = importlib.import_module("siegecraft.defenses.async_defenses")
    except ModuleNotFoundError:
        return out
    out.update({n: "async" for n in async_defenses.ASYNC_DEFENSES.names()})
    return out
