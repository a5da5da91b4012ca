"""How a federated run builds its server-side defenses from a validated `[defense]`: aggregator, root split, wrap.

`[defense] aggregator` (with the scalar entries of `[defense.options]`) picks the aggregation rule;
`[defense] names` lists strategy wrappers, each configured by its own `[defense.options.<name>]` table.
The checks live in `config.DefenseConfig`, so a mistake fails before any work.
"""

from __future__ import annotations

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.engines.federated.aggregation import Aggregator, get_aggregator
from siegecraft.engines.federated.config import DefenseConfig, FederatedExperiment
from siegecraft.engines.federated.strategy import Strategy
from siegecraft.engines.federated.wrappers import (
    DefenseContext,
    root_size_needed,
    split_defense_options,
    split_root_dataset,
    wrap_strategy,
)


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


def server_root_split(train: ImageDataset, exp: FederatedExperiment) -> tuple[ImageDataset, ImageDataset | None]:
    """(clients' training set, server root set or None): root samples are withheld from every client."""
    _, tables = split_defense_options(exp.defense.names, exp.defense.options)
    return split_root_dataset(train, root_size_needed(exp.defense.names, tables), seed=exp.seed)
