"""A Flower user's own apps with siegecraft inside: Krum as the strategy, HijackFL and sign-flip clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import RecordDict
from flwr.client import Client, NumPyClient
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerAppComponents, ServerConfig

from siegecraft.core.models import load_flat_params
from siegecraft.core.training import TrainConfig, evaluate, local_train
from siegecraft.flower import AttackClient, attack_client, federation_context, flat_of, model_arrays, strategy
from tests.conftest import tiny_raw
from tests.flower.inprocess import run_in_process

EXPERIMENT = tiny_raw(fl={"clients": 4, "rounds": 3})  # siegecraft's description of the task: data, model, recipe
HIJACK = {"num_classes": 3, "samples_per_class": 30, "test_per_class": 20, "epochs": 2, "anchor_steps": 5,
          "attack_round": 2, "figures": False}


class UserClient(NumPyClient):
    """A plain Flower client as a user writes it: load the weights, train locally, send the weights back."""

    def __init__(self, cid: int) -> None:
        self.ctx = federation_context(EXPERIMENT)  # the user's data loading; here siegecraft's split of digits
        self.cid, self.model = cid, self.ctx.model_factory()
        self.data = self.ctx.trainer.client_data(cid)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        load_flat_params(self.model, flat_of(parameters))
        stats = local_train(self.model, self.data, TrainConfig(lr=0.05, momentum=0.9, batch_size=32), seed=self.cid)
        return model_arrays(self.model), len(self.data), {"loss": stats["loss"]}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict]:
        load_flat_params(self.model, flat_of(parameters))
        res = evaluate(self.model, self.data)
        return res.loss, len(self.data), {"accuracy": res.accuracy}


def test_a_flower_users_apps_run_krum_and_a_hijackfl_client(tmp_path: Path) -> None:
    ctx = federation_context(EXPERIMENT)
    krum = strategy("krum", f=1, fraction_fit=1.0, min_fit_clients=4, min_available_clients=4, fraction_evaluate=1.0,
                    min_evaluate_clients=4, final_round=3,
                    initial_parameters=ndarrays_to_parameters(model_arrays(ctx.model_factory())))

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=krum, config=ServerConfig(num_rounds=3))

    def client_fn(context: Context) -> Client:
        cid = int(context.node_config["partition-id"])
        if cid == 1:
            return attack_client("hijackfl", UserClient(cid), client_id=cid, experiment=EXPERIMENT, context=context,
                                 options=HIJACK, figures_dir=tmp_path).to_client()
        return UserClient(cid).to_client()

    run_in_process(server_fn, client_fn, nodes=4)
    report = krum.attack_reports["1"]
    assert report["snapshot_round"] == 2 and len(report["mapping"]) == 3
    assert 0.0 <= report["hijack_acc"] <= 1.0 and 0.0 <= report["utility"] <= 1.0
    assert krum.last_round["clients"] and krum.global_arrays is not None


class FixedClient(NumPyClient):
    """An honest client whose update is always +1 on every weight."""

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        return [p + 1 for p in parameters], 10, {}


def test_sign_flip_client_reverses_the_honest_update_and_counts_rounds_without_the_bridge_strategy() -> None:
    ctx = federation_context(EXPERIMENT)
    state = RecordDict()
    client = AttackClient(FixedClient(), "sign_flip", client_id=0, ctx=ctx, options={"scale": 2.0}, state=state)
    start = [np.zeros((2, 3), dtype=np.float32), np.ones(4, dtype=np.float32)]
    for rnd in (1, 2):  # plain FedAvg sends no round: the node's state counts its fits
        arrays, n, _ = client.fit(start, {})
        assert n == 10 and int(state["siegecraft.rounds"]["fits"]) == rnd
        assert torch.allclose(flat_of(arrays), flat_of(start) - 2.0)
    with pytest.raises(ValueError, match="unknown attack 'sign_flp'"):
        AttackClient(FixedClient(), "sign_flp", client_id=0, ctx=ctx)
