"""Local training settings: the per-round learning-rate schedule a federation applies."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.models import build_model, flat_params, load_flat_params
from siegecraft.core.training import TrainConfig, local_train
from siegecraft.engines.federated.client import ClientTrainer
from siegecraft.engines.federated.sampling import client_seed


def test_for_round_decays_lr_geometrically_and_changes_nothing_else() -> None:
    cfg = TrainConfig(lr=0.1, momentum=0.9, batch_size=16, lr_decay=0.5)
    assert cfg.for_round(1) is cfg
    third = cfg.for_round(3)
    assert third.lr == pytest.approx(0.025)
    assert third.model_dump(exclude={"lr"}) == cfg.model_dump(exclude={"lr"})
    flat = TrainConfig(lr=0.1)
    assert flat.for_round(30) is flat  # no decay by default
    for bad in (0.0, 1.5):
        with pytest.raises(ValidationError):
            TrainConfig(lr_decay=bad)


def test_client_trainer_trains_round_r_with_the_decayed_lr() -> None:
    data = load_dataset("digits", "train")
    parts = [list(range(60)), list(range(60, 120))]
    cfg = TrainConfig(lr=0.05, batch_size=16, lr_decay=0.5)
    factory = lambda: build_model("cnn", in_channels=1, num_classes=10, image_size=8, width=8, hidden=16)
    torch.manual_seed(0)
    weights = flat_params(factory())
    trainer = ClientTrainer(factory, data, parts, cfg, seed=1)
    got = trainer.train(1, 3, weights).update
    model = factory()
    load_flat_params(model, weights)
    local_train(model, data.subset(parts[1]), TrainConfig(lr=0.0125, batch_size=16), seed=client_seed(1, 3, 1))
    torch.testing.assert_close(got, flat_params(model) - weights, rtol=0, atol=0)
    undecayed = ClientTrainer(factory, data, parts, cfg.model_copy(update={"lr_decay": 1.0}), seed=1)
    assert not torch.equal(undecayed.train(1, 3, weights).update, got)
