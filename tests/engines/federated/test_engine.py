"""The federated engine: determinism, resume, NaN handling, strategies, sampling."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from siegecraft.core.results import RunDir
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated import FedAvg, FedAvgM, Federation, sample_clients
from siegecraft.engines.federated.client import ClientUpdate
from siegecraft.engines.federated.engine import drop_non_finite
from tests.conftest import tiny_raw


def _metrics_bytes(run: RunDir) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "round_s"} for r in run.read_metrics()]


def test_same_config_and_seed_give_identical_metrics(tmp_path: Path) -> None:
    exp = build_experiment(tiny_raw())
    a = run_experiment(exp, out_root=tmp_path / "a")
    b = run_experiment(exp, out_root=tmp_path / "b")
    ma, mb = _metrics_bytes(a), _metrics_bytes(b)
    assert len(ma) == 3 and ma == mb
    assert torch.equal(torch.load(a.path / "final_weights.pt"), torch.load(b.path / "final_weights.pt"))
    c = run_experiment(build_experiment(tiny_raw(seed=4)), out_root=tmp_path / "c")
    assert _metrics_bytes(c) != ma


def test_training_improves_accuracy(tmp_path: Path) -> None:
    run = run_experiment(build_experiment(tiny_raw(fl={"rounds": 4})), out_root=tmp_path)
    acc = [r["accuracy"] for r in run.read_metrics()]
    assert acc[-1] > 0.6 and acc[-1] > acc[0], acc  # digits: 10 classes, chance 0.1


def test_resume_continues_exactly(tmp_path: Path) -> None:
    full = run_experiment(build_experiment(tiny_raw(fl={"rounds": 4, "checkpoint_every": 2})), out_root=tmp_path / "f")
    part = run_experiment(build_experiment(tiny_raw(fl={"rounds": 2, "checkpoint_every": 2})), out_root=tmp_path / "p")
    assert part.latest_checkpoint() is not None
    resumed = run_experiment(
        build_experiment(tiny_raw(fl={"rounds": 4, "checkpoint_every": 2})), resume=part.path
    )
    assert _metrics_bytes(resumed) == _metrics_bytes(full)


def test_resume_without_checkpoint_is_an_error(tmp_path: Path) -> None:
    run = run_experiment(build_experiment(tiny_raw(fl={"rounds": 1})), out_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_experiment(build_experiment(tiny_raw()), resume=run.path)


def test_non_finite_update_is_dropped_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    good = ClientUpdate(0, torch.ones(4), 10)
    bad = ClientUpdate(5, torch.tensor([1.0, float("nan"), 0.0, 0.0]), 10)
    inf = ClientUpdate(6, torch.tensor([float("inf"), 0.0, 0.0, 0.0]), 10)
    with caplog.at_level(logging.WARNING):
        kept, dropped = drop_non_finite([good, bad, inf], rnd=7)
    assert [u.client_id for u in kept] == [0] and dropped == [5, 6]
    assert "round 7" in caplog.text and "client 5" in caplog.text and "client 6" in caplog.text


def test_round_with_a_nan_client_aggregates_the_rest(tmp_path: Path) -> None:
    exp = build_experiment(tiny_raw(fl={"rounds": 1}))
    fed = Federation(exp, RunDir.create(tmp_path, "nan"))
    updates = [ClientUpdate(0, torch.ones(3), 10), ClientUpdate(1, torch.full((3,), float("nan")), 30),
               ClientUpdate(2, 3 * torch.ones(3), 30)]
    update, info = fed.aggregate_plain(1, updates)
    assert info["dropped"] == [1]
    assert torch.allclose(update, torch.full((3,), 2.5))  # (1*10 + 3*30) / 40


def test_fedavg_weighting_and_server_lr() -> None:
    s = FedAvg(server_lr=0.5)
    upd = s.combine(torch.tensor([[1.0, 0.0], [4.0, 2.0]]), torch.tensor([3.0, 1.0]))
    assert torch.allclose(upd, torch.tensor([1.75, 0.5]))
    assert torch.allclose(s.apply(torch.zeros(2), upd), torch.tensor([0.875, 0.25]))


def test_fedavgm_accumulates_momentum_and_restores_state() -> None:
    s = FedAvgM(momentum=0.5, server_lr=1.0)
    w = s.apply(torch.zeros(1), torch.ones(1))
    w = s.apply(w, torch.ones(1))  # velocity 1.5
    assert torch.allclose(w, torch.tensor([2.5]))
    t = FedAvgM(momentum=0.5)
    t.load_state_dict(s.state_dict())
    assert torch.allclose(t.apply(torch.zeros(1), torch.zeros(1)), torch.tensor([0.75]))


def test_sampling_is_deterministic_and_round_robin_covers_everyone() -> None:
    a = sample_clients(3, 20, 5, seed=1)
    assert a == sample_clients(3, 20, 5, seed=1) and len(set(a)) == 5
    assert a != sample_clients(4, 20, 5, seed=1)
    seen = set()
    for rnd in range(1, 5):
        seen |= set(sample_clients(rnd, 20, 5, method="round_robin"))
    assert seen == set(range(20))
    with pytest.raises(ValueError):
        sample_clients(1, 3, 4)


def test_fraction_sampling_in_a_run(tmp_path: Path) -> None:
    run = run_experiment(build_experiment(tiny_raw(fl={"rounds": 2, "fraction": 0.5})), out_root=tmp_path)
    assert all(len(r["clients"]) == 2 for r in run.read_metrics())


def test_train_lr_drives_federated_clients(tmp_path: Path) -> None:
    """`[train] lr` is every client's local learning rate: a different lr, a different global model."""
    low = run_experiment(build_experiment(tiny_raw(fl={"rounds": 1}, train={"lr": 0.01})), out_root=tmp_path / "a")
    high = run_experiment(build_experiment(tiny_raw(fl={"rounds": 1}, train={"lr": 0.2})), out_root=tmp_path / "b")
    assert not torch.equal(torch.load(low.path / "final_weights.pt"), torch.load(high.path / "final_weights.pt"))
    assert _metrics_bytes(low)[0]["loss"] != _metrics_bytes(high)[0]["loss"]
