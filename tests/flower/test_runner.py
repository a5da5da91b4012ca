"""`[fl] engine = "flower"`: the same config on Flower gives siegecraft's federation and run directory.

The default-suite tests drive the bridge's server and client apps with Flower's own `Server` round loop
in this process (tests/flower/inprocess.py), so they take seconds; tests/flower/test_simulation.py runs
the same through `flwr.simulation.run_simulation` (Ray) and is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("flwr")

from typer.testing import CliRunner

from siegecraft.core.config import ConfigError, to_toml
from siegecraft.drivers import plugins
from siegecraft.drivers.cli import app
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated.runners import FEDERATED_RUNNERS
from siegecraft.flower import arrays_of, flat_of
from siegecraft.flower import clients as flower_clients
from siegecraft.flower.runner import FlowerFederation, FlowerRunner
from tests.conftest import tiny_raw
from tests.flower.inprocess import run_in_process

FAST_HIJACK = {"num_classes": 3, "samples_per_class": 30, "test_per_class": 20, "epochs": 2, "anchor_steps": 5,
               "attack_round": 2, "figures": False}


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the Flower engine's apps in this process instead of Flower's Ray simulation."""
    def simulate(self: FlowerFederation, server_fn: Any, client_fn: Any) -> None:
        run_in_process(server_fn, client_fn, self.exp.fl.clients)

    monkeypatch.setattr(FlowerFederation, "simulate", simulate)


def _both(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    runs = {}
    for engine in ("siegecraft", "flower"):
        raw = tiny_raw(**{**overrides, "fl": {**overrides.get("fl", {}), "engine": engine}})
        runs[engine] = run_experiment(build_experiment(raw), out_root=tmp_path / engine)
    return runs


def _rows(run: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("round_s", "train_loss")} for r in run.read_metrics()]


@pytest.mark.usefixtures("in_process")
def test_a_config_on_flower_trains_the_same_federation(tmp_path: Path) -> None:
    runs = _both(tmp_path, fl={"clients": 5, "clients_per_round": 3}, output={"report": True})
    ours, flower = runs["siegecraft"], runs["flower"]
    assert abs(ours.read_summary()["final"]["accuracy"] - flower.read_summary()["final"]["accuracy"]) <= 0.01
    assert _rows(ours) == _rows(flower)  # same clients sampled, same metrics each round
    for name in ("metrics.jsonl", "summary.json", "report.html", "config.toml", "final_weights.pt"):
        assert (flower.path / name).exists(), name
    assert 'engine = "flower"' in (flower.path / "config.toml").read_text()


@pytest.mark.usefixtures("in_process")
def test_a_poisoning_attack_and_a_defense_run_the_same_on_flower(tmp_path: Path) -> None:
    runs = _both(tmp_path, attack={"name": "sign_flip", "clients": [1], "options": {"scale": 3.0}},
                 defense={"aggregator": "median", "names": ["norm_clip"], "options": {"norm_clip": {"max_norm": 2.0}}})
    a, b = (runs[e].read_summary()["final"] for e in ("siegecraft", "flower"))
    assert abs(a["accuracy"] - b["accuracy"]) <= 0.01
    assert abs(a["attack_success"] - b["attack_success"]) <= 0.01
    rows = _rows(runs["flower"])
    assert all("clipped" in r and "attack_success" in r for r in rows)


@pytest.mark.usefixtures("in_process")
def test_hijackfl_client_keeps_its_snapshot_in_node_state_and_reports_at_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every message lands in a "fresh process": the adversary must come back from the node's context.state.
    def fresh_process(self: FlowerFederation, server_fn: Any, client_fn: Any) -> None:
        run_in_process(server_fn, client_fn, self.exp.fl.clients, before=flower_clients._ADVERSARIES.clear)

    monkeypatch.setattr(FlowerFederation, "simulate", fresh_process)
    runs = _both(tmp_path, attack={"name": "hijackfl", "clients": [1], "options": FAST_HIJACK})
    a, b = (runs[e].read_summary()["final"] for e in ("siegecraft", "flower"))
    assert b["snapshot_round"] == a["snapshot_round"] == 2
    assert b["mapping"] == a["mapping"]
    assert b["hijack_acc"] is not None and abs(a["hijack_acc"] - b["hijack_acc"]) <= 0.01
    assert abs(a["accuracy"] - b["accuracy"]) <= 0.01


@pytest.mark.parametrize(("overrides", "key"), [
    ({"runtime": {"executor": "processes"}}, "runtime.executor"),
    ({"runtime": {"address": "ray://head:10001"}}, "runtime.address"),
    ({"fl": {"checkpoint_every": 1}}, "fl.checkpoint_every"),
])
def test_settings_flower_cannot_honour_are_refused_naming_the_key(overrides: dict, key: str) -> None:
    raw = tiny_raw(**overrides)
    raw["fl"] = {**raw["fl"], "engine": "flower"}
    with pytest.raises(ConfigError, match=rf"^{key} = .*fl.engine = 'siegecraft'"):
        build_experiment(raw)


def test_resume_on_flower_is_refused() -> None:
    exp = build_experiment(tiny_raw(fl={"engine": "flower"}))
    with pytest.raises(ConfigError, match="--resume: fl.engine = 'flower'"):
        FlowerRunner.run(exp, None, resume=True)  # type: ignore[arg-type]


def test_an_unknown_or_uninstalled_engine_names_fl_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^fl.engine = 'spark': unknown federated engine; known: flower, siegecraft"):
        build_experiment(tiny_raw(fl={"engine": "spark"}))
    monkeypatch.setattr(FEDERATED_RUNNERS, "_items", {k: v for k, v in FEDERATED_RUNNERS._items.items()
                                                      if k != "flower"})
    with pytest.raises(ConfigError, match=r"^fl.engine = 'flower': needs Flower .*pip install 'siegecraft\[flower\]'"):
        build_experiment(tiny_raw(fl={"engine": "flower"}))


def test_flat_round_trip_keeps_shapes_and_dtypes() -> None:
    arrays = [torch.randn(2, 3).numpy(), torch.arange(4, dtype=torch.float64).numpy()]
    back = arrays_of(flat_of(arrays), arrays)
    assert [a.dtype for a in back] == [a.dtype for a in arrays]
    assert all((x == y).all() for x, y in zip(arrays, back))
    assert json.dumps([a.shape for a in back]) == "[[2, 3], [4]]"


def test_the_cli_refuses_an_executor_on_flower_with_exit_2_before_any_work(tmp_path: Path) -> None:
    cfg = tmp_path / "exp.toml"
    cfg.write_text(to_toml(tiny_raw(fl={"engine": "flower"}, runtime={"executor": "ray"})))
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert "runtime.executor = 'ray'" in res.output and "fl.engine = 'siegecraft'" in res.output
    assert not (tmp_path / "runs").exists()


def test_an_optional_builtin_that_fails_to_import_is_reported_on_its_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "OPTIONAL_BUILTINS", {"siegecraft_no_such_bridge": ("json", "nosuch")})
    monkeypatch.setattr(plugins, "INSTALL_HINTS", {})
    plugins.load_builtins()  # does not raise: the other commands keep working
    assert "siegecraft_no_such_bridge failed to import" in plugins.INSTALL_HINTS["nosuch"]
