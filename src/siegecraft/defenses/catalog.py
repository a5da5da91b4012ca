"""One listing of every registered defense, with where it acts: aggregation, strategy, input or async."""

from __future__ import annotations

from siegecraft.defenses.input_squeezing import INPUT_DEFENSES
from siegecraft.engines.federated.aggregation import AGGREGATORS
from siegecraft.engines.federated.wrappers import STRATEGY_DEFENSES
from siegecraft.engines.hogwild.extensions import ASYNC_DEFENSES

KINDS = {
    "aggregator": "[defense] aggregator: robust rule over the stack of client updates",
    "strategy": "[defense] names: wrapper that screens client updates before aggregation (federated)",
    "input": "inference-time input defense (detection or preprocessing)",
    "async": "[defense] names under topology='hogwild': reviews asynchronous updates",
}


def defense_catalog() -> dict[str, str]:
    """name -> kind for every registered defense."""
    out = {n: "aggregator" for n in AGGREGATORS.names()}
    out.update({n: "strategy" for n in STRATEGY_DEFENSES.names()})
    out.update({n: "input" for n in INPUT_DEFENSES.names()})
    out.update({n: "async" for n in ASYNC_DEFENSES.names()})
    return out
