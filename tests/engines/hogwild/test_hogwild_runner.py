"""`topology = "hogwild"` end to end through the experiment runner, and the shipped experiment files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siegecraft.core.config import ConfigError
from siegecraft.drivers.experiment import build_experiment, load_experiment
from siegecraft.engines.hogwild.runner import run_hogwild
from siegecraft.drivers.runner import run_experiment
from siegecraft.topologies import validate_sections

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments" / "hogwild"


def _raw(**attack_options: object) -> dict:
    return {
        "name": "tiny-got", "seed": 3, "topology": "hogwild",
        "data": {"dataset": "fashion_mnist", "train_limit": 640, "test_limit": 200},
        "model": {"name": "cnn", "options": {"width": 8, "hidden": 32}},
        "hogwild": {"workers": 2, "epochs": 2, "lr": 0.1, "momentum": 0.9, "batch_size": 32,
                    "lr_milestones": [1.0], "scheduler": "gated", "eval_every_steps": 20},
        "attack": {"name": "game_of_threads", "options": attack_options},
        "defense": {"names": ["bounded_staleness"], "options": {"bounded_staleness": {"max_staleness": 8}}},
        "output": {"report": True},
    }


def test_run_experiment_writes_metrics_summary_and_timeline_figure(tmp_path):
    exp = build_experiment(_raw(variant=1, target_label=6, bias=1.0, conditioned_share=1.0))
    validate_sections(exp)
    seen: list[dict] = []
    run = run_experiment(exp, out_root=tmp_path, progress=lambda **kw: seen.append(kw))
    summary = json.loads(run.summary_file.read_text())
    final = summary["final"]
    assert final["attack"]["triggered"] and final["attack"]["victims"] == [0]
    assert final["dropped"] == {"bounded_staleness": [0, 0]}
    assert "degradation_points" in final and 0.0 <= final["target_rate"] <= 1.0
    records = run.read_metrics()
    assert any(r.get("tag") == "before release" for r in records)
    assert [r["event"] for r in records if "event" in r] == ["hold", "release", "stale update", "kill"]
    assert (run.figures / "hogwild_timeline.png").stat().st_size > 10_000
    assert run.report_file.exists()
    assert seen and seen[-1]["total"] == 2 * 2 * 20


@pytest.mark.parametrize(("change", "message"), [
    ({"attack": {"name": "game_of_threads", "options": {"variant": 1, "n_held": 2}}}, "variant 2 dials"),
    ({"defense": {"names": ["bounded-stalenes"]}}, "unknown async defense 'bounded-stalenes'"),
    ({"defense": {"names": ["update_norm_filter"], "options": {"update_norm_filter": {"k": 0.5}}}},
     "update_norm_filter.k"),
    ({"hogwild": {"scheduler": "free"}}, "os_signals"),
])
def test_bad_hogwild_experiments_fail_before_any_work(change, message):
    raw = _raw(variant=1, bias=1.0)
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if key == "hogwild" else value
    with pytest.raises(ConfigError, match=message):  # caught by config validation, before any work
        build_experiment(raw)
    exp = build_experiment(raw, check_sections=False)
    with pytest.raises(ValueError, match=message):
        run_hogwild(exp, run=None)  # type: ignore[arg-type]  # the runner re-checks before touching data


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_experiments_validate(path):
    exp = load_experiment(path)
    validate_sections(exp)
    assert exp.topology == "hogwild" and exp.hogwild["workers"] == 4
