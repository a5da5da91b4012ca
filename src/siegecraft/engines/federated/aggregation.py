"""How the federated engine combines a stack of client updates: the `Aggregator` contract and its registry.

An aggregator is `fn(updates [n_clients, n_params], weights [n_clients], **options) -> update`, added with
`@AGGREGATORS.register("name")`; `[defense] aggregator` picks it. An aggregator that is a weighted sum
of the updates can run on what a zero-sum secure aggregation reveals (only the sum); mark it with
`linear = True`. Every other aggregator needs the individual updates, so it is refused with
`secure.aggregation = "zero_sum"` rather than silently replaced by the mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from siegecraft.core.registry import Registry

Aggregator = Callable[..., torch.Tensor]
AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


def check_stack(updates: torch.Tensor, weights: torch.Tensor) -> None:
    if updates.ndim != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty [n_clients, n_params] tensor, got {tuple(updates.shape)}")
    if weights.shape != (updates.shape[0],):
        raise ValueError(f"weights shape {tuple(weights.shape)} does not match {updates.shape[0]} clients")


@AGGREGATORS.register("mean")
def weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """FedAvg: the sample-weighted mean."""
    check_stack(updates, weights)
    w = weights.to(updates.dtype)
    return (w / w.sum()) @ updates


weighted_mean.linear = True  # type: ignore[attr-defined]


def is_linear(aggregator: Aggregator) -> bool:
    """Whether `aggregator` is a weighted sum of the updates (computable from their masked sum)."""
    return bool(getattr(aggregator, "linear", False))


def get_aggregator(name: str, **options: object) -> Aggregator:
    """The named aggregator with its options bound."""
    fn = AGGREGATORS.get(name)
    return (lambda u, w: fn(u, w, **options)) if options else fn
