"""Sweeps: grid parsing, validation before work, and a two-point sweep through the CLI."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from siegecraft.core.config import ConfigError, to_toml
from siegecraft.drivers.cli import app
from siegecraft.drivers.sweep import (
    grid_overrides,
    grid_points,
    parse_grid,
    plan_sweep,
    run_sweep,
    split_values,
)
from tests.conftest import tiny_raw


@pytest.fixture
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine
    yield
    torch.set_num_threads(before)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(to_toml(tiny_raw(train={"epochs": 1})))
    return path


def test_split_values_keeps_brackets_and_quotes_together() -> None:
    assert split_values('1, [2,3], "a,b", {x = 1, y = 2}') == ["1", "[2,3]", '"a,b"', "{x = 1, y = 2}"]


def test_grid_values_are_typed_and_the_product_is_ordered() -> None:
    axes = parse_grid(["train.lr=0.01,0.1", "data.partition=iid,dirichlet", "attack.clients=[0],[0,1]"])
    assert axes[0].values == (0.01, 0.1) and axes[1].values == ("iid", "dirichlet")
    assert axes[2].values == ([0], [0, 1])
    points = grid_points(axes)
    assert len(points) == 8
    assert points[0] == {"train.lr": 0.01, "data.partition": "iid", "attack.clients": [0]}
    assert points[-1] == {"train.lr": 0.1, "data.partition": "dirichlet", "attack.clients": [0, 1]}
    sets = grid_overrides(axes)  # the same product, as --set overrides written as given
    assert sets[0] == ["train.lr=0.01", "data.partition=iid", "attack.clients=[0]"]
    assert sets[-1] == ["train.lr=0.1", "data.partition=dirichlet", "attack.clients=[0,1]"]


@pytest.mark.parametrize("bad", [["fl.rounds"], ["fl.rounds="], ["=1,2"], ["fl.rounds=1,,2"], ["a=1", "a=2"], []])
def test_malformed_grids_are_errors(bad: list[str]) -> None:
    with pytest.raises(ConfigError):
        parse_grid(bad)


def test_every_point_is_validated_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"grid point 1 \(rounds=-1\)(.|\n)*fl.rounds"):
        plan_sweep(tiny_raw(), parse_grid(["fl.rounds=1,-1"]))
    with pytest.raises(ConfigError, match=r"^grid point 0 \(nope=1\): fl\.nope = 1: unknown key; allowed keys: "):
        run_sweep(_config(tmp_path), ["fl.nope=1"], out_root=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"^grid point 0 \(x=1\): --set 'fl\.rounds\.x=1': .*not a table"):
        plan_sweep(tiny_raw(), parse_grid(["fl.rounds.x=1"]))
    with pytest.raises(ConfigError, match="--plugin 'no_such_sweep_plugin': module not found"):
        run_sweep(_config(tmp_path), ["seed=1"], plugins=["no_such_sweep_plugin"], out_root=tmp_path / "out")
    with pytest.raises(ConfigError, match="workers = 0"):
        run_sweep(_config(tmp_path), ["seed=1"], workers=0, out_root=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    jobs = plan_sweep(tiny_raw(), parse_grid(["seed=5,6"]), ["fl.rounds=2"])
    assert [(j.experiment.name, j.experiment.seed, j.experiment.fl.rounds) for j in jobs] == [
        ("tiny-000", 5, 2), ("tiny-001", 6, 2)]
    assert [j.label for j in jobs] == ["grid point 0 (seed=5)", "grid point 1 (seed=6)"]


def test_cli_sweep_writes_runs_csv_and_figure(tmp_path: Path, single_thread: None) -> None:
    res = CliRunner().invoke(app, ["sweep", str(_config(tmp_path)), "--grid", "fl.rounds=1,2",
                                   "--set", "fl.clients=3", "--out", str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 0, res.output
    (sweep,) = (tmp_path / "out").iterdir()
    assert sweep.name.startswith("tiny-sweep-")
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [r["fl.rounds"] for r in rows] == ["1", "2"]
    for row in rows:
        run = Path(row["run_dir"])
        assert run.parent == sweep and (run / "config.toml").exists()
        summary = json.loads((run / "summary.json").read_text())
        assert float(row["accuracy"]) == pytest.approx(summary["final"]["accuracy"])
        assert len((run / "metrics.jsonl").read_text().splitlines()) == int(row["fl.rounds"])
        assert "clients = 3" in (run / "config.toml").read_text()
    assert (sweep / "sweep.png").stat().st_size > 1000
    assert json.loads((sweep / "sweep.json").read_text())["grid"] == {"fl.rounds": [1, 2]}
    assert "sweep.csv" in res.output


def test_cli_sweep_reports_a_bad_grid_without_running(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["sweep", str(_config(tmp_path)), "--grid", "fl.rounds", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "key.path=v1,v2" in res.output


@pytest.mark.slow  # starts a Ray instance (~20-40 s on 2 loaded cores)
def test_sweep_on_ray_matches_the_sequential_sweep(tmp_path: Path, single_thread: None) -> None:
    pytest.importorskip("ray")
    cfg = _config(tmp_path)
    local = run_sweep(cfg, ["seed=1,2"], overrides=["fl.rounds=1"], out_root=tmp_path / "local")
    remote = run_sweep(cfg, ["seed=1,2"], overrides=["fl.rounds=1"], out_root=tmp_path / "ray", use_ray=True)
    assert [r.point for r in remote.runs] == [r.point for r in local.runs]
    for a, b in zip(local.runs, remote.runs):
        assert torch.equal(torch.load(a.run_dir / "final_weights.pt"), torch.load(b.run_dir / "final_weights.pt"))
