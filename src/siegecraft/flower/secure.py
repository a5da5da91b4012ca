"""A registered secure aggregation (Citadel's `zero_sum`) as the aggregation step of a Flower strategy.

Under zero-sum aggregation the server never sees an individual update: each sampled client's training
runs in its own training enclave (a separate process holding that data owner's partition), the enclaves
mask their updates so the masks cancel in the total, and only the mean update reaches the server, as in
siegecraft's own engine. On Flower the enclave roles stay as they are: Flower samples the round's clients
and carries the model; the sampled clients are told (`siegecraft_skip`) that their enclave trains for
them, and the strategy's aggregation step runs the Citadel round for exactly those clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.common import Scalar

from siegecraft.engines.federated.secure import SecureRound
from siegecraft.engines.federated.strategy import Strategy
from siegecraft.flower.arrays import NDArrays, arrays_of, flat_of
from siegecraft.flower.strategy import SiegecraftStrategy

SKIP_KEY = "siegecraft_skip"


class ZeroSumStrategy(SiegecraftStrategy):
    """A SiegecraftStrategy whose aggregation is a secure round (`SecureRound.round`), not the clients' uploads.

    `secure` is an open deployment, e.g. `ZeroSumAggregation.open(exp, partitions)`; the strategy does not
    close it (its owner does, after the run). The server rule (`rule.apply`) moves the global model by the
    revealed mean update; an aborted round leaves it unchanged.
    """

    def __init__(self, rule: Strategy, secure: SecureRound, **kwargs: Any) -> None:
        super().__init__(rule, **kwargs)
        self.secure = secure

    def _fit_config(self, rnd: int) -> dict[str, Scalar]:
        return {**super()._fit_config(rnd), SKIP_KEY: True}

    def aggregate_arrays(self, server_round: int, results: list[tuple[str, NDArrays, int, Mapping[str, Any]]]
                         ) -> tuple[NDArrays | None, dict[str, Any]]:
        assert self.global_arrays is not None
        order = {str(c): i for i, c in enumerate(self.sampled)}
        clients = sorted((r[0] for r in results), key=lambda c: order.get(c, len(order)))
        start = flat_of(self.global_arrays)
        update, info = self.secure.round(server_round, start, [int(c) for c in clients])
        info = {"clients": clients, **info}
        if update is None:
            return None, info
        return arrays_of(self.rule.apply(start, update), self.global_arrays), info
