"""Every registered aggregation rule and strategy defense as a Flower strategy gives siegecraft's aggregate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from siegecraft.drivers.experiment import build_experiment
from siegecraft.engines.federated.engine import build_strategy
from siegecraft.engines.federated.wrappers import STRATEGY_DEFENSES, DefenseContext
from siegecraft.flower import arrays_of, flat_of, strategy, strategy_names
from tests.conftest import tiny_raw

SHAPES = [(3, 4), (4,), (2, 2, 2)]
N_CLIENTS = 7


class Proxy:
    """The part of a Flower ClientProxy the strategy reads: its node id."""

    def __init__(self, cid: str) -> None:
        self.cid = cid


def _setup() -> tuple[list[np.ndarray], torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen).numpy() for s in SHAPES]
    size = sum(int(np.prod(s)) for s in SHAPES)
    updates = 0.1 * torch.randn(N_CLIENTS, size, generator=gen)
    updates[-1] *= -20  # one outlier, so robust rules and defenses have something to do
    weights = torch.tensor([10.0, 20, 30, 15, 25, 5, 40])
    reference = 0.1 * torch.randn(size, generator=gen)
    return start, updates, weights, reference


def _defense_table(name: str) -> dict[str, Any]:
    if name in STRATEGY_DEFENSES:
        return {"names": [name], "options": {name: {"root_size": 10}} if name == "fltrust" else {}}
    return {"aggregator": name}


@pytest.mark.parametrize("name", strategy_names())
def test_each_rule_on_flower_aggregates_like_siegecraft(name: str) -> None:
    start, updates, weights, reference = _setup()
    g = flat_of(start)
    server_update = lambda rnd, w: reference

    ours = build_strategy(build_experiment(tiny_raw(defense=_defense_table(name))),
                          DefenseContext(server_update=server_update))
    ours.begin_round(1, g)
    expected = ours.apply(g, ours.combine(updates, weights))

    flower = strategy(name, server_update=server_update)
    flower.begin(1, ndarrays_to_parameters(start))
    results = [(Proxy(str(i)), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays_of(g + u, start)), int(n), {}))
               for i, (u, n) in enumerate(zip(updates, weights))]
    params, _ = flower.aggregate_fit(1, results, [])
    assert params is not None
    got = parameters_to_ndarrays(params)
    assert [a.shape for a in got] == SHAPES
    assert torch.allclose(flat_of(got), expected, atol=1e-5)


def test_rule_options_and_flower_options_are_routed_and_typos_refused() -> None:
    s = strategy("krum", f=2, fraction_fit=0.5, min_fit_clients=3)
    assert s.fraction_fit == 0.5 and s.min_fit_clients == 3
    s = strategy("norm_clip", max_norm=0.5)
    assert s.rule.options.max_norm == 0.5
    with pytest.raises(TypeError, match="unknown option 'ff'"):
        strategy("krum", ff=2)
    with pytest.raises(ValueError, match="unknown siegecraft rule 'krumm'.*multi_krum"):
        strategy("krumm")
    with pytest.raises(ValueError, match="needs a server root dataset"):
        strategy("fltrust")


def test_non_finite_uploads_are_dropped_and_the_round_logged() -> None:
    start, updates, _, _ = _setup()
    g = flat_of(start)
    flower = strategy("mean")
    flower.begin(1, ndarrays_to_parameters(start))
    bad = g + updates[1]
    bad[0] = float("nan")
    results = [(Proxy("a"), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays_of(g + updates[0], start)), 4,
                                   {"loss": 1.0})),
               (Proxy("b"), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays_of(bad, start)), 4, {"loss": 2.0}))]
    params, metrics = flower.aggregate_fit(1, results, [])
    assert params is not None and metrics["train_loss"] == 1.0
    assert flower.last_round["dropped"] == ["b"]
    assert torch.allclose(flat_of(parameters_to_ndarrays(params)), g + updates[0], atol=1e-6)
