"""Game of Threads: both variants under gated (deterministic) and os-signals (real SIGSTOP/SIGCONT)."""

from __future__ import annotations

import signal

import pytest
import torch

from siegecraft.attacks.game_of_threads import (
    GameOfThreads,
    GameOfThreadsAttack,
    GameOfThreadsConfig,
    planted_runs,
)
from siegecraft.core.config import ConfigError
from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel, build_model
from siegecraft.drivers.experiment import build_experiment
from siegecraft.engines.hogwild.config import HogwildConfig
from siegecraft.engines.hogwild.policy import GO, HOLD, Decision, WorkerControl
from siegecraft.engines.hogwild.runner import train_hogwild
from siegecraft.engines.hogwild.shared_state import SharedState
from siegecraft.engines.hogwild.traps import READ_TRAP, TrapEvent


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


def test_variant1_with_n_held_workers_lands_n_stale_updates(data):
    summary = _run(data, _cfg("gated"), _v1(n_held=2))
    att = summary["attack"]
    assert len(att["victims"]) == 2 and att["held_shares"] == [1.0, 1.0] and att["stale_updates"] == 2
    assert _events(summary) == ["hold", "hold", "release", "stale update", "stale update", "kill"]
    for victim, hold in zip(att["victims"], [e for e in summary["events"] if e["event"] == "hold"], strict=True):
        assert summary["steps"][victim] == hold["local_step"] + 1  # held, then exactly one (stale) step


def test_leader_lr_clock_takes_the_stale_learning_rate_away(data):
    """Same schedule (gated: bit-reproducible) with the victim's lr following the leader: its update is 100x smaller."""
    own = _run(data, _cfg("gated"), _v1())
    leader = _run(data, _cfg("gated").model_copy(update={"lr_clock": "leader"}), _v1())
    assert own["target_rate"] >= own["target_rate_before_release"] + 0.05
    assert abs(leader["target_rate"] - leader["target_rate_before_release"]) < 0.02
    assert abs(leader["degradation_points"]) < 2


class _Channel:
    def __init__(self) -> None:
        self.shares: dict[int, float] = {}

    def share(self, rank: int, label: int) -> float:
        del label
        return self.shares[rank]


class _Control(WorkerControl):
    """A scheduler stand-in: records releases and marks; progress and shares are set by the test."""

    def __init__(self, workers: int = 4, steps_per_epoch: int = 100) -> None:
        self.workers, self.steps_per_epoch = workers, steps_per_epoch
        self.state = SharedState.create(workers)
        self.channel = _Channel()  # type: ignore[assignment]
        self.held: dict[int, TrapEvent] = {}
        self.released: list[int] = []
        self.marks: list[str] = []

    def release(self, ranks) -> None:
        for r in ranks:
            self.held.pop(r, None)
            self.released.append(r)

    def kill(self, rank: int) -> None: ...
    def pause(self, rank: int) -> None: ...
    def resume(self, rank: int) -> None: ...
    def finished(self, rank: int) -> bool:
        return False
    def evaluate(self, tag: str) -> None: ...
    def mark(self, label: str, **info: object) -> None:
        self.marks.append(label)

    def read(self, policy: GameOfThreads, rank: int, step: int, share: float) -> Decision:
        self.channel.shares[rank] = share  # type: ignore[attr-defined]
        self.state.steps[rank] = step
        event = TrapEvent(rank, READ_TRAP, step, 0)
        decision = policy.on_trap(event, self)
        if decision is HOLD:
            self.held[rank] = event
        return decision


def _policy(selection: str, n_held: int = 2) -> GameOfThreads:
    hog = HogwildConfig(workers=4, epochs=1, lr_milestones=[0.5], scheduler="gated")
    cfg = GameOfThreadsConfig(variant=1, target_label=6, bias=0.3, n_held=n_held, selection=selection,
                              capture_from=0.1)
    return GameOfThreads(cfg, hog)


def test_best_selection_keeps_the_most_biased_batches_and_lets_the_weakest_go():
    ctl, policy = _Control(), _policy("best")
    assert ctl.read(policy, 0, 5, 0.9) is GO  # before the window (0.1 epochs = step 10)
    assert ctl.read(policy, 0, 10, 0.4) is HOLD
    assert ctl.read(policy, 1, 12, 0.2) is GO  # below bias
    assert ctl.read(policy, 1, 13, 0.3) is HOLD
    assert ctl.read(policy, 2, 15, 0.5) is HOLD  # more biased than rank 1's 0.3: swap
    assert ctl.released == [1] and policy.victims == [0, 2]
    assert ctl.read(policy, 3, 16, 0.35) is GO  # not above the weakest held (0.4)
    policy.on_tick(ctl)
    assert policy.phase == "collect"  # ranks 1 and 3 can still reach the window (it ends at step 50)
    ctl.state.steps[1], ctl.state.steps[3] = 50, 60
    policy.on_tick(ctl)
    assert policy.phase == "wait" and policy.swaps == 1 and ctl.marks.count("swap") == 1
    assert policy.status() == "did not fire: 2 held, but no stale update landed (phase wait)"


def test_first_selection_stops_looking_once_n_are_held():
    ctl, policy = _Control(), _policy("first")
    ctl.read(policy, 0, 10, 0.4)
    ctl.read(policy, 1, 13, 0.3)
    assert policy.phase == "wait"
    assert ctl.read(policy, 2, 15, 1.0) is GO and ctl.released == []


def test_status_says_why_an_attack_did_not_fire():
    ctl, policy = _Control(), _policy("best")
    assert policy.status() == "did not fire: no batch reached the capture window"
    ctl.read(policy, 0, 20, 0.25)
    ctl.read(policy, 1, 21, 0.125)
    assert policy.status() == ("did not fire: none of 2 batches in the capture window had a label-6 share "
                               ">= 0.3 (largest 0.250)")
    summary = policy.summary()
    assert summary["fired"] is False and summary["best_share_seen"] == 0.25


def test_config_validation():
    with pytest.raises(ValueError, match="variant 2 dial"):
        GameOfThreadsConfig(variant=1, stages=2)
    with pytest.raises(ValueError, match="os_signals"):
        _v1().check_against(_cfg("free"), 10)
    with pytest.raises(ValueError, match="at most hogwild.workers - 1 = 2"):
        GameOfThreadsConfig(variant=2, n_held=3).check_against(_cfg("gated", workers=3), 10)
    with pytest.raises(ValueError, match="capture window"):
        GameOfThreadsConfig(capture_from=1.0).check_against(_cfg("gated"), 10)  # first milestone at 1.0
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
