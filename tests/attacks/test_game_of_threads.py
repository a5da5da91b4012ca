"""Game of Threads: both variants under gated (deterministic) and os-signals (real SIGSTOP/SIGCONT)."""

from __future__ import annotations

import signal

import pytest
import torch

from siegecraft.attacks.game_of_threads import GameOfThreadsAttack, GameOfThreadsConfig, planted_runs
from siegecraft.core.config import ConfigError
from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel, build_model
from siegecraft.drivers.experiment import build_experiment
from siegecraft.engines.hogwild.config import HogwildConfig
from siegecraft.engines.hogwild.runner import train_hogwild


@pytest.fixture(scope="module")
def data() -> tuple[ImageDataset, ImageDataset]:
    train = load_dataset("fashion_mnist", "train").subset(torch.arange(960))
    val = load_dataset("fashion_mnist", "test").subset(torch.arange(500))
    return train, val


def _model() -> SiegeModel:
    torch.manual_seed(0)
    return build_model("cnn", in_channels=1, num_classes=10, image_size=28, width=8, hidden=32)


def _cfg(scheduler: str, workers: int = 3) -> HogwildConfig:
    """Gated runs one worker at a time and is stable at lr 0.1; truly concurrent os-signals runs use 0.05."""
    lr = 0.1 if scheduler == "gated" else 0.05
    return HogwildConfig(workers=workers, epochs=2, lr=lr, momentum=0.9, batch_size=32, lr_milestones=[1.0, 1.5],
                         scheduler=scheduler, eval_every_s=None, timeout_s=120)


def _v1(**overrides: object) -> GameOfThreadsConfig:
    base: dict[str, object] = {"variant": 1, "target_label": 0, "bias": 1.0, "conditioned_share": 1.0,
                               "capture_from": 0.2}
    base.update(overrides)
    return GameOfThreadsConfig.model_validate(base)


def _run(data, cfg, attack=None, defenses=(), options=None) -> dict:
    train, val = data
    adversary = GameOfThreadsAttack(attack) if attack is not None else None
    return train_hogwild(cfg, adversary, defenses, train=train, val=val, model=_model(), defense_options=options)


def _events(summary: dict) -> list[str]:
    return [e["event"] for e in summary["events"]]


def test_variant1_gated_raises_the_target_rate_over_the_unattacked_run(data):
    clean = _run(data, _cfg("gated"))
    attacked = _run(data, _cfg("gated"), _v1())
    att = attacked["attack"]
    assert att["triggered"] and att["held_shares"] == [1.0] and att["stale_updates"] == 1
    assert _events(attacked) == ["hold", "release", "stale update", "kill"]
    assert attacked["target_rate"] >= clean["target_rate"] + 0.05
    assert attacked["target_rate"] >= attacked["target_rate_before_release"] + 0.05
    victim = att["victims"][0]
    held_at = attacked["events"][0]["local_step"]
    assert attacked["steps"][victim] == held_at + 1  # held from capture to release, then exactly one step


def test_variant1_under_os_signals_stops_the_victim_and_kills_it(data):
    summary = _run(data, _cfg("os_signals"), _v1())
    att = summary["attack"]
    assert att["triggered"] and att["phase"] == "finished"
    victim = att["victims"][0]
    assert summary["steps"][victim] == summary["events"][0]["local_step"] + 1
    assert _events(summary) == ["hold", "release", "stale update", "kill"]
    others = [s for r, s in enumerate(summary["steps"]) if r != victim]
    assert others == [60, 60]
    assert summary["exitcodes"][victim] == -signal.SIGKILL
    assert [c for r, c in enumerate(summary["exitcodes"]) if r != victim] == [0, 0]


def test_variant1_is_defused_by_shared_optimizer_and_caught_by_the_norm_filter(data):
    shared = _run(data, _cfg("gated"), _v1(), ["shared_optimizer"])
    assert abs(shared["degradation_points"]) < 5
    filtered = _run(data, _cfg("gated"), _v1(), ["update_norm_filter"])
    victim = filtered["attack"]["victims"][0]
    assert filtered["dropped"]["update_norm_filter"][victim] >= 1
    assert filtered["degradation_points"] == 0  # the stale update was the one dropped: nothing changed
    assert filtered["target_rate"] == filtered["target_rate_before_release"]


def test_variant2_stale_writes_are_dropped_by_bounded_staleness(data):
    attack = GameOfThreadsConfig(variant=2, n_held=2, stages=2, bias=1.0, conditioned_share=1.0, capture_from=0.2)
    summary = _run(data, _cfg("gated"), attack, ["bounded_staleness"],
                   {"bounded_staleness": {"max_staleness": 4}})
    att = summary["attack"]
    assert att["triggered"] and att["stages_done"] == 2 and att["stale_updates"] == 4
    assert _events(summary) == ["hold", "hold", "freeze", "snapshot read", "thaw", "release",
                                "snapshot read", "release", "kill"]
    dropped = summary["dropped"]["bounded_staleness"]
    assert [dropped[v] for v in att["victims"]] == [1, 1]  # stage 1 (held ~100 steps) dropped; stage 2 kept


def test_variant2_runs_under_os_signals(data):
    attack = GameOfThreadsConfig(variant=2, n_held=2, stages=1, bias=1.0, conditioned_share=1.0, capture_from=0.2)
    summary = _run(data, _cfg("os_signals"), attack)
    att = summary["attack"]
    assert att["triggered"] and att["phase"] == "finished" and att["stale_updates"] == 2
    assert "freeze" in _events(summary) and "thaw" in _events(summary)


def test_config_validation():
    with pytest.raises(ValueError, match="variant 2 dials"):
        GameOfThreadsConfig(variant=1, n_held=2)
    with pytest.raises(ValueError, match="os_signals"):
        _v1().check_against(_cfg("free"), 10)
    with pytest.raises(ValueError, match="needs at least one more"):
        GameOfThreadsConfig(variant=2, n_held=3).check_against(_cfg("gated", workers=3), 10)
    raw = {"topology": "hogwild", "hogwild": {"scheduler": "gated"}}
    with pytest.raises(ConfigError, match="attack.options.bais = 0.3: unknown key; allowed keys: bias"):
        build_experiment({**raw, "attack": {"name": "game_of_threads", "options": {"bais": 0.3}}})
    with pytest.raises(ConfigError, match="attack.name = 'hijackfl': unknown hogwild attack"):
        build_experiment({**raw, "attack": {"name": "hijackfl"}})
    assert build_experiment(raw).attack.name == "none"


def test_planted_runs_are_staggered_in_the_capture_window():
    runs = planted_runs(_v1(capture_from=0.25), _cfg("gated"), n_train=1600)
    assert [r.start_step for r in runs.values()] == [13, 14, 15]
    assert all(r.count == 1 and r.share == 1.0 for r in runs.values())
    assert planted_runs(_v1(conditioned_share=None), _cfg("gated"), 1600) == {}
