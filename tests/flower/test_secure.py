"""Zero-sum secure aggregation as a Flower strategy's aggregation step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("flwr")

from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerAppComponents, ServerConfig

from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated.strategy import FedAvg
from siegecraft.flower import SiegecraftClient, ZeroSumStrategy, federation_context, flat_of, model_arrays
from siegecraft.flower.runner import FlowerFederation
from siegecraft.flower.strategy import PartitionSampler
from tests.conftest import tiny_raw
from tests.flower.inprocess import run_in_process


class RecordingRound:
    """A SecureRound that reveals a fixed mean update and records which clients it was asked to aggregate."""

    def __init__(self, size: int) -> None:
        self.calls: list[tuple[int, list[int]]] = []
        self.size = size

    def round(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> tuple[torch.Tensor, dict[str, Any]]:
        self.calls.append((rnd, clients))
        return torch.full((self.size,), 0.5), {"dropped": [], "num_samples": 7}

    def close(self) -> None:
        pass


def test_the_secure_round_replaces_the_uploads_and_the_server_rule_applies_its_mean() -> None:
    exp = tiny_raw(fl={"clients": 4, "clients_per_round": 2})
    ctx = federation_context(exp)
    start = model_arrays(ctx.model_factory())
    secure = RecordingRound(flat_of(start).numel())
    strat = ZeroSumStrategy(FedAvg(server_lr=2.0), secure, sampler=PartitionSampler(4, 2, "random", seed=3),
                            initial_parameters=ndarrays_to_parameters(start), fraction_evaluate=0.0)
    fits: list[dict] = []

    class Spy(SiegecraftClient):
        def fit(self, parameters: Any, config: dict) -> Any:
            fits.append(dict(config))
            return super().fit(parameters, config)

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=strat, config=ServerConfig(num_rounds=2))

    run_in_process(server_fn, lambda c: Spy(ctx.trainer, int(c.node_config["partition-id"])).to_client(), nodes=4)
    assert [rnd for rnd, _ in secure.calls] == [1, 2]
    assert all(len(clients) == 2 and set(clients) <= {0, 1, 2, 3} for _, clients in secure.calls)
    assert len(fits) == 4 and all(f["siegecraft_skip"] for f in fits)  # the enclaves trained, not the clients
    assert strat.global_arrays is not None
    assert torch.allclose(flat_of(strat.global_arrays), flat_of(start) + 2 * 2.0 * 0.5, atol=1e-5)


@pytest.mark.slow
def test_a_zero_sum_config_on_flower_matches_siegecraft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FlowerFederation, "simulate",
                        lambda self, s, c: run_in_process(s, c, self.exp.fl.clients))
    acc = {}
    for engine in ("siegecraft", "flower"):
        raw = tiny_raw(fl={"rounds": 2, "engine": engine}, secure={"aggregation": "zero_sum", "fanout": 2})
        acc[engine] = run_experiment(build_experiment(raw), out_root=tmp_path / engine).read_summary()["final"]["accuracy"]
    assert abs(acc["siegecraft"] - acc["flower"]) <= 0.01
