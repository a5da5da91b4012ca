"""The classic poisoning attacks: each client role against its definition, and their success metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from siegecraft.attacks.poisoning import Backdoor, apply_trigger, flip_labels
from siegecraft.core.config import ConfigError
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.results import RunDir
from siegecraft.drivers.experiment import build_experiment
from siegecraft.engines.federated import Federation
from siegecraft.engines.federated.extensions import ATTACKS, build_adversary
from siegecraft.engines.federated.sampling import client_seed
from tests.conftest import tiny_raw


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread; on a shared, loaded CPU two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    exp = build_experiment(tiny_raw(fl={"clients": 4}, train={"epochs": 1}))
    return Federation(exp, RunDir.create(tmp_path_factory.mktemp("runs"), "poison"))


def _update(fed: Federation, name: str, options: dict, client: int = 1, rnd: int = 2) -> torch.Tensor:
    adv = build_adversary(name, [client], options)
    adv.setup(fed.ctx)
    benign = lambda: fed.trainer.train(client, rnd, fed.global_weights)
    return adv.client_update(fed.ctx, client, rnd, fed.global_weights, benign).update


def test_registered() -> None:
    assert {"label_flip", "sign_flip", "gaussian_noise", "backdoor"} <= set(ATTACKS.names())


def test_sign_flip_uploads_the_scaled_reverse(fed: Federation) -> None:
    honest = fed.trainer.train(1, 2, fed.global_weights).update
    assert torch.allclose(_update(fed, "sign_flip", {"scale": 3.0}), -3.0 * honest)


def test_gaussian_noise_is_seeded_noise(fed: Federation) -> None:
    a = _update(fed, "gaussian_noise", {"sigma": 0.5})
    assert torch.equal(a, _update(fed, "gaussian_noise", {"sigma": 0.5}))
    assert not torch.equal(a, _update(fed, "gaussian_noise", {"sigma": 0.5}, rnd=3))
    assert abs(float(a.std()) - 0.5) < 0.01 and abs(float(a.mean())) < 0.01
    honest = fed.trainer.train(1, 2, fed.global_weights).update
    assert torch.allclose(_update(fed, "gaussian_noise", {"sigma": 0.5, "mode": "add"}), honest + a)


def test_flip_labels_by_hand() -> None:
    y = torch.tensor([0, 1, 2, 9])
    assert flip_labels(y, 10).tolist() == [9, 8, 7, 0]
    assert flip_labels(y, 10, source=1, target=7).tolist() == [0, 7, 2, 9]


def test_label_flip_trains_on_flipped_labels(fed: Federation) -> None:
    data = fed.trainer.client_data(1)
    flipped = ImageDataset(data.x, flip_labels(data.y, 10, 3, 5), 10, "f")
    expected = fed.trainer.train(1, 2, fed.global_weights, data=flipped).update
    got = _update(fed, "label_flip", {"source": 3, "target": 5, "boost": 2.0})
    assert torch.allclose(got, 2.0 * expected)
    with pytest.raises(ConfigError, match="both source and target"):
        build_experiment(tiny_raw(attack={"name": "label_flip", "clients": [0], "options": {"source": 3}}))


class _Constant(nn.Module):
    """Predicts one class for every input."""

    def __init__(self, cls: int) -> None:
        super().__init__()
        self.cls = cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((len(x),), self.cls), 10).float()


class _TriggerReader(nn.Module):
    """Predicts 0 when the bottom-right trigger square is lit, else the true label hidden in pixel (0, 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lit = x[:, 0, -2, -2] > 0.99
        label = torch.where(lit, 0, (x[:, 0, 0, 0] * 10).round().long())
        return nn.functional.one_hot(label, 10).float()


def test_success_metrics_by_construction() -> None:
    y = torch.tensor([0, 1, 2, 3, 3])
    x = (y.float() / 10).view(5, 1, 1, 1).expand(5, 1, 8, 8).clone()
    test = ImageDataset(x, y, 10, "t")
    flip = build_adversary("label_flip", [0], {"source": 3, "target": 5})
    assert flip.attack_success(_Constant(5), test) == 1.0 and flip.attack_success(_Constant(3), test) == 0.0
    assert build_adversary("label_flip", [0], {}).attack_success(_Constant(9), test) == pytest.approx(1 / 5)
    assert build_adversary("sign_flip", [0], {}).attack_success(_Constant(3), test) == pytest.approx(3 / 5)
    backdoor = build_adversary("backdoor", [0], {"target": 0})
    assert backdoor.attack_success(_TriggerReader(), test) == 1.0  # 4 non-target inputs, all hijacked
    assert backdoor.attack_success(_Constant(2), test) == 0.0


def test_trigger_placement() -> None:
    x = torch.zeros(2, 3, 8, 8)
    out = apply_trigger(x, size=3, value=0.8)
    assert torch.equal(x, torch.zeros(2, 3, 8, 8))  # input untouched
    assert torch.equal(out[:, :, 4:7, 4:7], torch.full((2, 3, 3, 3), 0.8))
    assert float(out.sum()) == pytest.approx(0.8 * 2 * 3 * 9)
    with pytest.raises(ValueError, match="does not fit"):
        apply_trigger(x, size=8)


def test_backdoor_poisons_a_fraction_and_boosts_for_replacement(fed: Federation) -> None:
    adv = build_adversary("backdoor", [1], {"target": 7, "poison_fraction": 0.25})
    assert isinstance(adv, Backdoor)
    data = fed.trainer.client_data(1)
    poisoned = adv.poison(data, seed=0)
    changed = (poisoned.x != data.x).flatten(1).any(1)
    assert int(changed.sum()) <= round(0.25 * len(data)) and (poisoned.y[changed] == 7).all()
    assert int((poisoned.y != data.y).sum()) == int((data.y[changed] != 7).sum())
    assert adv.boost_for(fed.ctx, 1) == 4.0  # 4 clients per round, 1 attacker, server_lr 1
    two = build_adversary("backdoor", [1, 2], {})
    assert two.boost_for(fed.ctx, 1) == 2.0
    assert build_adversary("backdoor", [1], {"boost": 1.5}).boost_for(fed.ctx, 1) == 1.5
    upd = _update(fed, "backdoor", {"target": 7, "poison_fraction": 0.25}, rnd=2)
    expected = fed.trainer.train(1, 2, fed.global_weights, data=adv.poison(data, client_seed(fed.exp.seed, 0, 1)))
    assert torch.allclose(upd, 4.0 * expected.update)
    honest = fed.trainer.train(1, 2, fed.global_weights).update
    assert torch.equal(_update(fed, "backdoor", {"rounds": [5]}, rnd=2), honest)  # outside its rounds: benign


def test_backdoor_survives_fedavg_in_a_run(tmp_path: Path) -> None:
    from siegecraft.drivers.runner import run_experiment

    raw = tiny_raw(fl={"rounds": 3}, attack={"name": "backdoor", "clients": [0], "options": {"target": 0}})
    run = run_experiment(build_experiment(raw), out_root=tmp_path)
    records, final = run.read_metrics(), run.read_summary()["final"]
    assert all("attack_success" in r for r in records)
    # triggered inputs of other classes land on class 0 far above its ~10% base rate
    assert final["attack_success"] > 0.5, final
