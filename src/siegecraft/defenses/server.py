"""How a federated run sets up its server-side defenses from `[defense]`: check, root split, wrap.

`[defense] aggregator` (with the scalar entries of `[defense.options]`) picks the aggregation rule;
`[defense] names` lists strategy wrappers, each configured by its own `[defense.options.<name>]` table.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from siegecraft.defenses import clipping, fltrust  # noqa: F401  (registers the wrappers)
from siegecraft.defenses.aggregators import AGGREGATORS, Aggregator, get_aggregator
from siegecraft.defenses.fltrust import root_size_needed, split_root_dataset
from siegecraft.defenses.wrappers import (
    STRATEGY_DEFENSES,
    DefenseContext,
    split_defense_options,
    wrap_strategy,
    wrapper_options,
)

if TYPE_CHECKING:
    from siegecraft.config import DefenseConfig, Experiment
    from siegecraft.data import ImageDataset
    from siegecraft.federated.strategy import Strategy


def configured_aggregator(defense: DefenseConfig) -> Aggregator:
    """The aggregator with its options bound (wrapper tables are left out of its options)."""
    agg_options, _ = split_defense_options(defense.names, defense.options)
    return get_aggregator(defense.aggregator, **agg_options)


def defend(strategy: Strategy, defense: DefenseConfig, ctx: DefenseContext | None = None) -> Strategy:
    """`strategy` wrapped by the defenses listed in `defense.names` (unchanged when there are none)."""
    if not defense.names:
        return strategy
    _, tables = split_defense_options(defense.names, defense.options)
    return wrap_strategy(strategy, defense.names, tables, ctx)


def server_root_split(train: ImageDataset, exp: Experiment) -> tuple[ImageDataset, ImageDataset | None]:
    """(clients' training set, server root set or None): root samples are withheld from every client."""
    _, tables = split_defense_options(exp.defense.names, exp.defense.options)
    return split_root_dataset(train, root_size_needed(exp.defense.names, tables), seed=exp.seed)


def check_defense_config(exp: Experiment) -> None:
    """Fail before any work on unknown defenses, bad options or impossible combinations (ValueError)."""
    d = exp.defense
    AGGREGATORS.get(d.aggregator)
    if len(set(d.names)) != len(d.names):
        raise ValueError(f"defense.names repeat a defense: {d.names}")
    for name in d.names:
        STRATEGY_DEFENSES.get(name)
    agg_options, tables = split_defense_options(d.names, d.options)
    nested = [k for k, v in agg_options.items() if isinstance(v, dict)]
    if nested:
        raise ValueError(
            f"defense.options.{nested[0]} is a table but {nested[0]!r} is not in defense.names {d.names}"
        )
    _check_aggregator_options(d.aggregator, agg_options)
    for name, table in tables.items():
        wrapper_options(name, table)
    if d.names and exp.secure.aggregation == "zero-sum":
        raise ValueError(
            f"defense.names={d.names} screen individual client updates, but secure.aggregation='zero-sum' "
            "reveals only their sum; use secure.aggregation='plain' or drop the server-side defenses"
        )


def _check_aggregator_options(name: str, options: dict[str, object]) -> None:
    """A misspelt aggregator option fails now, not at the first aggregation mid-run."""
    params = inspect.signature(AGGREGATORS.get(name)).parameters.values()
    allowed = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        keys = ", ".join(allowed) or "(none)"
        raise ValueError(f"defense.options.{unknown[0]}: not an option of aggregator {name!r}; allowed: {keys}")
