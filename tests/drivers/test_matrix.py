"""`siegecraft matrix`: token parsing, cell planning, and one small matrix end to end through the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from siegecraft.drivers.cli import app
from siegecraft.core.config import ConfigError, to_toml
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.matrix import (
    MatrixResult,
    Spec,
    attack_section,
    defense_section,
    parse_token,
    plan_matrix,
    run_matrix,
    split_tokens,
)

from tests.conftest import tiny_raw

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread; on a shared, loaded CPU two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_parse_tokens() -> None:
    assert parse_token("krum:f=4:m=3") == [Spec("krum", {"f": 4, "m": 3})]
    assert parse_token("norm_clip:max_norm=2.5+median") == [Spec("norm_clip", {"max_norm": 2.5}), Spec("median")]
    assert split_tokens(" mean, median ,") == ["mean", "median"]
    with pytest.raises(ValueError, match="empty name"):
        parse_token(":f=1")
    with pytest.raises(ValueError, match="empty list"):
        split_tokens(" , ")


def test_defense_sections() -> None:
    assert defense_section("none") == {"aggregator": "mean", "options": {}, "names": []}
    assert defense_section("krum:f=2") == {"aggregator": "krum", "options": {"f": 2}, "names": []}
    assert defense_section("norm_clip:max_norm=2+fltrust+median") == {
        "aggregator": "median", "options": {"norm_clip": {"max_norm": 2}, "fltrust": {}},
        "names": ["norm_clip", "fltrust"],
    }
    with pytest.raises(ValueError, match="unknown defense 'krumm'.*known: .*fltrust.*krum"):
        defense_section("krumm")
    with pytest.raises(ValueError, match="more than one aggregator"):
        defense_section("median+krum")


def test_attack_sections() -> None:
    base = build_experiment(tiny_raw(attack={"name": "sign_flip", "clients": [2], "options": {"scale": 9.0}}))
    assert attack_section(base, "none", [0]) == {"name": "none", "clients": [], "options": {}}
    assert attack_section(base, "sign_flip", [0, 1]) == {"name": "sign_flip", "clients": [0, 1], "options": {"scale": 9.0}}
    assert attack_section(base, "gaussian_noise:sigma=2:clients=3", [0]) == {
        "name": "gaussian_noise", "clients": [0, 1, 2], "options": {"sigma": 2},
    }
    with pytest.raises(ValueError, match="unknown attack 'flip'"):
        attack_section(base, "flip", [0])


def test_plan_validates_every_cell_before_work() -> None:
    base = build_experiment(tiny_raw())
    plan = plan_matrix(base, ["none", "backdoor"], ["mean", "krum:f=1"])
    assert [(a, d) for a, d, _ in plan] == [("none", "mean"), ("none", "krum:f=1"), ("backdoor", "mean"),
                                           ("backdoor", "krum:f=1")]
    assert plan[3][2].attack.clients == [0] and plan[3][2].defense.aggregator == "krum"  # 20% of 4 -> 1
    with pytest.raises(ConfigError, match="(?s)cell \\(attack 'sign_flip:scal=3'.*unknown key 'scal'"):
        plan_matrix(base, ["sign_flip:scal=3"], ["mean"])


def test_matrix_command_writes_one_report(tmp_path: Path) -> None:
    cfg = tmp_path / "base.toml"
    cfg.write_text(to_toml(tiny_raw(fl={"rounds": 1})))
    out = tmp_path / "out"
    res = runner.invoke(app, ["matrix", str(cfg), "--attacks", "none,sign_flip:scale=4", "--defenses", "mean,median",
                              "--adversaries", "1", "--out", str(out), "--quiet", "--workers", "2"])
    assert res.exit_code == 0, res.output
    (mdir,) = out.iterdir()
    data = json.loads((mdir / "matrix.json").read_text())
    cells = {(c["attack"], c["defense"]): c for c in data["cells"]}
    assert set(cells) == {(a, d) for a in ("none", "sign_flip:scale=4") for d in ("mean", "median")}
    assert all(0 <= c["utility"] <= 1 for c in cells.values())
    assert cells[("none", "mean")]["attack_success"] is None and cells[("none", "mean")]["utility_drop"] == 0.0
    flipped = cells[("sign_flip:scale=4", "mean")]
    assert flipped["clients"] == [0] and 0 <= flipped["attack_success"] <= 1
    assert flipped["utility"] < cells[("none", "mean")]["utility"]  # one reversed x4 upload in four sinks FedAvg
    assert flipped["utility_drop"] == pytest.approx(cells[("none", "mean")]["utility"] - flipped["utility"])
    assert len(list((mdir / "cells").iterdir())) == 4 and (mdir / "figures" / "heatmap.png").stat().st_size > 0
    html = (mdir / "report.html").read_text()
    assert "sign_flip:scale=4" in html and "data:image/png;base64," in html and "attack success" in html
    assert "sign_flip:scale=4" in res.output and "report.html" in res.output


def test_matrix_command_rejects_a_bad_token_before_work(tmp_path: Path) -> None:
    cfg = tmp_path / "base.toml"
    cfg.write_text(to_toml(tiny_raw()))
    res = runner.invoke(app, ["matrix", str(cfg), "--attacks", "none", "--defenses", "kurm",
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "unknown defense 'kurm'" in res.output
    assert not (tmp_path / "out").exists()


def test_parallel_cells_match_sequential_ones(tmp_path: Path) -> None:
    base = build_experiment(tiny_raw(fl={"rounds": 1}))
    seen: list[tuple[int, int]] = []
    args = (base, ["none", "sign_flip:scale=4"], ["mean", "median"])
    one = run_matrix(*args, out_root=tmp_path / "one", adversaries=[0])
    two = run_matrix(*args, out_root=tmp_path / "two", adversaries=[0], workers=2, worker_threads=1,
                     progress=lambda *, step, total, cell: seen.append((step, total)))
    def key(m: MatrixResult) -> list[tuple[object, ...]]:
        return [(c.attack, c.defense, c.utility, c.attack_success, c.clients) for c in m.cells]

    assert key(two) == key(one)  # every cell is one deterministic run, wherever it ran
    assert all((two.path / c.run_dir / "summary.json").is_file() for c in two.cells)
    assert [s for s, _ in seen] == [1, 2, 3, 4, 4] and {t for _, t in seen} == {4}
    for bad in ({"workers": 0}, {"workers": 2, "worker_threads": 0}):
        with pytest.raises(ValueError, match="must be at least 1"):
            run_matrix(*args, out_root=tmp_path / "bad", **bad)
    assert not (tmp_path / "bad").exists()  # refused before any work
