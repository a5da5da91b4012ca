"""The federated engine's secure-aggregation contract: how a round can be aggregated without the server
seeing individual updates.

A secure aggregation is a `SecureAggregation` subclass registered with `@SECURE_AGGREGATIONS.register("name")`;
`[secure] aggregation` picks it, and its `open(exp, partitions)` returns a `SecureRound`. `plain` (the
engine's own) opens nothing: the engine trains the clients itself and aggregates their individual updates.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from siegecraft.core.registry import Registry


class SecureRound(Protocol):
    """A running secure-aggregation deployment, driven one round at a time by the engine."""

    def round(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> tuple[torch.Tensor | None,
                                                                                          dict[str, Any]]:
        """(mean update, or None when the round was aborted; the round's metrics)."""
        ...

    def close(self) -> None:
        """Tear the deployment down (called once, also after a failure)."""
        ...


class SecureAggregation:
    """A registered secure aggregation: what it reveals, its config checks, and how to open a deployment."""

    #: True when the server learns only the sum of the updates (robust aggregators then cannot run)
    sum_only: ClassVar[bool] = False

    @classmethod
    def check(cls, secure: Any) -> None:
        """Raise FieldError (path inside `[secure]`) on settings this aggregation cannot use."""
        del secure

    @classmethod
    def open(cls, exp: Any, partitions: list[np.ndarray]) -> SecureRound | None:
        """Start the deployment for `exp`; None means the engine aggregates individual updates itself."""
        del exp, partitions
        return None


SECURE_AGGREGATIONS: Registry[type[SecureAggregation]] = Registry("secure aggregation")


@SECURE_AGGREGATIONS.register("plain")
class PlainAggregation(SecureAggregation):
    """No secure aggregation: the engine aggregates the individual updates itself."""
