"""The engine's bridge: an Experiment with [secure] aggregation = "zero_sum" maps onto a CitadelSpec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siegecraft.core.models import build_model, flat_params
from siegecraft.enclave.federated_bridge import open_secure_aggregation, spec_from_experiment
from siegecraft.engines.federated.config import FederatedExperiment


def experiment(**secure: object) -> FederatedExperiment:
    return FederatedExperiment.model_validate({
        "seed": 3, "data": {"dataset": "fashion_mnist"}, "model": {"name": "cnn", "options": {"width": 4, "hidden": 8}},
        "train": {"lr": 0.1, "steps": 2, "batch_size": 8}, "fl": {"clients": 3, "rounds": 1},
        "secure": {"aggregation": "zero_sum", "fanout": 2, **secure}})


def test_spec_carries_the_experiment() -> None:
    parts = [np.arange(0, 10), np.arange(10, 30), np.arange(30, 35)]
    spec = spec_from_experiment(experiment(on_dropout="abort", max_update_norm=2.5), parts)
    assert spec.max_update_norm == 2.5
    assert spec.model_options == {"in_channels": 1, "num_classes": 10, "image_size": 28, "width": 4, "hidden": 8}
    assert spec.train["lr"] == 0.1 and spec.train["steps"] == 2 and spec.seed == 3
    assert spec.fanout == 2 and spec.on_dropout == "abort" and spec.data_options == {}
    adapted = FederatedExperiment.model_validate({**experiment().model_dump(), "model": {"name": "cnn", "image_size": 32,
                                                                                "channels": 3}})
    spec = spec_from_experiment(adapted, parts)
    assert spec.data_options == {"channels": 3, "size": 32}
    assert spec.model_options["in_channels"] == 3 and spec.model_options["image_size"] == 32


def test_max_update_norm_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_update_norm"):
        experiment(max_update_norm=0)


@pytest.mark.slow
def test_bridge_runs_a_round() -> None:
    parts = [np.arange(0, 16), np.arange(16, 40), np.arange(40, 48)]
    exp = experiment()
    secure = open_secure_aggregation(exp, parts)
    try:
        spec = spec_from_experiment(exp, parts)
        torch.manual_seed(0)
        weights = flat_params(build_model("cnn", **spec.model_options))
        update, info = secure.round(1, weights, [0, 1, 2])
        assert update is not None and update.shape == weights.shape and update.abs().max() > 0
        assert info["dropped"] == [] and info["num_samples"] == 48
        assert info["secure_clipped_updates"] == 0 and info["secure_clipped_coordinates"] == 0
    finally:
        secure.close()
