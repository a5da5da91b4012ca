"""The Flower engine through Flower's real simulation runtime (`run_simulation`, Ray actors): slow, since
Ray starts and stops every time; the default suite covers the same apps in process (test_runner.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("flwr")

from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from tests.conftest import tiny_raw


@pytest.mark.slow
def test_a_config_on_flowers_simulation_reaches_siegecrafts_accuracy(tmp_path: Path) -> None:
    runs = {engine: run_experiment(build_experiment(tiny_raw(fl={"engine": engine, "clients": 5, "clients_per_round": 3},
                                                             attack={"name": "sign_flip", "clients": [2]})),
                                   out_root=tmp_path / engine)
            for engine in ("siegecraft", "flower")}
    a, b = (runs[e].read_summary()["final"] for e in ("siegecraft", "flower"))
    assert abs(a["accuracy"] - b["accuracy"]) <= 0.01  # within 1 point (in practice: equal)
    assert abs(a["attack_success"] - b["attack_success"]) <= 0.01
    assert [r["clients"] for r in runs["flower"].read_metrics()] == [r["clients"] for r in runs["siegecraft"].read_metrics()]
