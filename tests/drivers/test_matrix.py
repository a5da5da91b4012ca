"""`siegecraft matrix`: tokens, cell planning, the success metric, and small matrices end to end via the CLI."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from siegecraft.core.config import ConfigError, to_toml
from siegecraft.drivers import plugins as plugin_loader
from siegecraft.drivers.batch import JobResult
from siegecraft.drivers.cli import app
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.matrix import (
    Spec,
    attack_section,
    collect_cell,
    defense_section,
    parse_token,
    plan_matrix,
    split_tokens,
)
from siegecraft.engines.federated.extensions import ATTACKS
from tests.conftest import tiny_raw

runner = CliRunner()

PLUGIN = '''
from siegecraft.engines.federated.extensions import ATTACKS, Adversary


@ATTACKS.register("probe_attack")
class ProbeAttack(Adversary):
    """Benign uploads; reports its success under its own key, next to decoys under the usual keys."""

    success_metric = "probe_hits"

    def finish(self, ctx, final_model):
        return {"probe_hits": 0.25, "attack_success": 0.99, "hijack_acc": 0.98}
'''


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread; on a shared, loaded CPU two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def probe_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable plugin module registering the attack `probe_attack`; unregistered afterwards."""
    (tmp_path / "probe_matrix_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    yield "probe_matrix_plugin"
    ATTACKS.unregister("probe_attack")
    sys.modules.pop("probe_matrix_plugin", None)
    plugin_loader._loaded.discard("probe_matrix_plugin")


def test_parse_tokens() -> None:
    assert parse_token("krum:f=4:m=3") == [Spec("krum", {"f": 4, "m": 3})]
    assert parse_token("norm_clip:max_norm=2.5+median") == [Spec("norm_clip", {"max_norm": 2.5}), Spec("median")]
    assert parse_token("backdoor:target=x") == [Spec("backdoor", {"target": "x"})]  # bare strings, as --set reads them
    assert split_tokens(" mean, median ,") == ["mean", "median"]
    with pytest.raises(ConfigError, match="attacks: ':f=1': a component has no name; allowed: name"):
        parse_token(":f=1", "attacks")
    with pytest.raises(ConfigError, match="option 'f' of 'krum'; allowed: key=value"):
        parse_token("krum:f", "defenses")
    with pytest.raises(ConfigError, match="option 'a.b=1' of 'krum'"):
        parse_token("krum:a.b=1", "defenses")
    with pytest.raises(ConfigError, match="defenses = ' , ': an empty list; allowed: comma-separated"):
        split_tokens(" , ", "defenses")


def test_defense_sections() -> None:
    assert defense_section("none") == defense_section("fedavg") == {"aggregator": "mean", "options": {}, "names": []}
    assert defense_section("krum:f=2") == {"aggregator": "krum", "options": {"f": 2}, "names": []}
    assert defense_section("norm_clip:max_norm=2+fltrust+median") == {
        "aggregator": "median", "options": {"norm_clip": {"max_norm": 2}, "fltrust": {}},
        "names": ["norm_clip", "fltrust"],
    }
    with pytest.raises(ConfigError, match="defenses: 'krumm': unknown defense 'krumm'; allowed: .*fltrust.*krum"):
        defense_section("krumm")
    for token in ("median+krum", "mean+median"):
        with pytest.raises(ConfigError, match=re.escape(f"defenses: '{token}': two aggregators")):
            defense_section(token)
    with pytest.raises(ConfigError, match="'none' takes no options"):
        defense_section("none:f=1")


def test_attack_sections() -> None:
    base = build_experiment(tiny_raw(attack={"name": "sign_flip", "clients": [2], "options": {"scale": 9.0}}))
    assert attack_section(base, "none", [0]) == {"name": "none", "clients": [], "options": {}}
    assert attack_section(base, "sign_flip", [0, 1]) == {"name": "sign_flip", "clients": [0, 1], "options": {"scale": 9.0}}
    assert attack_section(base, "gaussian_noise:sigma=2:clients=3", [0]) == {
        "name": "gaussian_noise", "clients": [0, 1, 2], "options": {"sigma": 2},
    }
    assert attack_section(base, "backdoor:clients=[1,3]", [0])["clients"] == [1, 3]
    with pytest.raises(ConfigError, match="attacks: 'flip': unknown attack 'flip'; allowed: backdoor, .*sign_flip"):
        attack_section(base, "flip", [0])
    with pytest.raises(ConfigError, match="names 2 attacks; allowed: one attack per token"):
        attack_section(base, "sign_flip+backdoor", [0])
    for bad in ("clients=0", "clients=a", "clients=[]", "clients=true"):
        with pytest.raises(ConfigError, match=re.escape(f"attacks: 'sign_flip:{bad}': clients = ") + ".*; allowed: a count"):
            attack_section(base, f"sign_flip:{bad}", [0])


def test_plan_validates_every_cell_before_work() -> None:
    base = build_experiment(tiny_raw())
    plan = plan_matrix(base, ["none", "backdoor"], ["mean", "krum:f=1"])
    assert [(a, d) for a, d, _ in plan] == [("none", "mean"), ("none", "krum:f=1"), ("backdoor", "mean"),
                                           ("backdoor", "krum:f=1")]
    cell = plan[3][2].experiment
    assert cell.attack.clients == [0] and cell.defense.aggregator == "krum"  # 20% of 4 -> 1
    assert cell.name == "backdoor__krum_f=1" and cell.seed == base.seed and cell.fl == base.fl
    assert plan[3][2].label == "cell (attack 'backdoor', defense 'krum:f=1')"
    with pytest.raises(ConfigError, match=r"^cell \(attack 'sign_flip:scal=3', defense 'mean'\): "
                                          r"attack\.options\.scal = 3: unknown key; allowed keys: scale$"):
        plan_matrix(base, ["sign_flip:scal=3"], ["mean"])
    hog = build_experiment({"topology": "hogwild", "data": {"dataset": "digits"}})
    with pytest.raises(ConfigError, match="topology = 'hogwild': the matrix runs federated experiments"):
        plan_matrix(hog, ["none"], ["mean"])


def test_success_is_the_key_the_attack_names(tmp_path: Path) -> None:
    """Not a list of usual keys: `none` has no success even when `attack_success` is present."""
    base = build_experiment(tiny_raw())
    final = {"accuracy": 0.8, "attack_success": 0.4, "hijack_acc": 0.7, "per_class_accuracy": [0.1]}
    plan = plan_matrix(base, ["none", "sign_flip"], ["mean"])
    cells = [collect_cell(a, d, job, JobResult(job.label, tmp_path / "cells" / "r", {"final": final}), tmp_path)
             for a, d, job in plan]
    assert [(c.utility, c.attack_success, c.success_metric) for c in cells] == [
        (0.8, None, None), (0.8, 0.4, "attack_success")]
    assert cells[1].run_dir == "cells/r" and "per_class_accuracy" not in cells[1].final


def test_matrix_command_writes_one_report(tmp_path: Path) -> None:
    cfg = tmp_path / "base.toml"
    cfg.write_text(to_toml(tiny_raw(fl={"rounds": 1})))
    out = tmp_path / "out"
    res = runner.invoke(app, ["matrix", str(cfg), "--attacks", "none,sign_flip:scale=4", "--defenses", "mean,median",
                              "--adversaries", "1", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    (mdir,) = out.iterdir()
    assert mdir.name.startswith("matrix-tiny-")
    data = json.loads((mdir / "matrix.json").read_text())
    cells = {(c["attack"], c["defense"]): c for c in data["cells"]}
    assert set(cells) == {(a, d) for a in ("none", "sign_flip:scale=4") for d in ("mean", "median")}
    assert all(0 <= c["utility"] <= 1 for c in cells.values())
    assert cells[("none", "mean")]["attack_success"] is None and cells[("none", "mean")]["utility_drop"] == 0.0
    flipped = cells[("sign_flip:scale=4", "mean")]
    assert flipped["clients"] == [0] and flipped["success_metric"] == "attack_success"
    assert flipped["attack_success"] == flipped["final"]["attack_success"] and 0 <= flipped["attack_success"] <= 1
    assert flipped["utility"] < cells[("none", "mean")]["utility"]  # one reversed x4 upload in four sinks FedAvg
    assert flipped["utility_drop"] == pytest.approx(cells[("none", "mean")]["utility"] - flipped["utility"])
    for c in cells.values():
        summary = json.loads((mdir / c["run_dir"] / "summary.json").read_text())
        assert summary["final"]["accuracy"] == c["utility"]
    assert len(list((mdir / "cells").iterdir())) == 4 and (mdir / "figures" / "heatmap.png").stat().st_size > 0
    assert json.loads((mdir / "summary.json").read_text())["topology"] == "matrix"
    assert "[fl]" in (mdir / "config.toml").read_text()
    html = (mdir / "report.html").read_text()
    assert "sign_flip:scale=4" in html and "data:image/png;base64," in html and "attack success" in html
    assert f'href="{flipped["run_dir"]}/"' in html
    assert "sign_flip:scale=4" in res.output and "report.html" in res.output


def test_matrix_command_rejects_a_bad_token_before_work(tmp_path: Path) -> None:
    cfg = tmp_path / "base.toml"
    cfg.write_text(to_toml(tiny_raw()))
    for attacks, defenses, said in (("none", "kurm", "defenses: 'kurm': unknown defense 'kurm'; allowed:"),
                                    ("flip", "mean", "attacks: 'flip': unknown attack 'flip'; allowed:")):
        res = runner.invoke(app, ["matrix", str(cfg), "--attacks", attacks, "--defenses", defenses,
                                  "--out", str(tmp_path / "out")])
        assert res.exit_code == 2 and said in res.output
    assert not (tmp_path / "out").exists()


def test_plugin_attack_runs_in_worker_processes(tmp_path: Path, probe_plugin: str) -> None:
    """`--plugin mod --workers 2`: each worker imports the plugin; success is read from the plugin's key."""
    cfg = tmp_path / "base.toml"
    cfg.write_text(to_toml(tiny_raw(fl={"rounds": 1})))
    res = runner.invoke(app, ["matrix", str(cfg), "--attacks", "none,probe_attack", "--defenses", "mean",
                              "--plugin", probe_plugin, "--workers", "2", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert re.search(r"2/2 cell (none|probe_attack) x mean", res.output)  # the progress bar, cell by cell
    (mdir,) = (tmp_path / "out").iterdir()
    cells = {c["attack"]: c for c in json.loads((mdir / "matrix.json").read_text())["cells"]}
    probe = cells["probe_attack"]
    assert probe["success_metric"] == "probe_hits" and probe["attack_success"] == 0.25  # not the decoy 0.99
    assert probe["final"]["attack_success"] == 0.99 and probe["clients"] == [0]
    assert probe["utility"] == cells["none"]["utility"]  # a benign adversary changes nothing
