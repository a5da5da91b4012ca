"""The hijacking baselines: poison, chameleon, uap, reprogram - selectable by name, evaluated like HijackFL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from siegecraft.attacks.baselines import Camouflager, Chameleon, Poison, search_program, search_uaps
from siegecraft.attacks.baselines.chameleon import (
    ChameleonOptions,
    camouflage_loss,
    new_camouflager,
    train_camouflager,
)
from siegecraft.attacks.hijackfl import CloakSchedule, greedy_mapping, load_hijack_data, prediction_counts
from siegecraft.attacks.hijackfl.execution import CloakedHijacker, ProgramHijacker, RawHijacker
from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.models import SiegeModel, build_model
from siegecraft.core.results import RunDir
from siegecraft.core.training import TrainConfig, local_train
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated import Federation
from siegecraft.engines.federated.extensions import ATTACKS
from tests.conftest import tiny_raw

FAST = {"num_classes": 3, "samples_per_class": 30, "test_per_class": 20, "attack_round": 2}


@pytest.fixture(scope="module")
def digits_model() -> SiegeModel:
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=8, width=8, hidden=32)
    local_train(model, load_dataset("digits", "train"), TrainConfig(lr=0.05, momentum=0.9, epochs=3, batch_size=32),
                seed=0)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def fashion3():
    """Three Fashion-MNIST classes shrunk to the 8x8 digits model: a task the model was never trained on."""
    return load_hijack_data("fashion_mnist", 3, (1, 8, 8), samples_per_class=60, test_per_class=40)


def _federation(tmp_path: Path, name: str, options: dict) -> Federation:
    exp = build_experiment(tiny_raw(attack={"name": name, "clients": [1], "options": options}))
    return Federation(exp, RunDir.create(tmp_path, name))


def test_every_baseline_is_registered_and_validates_its_options() -> None:
    for name in ("poison", "chameleon", "uap", "reprogram"):
        assert name in ATTACKS
        build_experiment(tiny_raw(attack={"name": name, "clients": [0], "options": {"num_classes": 3}}))
    with pytest.raises(ValueError, match="scale"):
        build_experiment(tiny_raw(attack={"name": "poison", "clients": [0], "options": {"scale": -1}}))


def test_poison_is_benign_before_its_attack_round_then_uploads_a_scaled_poisoned_update(tmp_path: Path) -> None:
    fed = _federation(tmp_path, "poison", {**FAST, "scale": 10.0})
    adv = fed.adversary
    assert isinstance(adv, Poison)
    adv.setup(fed.ctx)
    w = fed.global_weights.clone()
    before = adv.client_update(fed.ctx, 1, 1, w, lambda: fed.trainer.train(1, 1, w))
    assert torch.equal(before.update, fed.trainer.train(1, 1, w).update)
    after = adv.client_update(fed.ctx, 1, 2, w, lambda: fed.trainer.train(1, 2, w))
    assert adv.poison_set is not None and len(adv.poison_set) == 90
    assert set(adv.poison_set.y.tolist()) == set(adv.mapping.targets)  # labels are the mapped originals
    from siegecraft.attacks.baselines.poison import concat

    data = concat(fed.trainer.client_data(1), adv.poison_set, "p")
    expected = fed.trainer.train(1, 2, w, data=data).update * 10.0
    assert torch.allclose(after.update, expected) and after.num_samples == len(data)


def test_uaps_send_each_class_to_its_mapped_class(digits_model: SiegeModel, fashion3) -> None:
    mapping = greedy_mapping(prediction_counts(digits_model, fashion3.train.x, fashion3.train.y, 3))
    targets = torch.tensor(mapping.targets)
    uaps, losses = search_uaps(digits_model, fashion3.train, targets, alpha=0.5,
                               schedule=CloakSchedule(epochs=30, lr=0.1, batch_size=32), seed=0)
    assert losses[-1] < losses[0]
    hijacker = CloakedHijacker(mapping, uaps)
    q = hijacker.queries(fashion3.test.x)
    for k in range(3):  # pattern k drives class k's inputs to its mapped class most of the time
        own = digits_model(q[k][fashion3.test.y == k]).argmax(1)
        assert (own == targets[k]).float().mean() > 0.5


def test_reprogramming_beats_raw_queries(digits_model: SiegeModel, fashion3) -> None:
    mapping = greedy_mapping(prediction_counts(digits_model, fashion3.train.x, fashion3.train.y, 3))
    program, losses = search_program(digits_model, fashion3.train, torch.tensor(mapping.targets), alpha=0.5,
                                     schedule=CloakSchedule(epochs=30, lr=0.1, batch_size=32), seed=0)
    assert len(program) == 1 and losses[-1] < losses[0]
    x, y = fashion3.test.x, fashion3.test.y
    programmed = (ProgramHijacker(mapping, program).predict(digits_model, x) == y).float().mean()
    raw = (RawHijacker(mapping).predict(digits_model, x) == y).float().mean()
    assert programmed > raw + 0.1, (float(programmed), float(raw))


def test_camouflager_makes_images_and_training_lowers_its_loss(digits_model: SiegeModel, fashion3) -> None:
    covers = load_dataset("digits", "train").x[: len(fashion3.train)]
    out = Camouflager(1, width=4)(fashion3.train.x[:5], covers[:5]).detach()
    assert out.shape == (5, 1, 8, 8) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert Camouflager(1, width=4)(torch.rand(2, 1, 7, 7), torch.rand(2, 1, 7, 7)).shape == (2, 1, 7, 7)
    opts = ChameleonOptions(camouflage_epochs=8, camouflage_lr=3e-3, width=4)
    trained = train_camouflager(digits_model, fashion3.train.x, covers, opts, seed=0)
    untrained = new_camouflager(1, 4, seed=0)
    with torch.no_grad():
        before = camouflage_loss(digits_model, untrained, fashion3.train.x, covers, opts)
        after = camouflage_loss(digits_model, trained, fashion3.train.x, covers, opts)
    assert after < 0.8 * before, (float(after), float(before))


@pytest.mark.parametrize("name", ["poison", "chameleon", "uap", "reprogram"])
def test_each_baseline_runs_in_a_federation_and_reports_like_hijackfl(tmp_path: Path, name: str) -> None:
    options = {**FAST}
    if name in ("uap", "reprogram"):
        options["epochs"] = 2
    if name == "chameleon":
        options["camouflage_epochs"] = 1
    raw = tiny_raw(fl={"rounds": 2}, attack={"name": name, "clients": [1], "options": options})
    final = run_experiment(build_experiment(raw), out_root=tmp_path).read_summary()["final"]
    for key in ("hijack_acc", "no_cloak_acc", "utility", "ssim", "l2"):
        assert final[key] is not None and final[key] >= 0, key
    assert final["snapshot_round"] == 2 and len(final["confusion_matrix"]) == 3
    if name == "chameleon":
        assert isinstance(final["ssim"], float)


def test_chameleon_is_a_poison_variant_with_camouflaged_queries(tmp_path: Path) -> None:
    fed = _federation(tmp_path, "chameleon", {**FAST, "camouflage_epochs": 1})
    adv = fed.adversary
    assert isinstance(adv, Chameleon) and isinstance(adv, Poison)
    adv.setup(fed.ctx)
    w = fed.global_weights.clone()
    adv.client_update(fed.ctx, 1, 2, w, lambda: fed.trainer.train(1, 2, w))
    assert adv.poison_set is not None and not torch.equal(adv.poison_set.x, adv.data.train.x)
    q = adv.hijacker.queries(adv.data.test.x[:4])
    assert q.shape == (1, 4, 1, 8, 8)
