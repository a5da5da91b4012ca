"""`topology = "hogwild"` end to end through the experiment runner, and the shipped experiment files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siegecraft.core.config import ConfigError
from siegecraft.core.results.report import summary_rows
from siegecraft.drivers.experiment import build_experiment, load_experiment
from siegecraft.drivers.runner import run_experiment

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments" / "hogwild"


def _raw(**attack_options: object) -> dict:
    return {
        "name": "tiny-got", "seed": 3, "topology": "hogwild",
        "data": {"dataset": "fashion_mnist", "train_limit": 640, "test_limit": 200},
        "model": {"name": "cnn", "options": {"width": 8, "hidden": 32}},
        "train": {"epochs": 2, "lr": 0.1, "momentum": 0.9, "batch_size": 32, "lr_milestones": [1.0]},
        "hogwild": {"workers": 2, "scheduler": "gated", "eval_every_steps": 20},
        "attack": {"name": "game_of_threads", "options": attack_options},
        "defense": {"names": ["bounded_staleness"], "options": {"bounded_staleness": {"max_staleness": 8}}},
        "output": {"report": True},
    }


def test_run_experiment_writes_metrics_summary_and_timeline_figure(tmp_path):
    exp = build_experiment(_raw(variant=1, target_label=6, bias=1.0, conditioned_share=1.0))
    seen: list[dict] = []
    run = run_experiment(exp, out_root=tmp_path, progress=lambda **kw: seen.append(kw))
    summary = json.loads(run.summary_file.read_text())
    final = summary["final"]
    assert final["attack"]["triggered"] and final["attack"]["victims"] == [0]
    assert final["attack_status"] == "fired: 1 held (label-6 shares 1.000), 1 stale updates"
    assert final["attack"]["oracle_data_order"] is True
    assert final["dropped"] == {"bounded_staleness": [0, 0]}
    assert "degradation_points" in final and 0.0 <= final["target_rate"] <= 1.0
    records = run.read_metrics()
    assert any(r.get("tag") == "before release" for r in records)
    assert [r["event"] for r in records if "event" in r] == ["hold", "release", "stale update", "kill"]
    assert (run.figures / "hogwild_timeline.png").stat().st_size > 10_000
    assert run.report_file.exists()
    assert seen and seen[-1]["total"] == 2 * 2 * 20


def test_an_attack_that_never_fired_says_so_in_the_printed_summary(tmp_path):
    """Natural orders of 640 images never hold a batch of 32 that is all Shirt: the printed table says so."""
    exp = build_experiment(_raw(variant=1, target_label=6, bias=1.0))
    run = run_experiment(exp, out_root=tmp_path)
    summary = json.loads(run.summary_file.read_text())
    rows = dict(summary_rows(summary))
    assert rows["attack_status"].startswith("did not fire: none of ")
    assert "label-6 share >= 1.0 (largest 0." in rows["attack_status"]
    assert summary["final"]["attack"]["fired"] is False and "degradation_points" not in summary["final"]


@pytest.mark.parametrize(("change", "message"), [
    ({"attack": {"name": "game_of_threads", "options": {"variant": 1, "stages": 2}}}, "variant 2 dial"),
    ({"attack": {"name": "game_of_threads", "options": {"variant": 1, "n_held": 2}}},
     "attack.options.n_held = 2: at most hogwild.workers - 1 = 1"),
    ({"attack": {"name": "game_of_threads", "options": {"capture_from": 1.5}}},
     r"attack.options.capture_from = 1.5: the capture window \[1.5, 1.0\) epochs is empty"),
    ({"defense": {"names": ["bounded-stalenes"]}}, r"defense.names\[0\] = 'bounded-stalenes': not an async defense"),
    ({"defense": {"names": ["update_norm_filter"], "options": {"update_norm_filter": {"k": 0.5}}}},
     "defense.options.update_norm_filter.k"),
    ({"hogwild": {"scheduler": "free"}}, "hogwild.scheduler = 'free'.*os_signals"),
    ({"fl": {"rounds": 2}}, "fl = {.rounds.: 2}: unknown key; allowed keys: attack, data, defense, hogwild"),
    ({"train": {"steps": 5}}, "train.steps = 5: not used by topology 'hogwild'"),
])
def test_bad_hogwild_experiments_fail_before_any_work(change, message):
    raw = _raw(variant=1, bias=1.0)
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if key in raw and key == "hogwild" else value
    with pytest.raises(ConfigError, match=message):  # caught by config validation, before any work
        build_experiment(raw)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_experiments_validate(path):
    exp = load_experiment(path)
    assert exp.topology == "hogwild" and exp.hogwild.workers in (4, 8)
    if exp.attack.name == "game_of_threads":  # planted batches only where the file says oracle, first thing
        oracle = exp.attack.options.get("conditioned_share") is not None
        assert oracle == path.read_text().startswith("# ORACLE DATA ORDER")
        exp.attack.build().check(exp.settings())


def _final_loss(raw: dict, tmp_path: Path, lr: float) -> float:
    exp = build_experiment({**raw, "train": {**raw["train"], "lr": lr}, "output": {"report": False}})
    run = run_experiment(exp, out_root=tmp_path / f"lr{lr}")
    return json.loads(run.summary_file.read_text())["final"]["loss"]


def test_train_lr_drives_hogwild(tmp_path):
    """The one `[train]` section is what Hogwild workers optimise with: a different lr, a different model."""
    raw = _raw()
    raw["attack"], raw["defense"] = {"name": "none"}, {}
    raw["data"] = {**raw["data"], "train_limit": 256}
    raw["hogwild"] = {**raw["hogwild"], "eval_every_steps": 1000}
    assert _final_loss(raw, tmp_path, 0.02) != _final_loss(raw, tmp_path, 0.2)
