"""Async defenses: each one's rule, and their counts inside real (gated, deterministic) Hogwild runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from siegecraft.defenses.async_defenses import (
    ASYNC_DEFENSES,
    PendingUpdate,
    StalenessAwareLR,
    StalenessLROptions,
    UpdateNormFilter,
)
from siegecraft.engines.hogwild.config import HogwildConfig
from siegecraft.engines.hogwild.extensions import build_async_defenses
from siegecraft.engines.hogwild.trainer import HogwildTrainer


def _pending(norm: float, staleness: int = 0) -> PendingUpdate:
    return PendingUpdate(rank=0, staleness=staleness, norm_at=lambda lr: norm * lr)


def test_registry_lists_the_four_defenses():
    assert ASYNC_DEFENSES.names() == [
        "bounded_staleness", "shared_optimizer", "staleness_aware_lr", "update_norm_filter"
    ]
    with pytest.raises(ValueError, match="known: bounded_staleness"):
        build_async_defenses(["clip"])
    with pytest.raises(ValueError, match="allowed keys: max_staleness"):
        build_async_defenses(["bounded_staleness"], {"bounded_staleness": {"s": 3}})


def test_shared_optimizer_defense_switches_the_config():
    (defense,) = build_async_defenses(["shared_optimizer"])
    assert defense.configure(HogwildConfig()).shared_optimizer is True


def test_staleness_aware_lr_scales_by_one_over_one_plus_staleness():
    defense = StalenessAwareLR(StalenessLROptions())
    assert defense.review(_pending(1.0, staleness=0), 0.1).lr_scale == 1.0
    assert defense.review(_pending(1.0, staleness=3), 0.1).lr_scale == pytest.approx(0.25)
    tolerant = StalenessAwareLR(StalenessLROptions(tolerance=2))
    assert tolerant.review(_pending(1.0, staleness=3), 0.1).lr_scale == pytest.approx(0.5)


def test_norm_filter_drops_a_huge_update():
    (defense,) = build_async_defenses(["update_norm_filter"], {"update_norm_filter": {"warmup": 8, "k": 3}})
    assert isinstance(defense, UpdateNormFilter)
    defense.prepare(workers=2)
    for i in range(20):
        assert defense.review(_pending(1.0 + 0.01 * i), lr=0.1).accept
    assert not defense.review(_pending(1000.0), lr=0.1).accept
    assert not defense.review(_pending(3.5), lr=0.1).accept  # 0.35 > 3 x median 0.11
    assert defense.review(_pending(1.2), lr=0.1).accept
    assert int(defense.count[0]) == 23  # every reviewed norm enters the history, dropped ones too


def test_norm_filter_follows_a_sustained_growth():
    (defense,) = build_async_defenses(["update_norm_filter"], {"update_norm_filter": {"warmup": 4, "window": 8}})
    defense.prepare(workers=1)
    verdicts = [defense.review(_pending(1.0), lr=1.0).accept for _ in range(8)]
    verdicts += [defense.review(_pending(10.0), lr=1.0).accept for _ in range(12)]
    assert all(verdicts[:8]) and not verdicts[8]  # the first big one is dropped...
    assert all(verdicts[-6:])  # ...but once big updates are the norm they pass


def test_bounded_staleness_drops_exactly_the_stale_updates(fmnist_small, tiny_model, quick_cfg):
    """Gated 'phase' interleaving makes worker r's writes exactly r steps stale; s = 1 drops worker 2's."""
    train, val = fmnist_small
    small = train.subset(torch.arange(320))
    cfg = quick_cfg(scheduler="gated", workers=3, scheduler_options={"interleave": "phase"})
    (defense,) = build_async_defenses(["bounded_staleness"], {"bounded_staleness": {"max_staleness": 1}})
    result = HogwildTrainer(tiny_model(), small, val, cfg, defenses=[defense]).run()
    assert result.max_staleness == [0, 1, 2]
    assert result.dropped == {"bounded_staleness": [0, 0, 10]}
    assert result.applied == [10, 10, 0]
    assert result.steps == [10, 10, 10]


def test_norm_filter_counts_nothing_in_honest_steady_training(fmnist_small, tiny_model, quick_cfg):
    train, val = fmnist_small
    cfg = quick_cfg(scheduler="gated", workers=2)
    (defense,) = build_async_defenses(["update_norm_filter"], {"update_norm_filter": {"k": 10}})
    result = HogwildTrainer(tiny_model(), train, val, cfg, defenses=[defense]).run()
    assert sum(result.dropped["update_norm_filter"]) <= 2
    assert result.final["accuracy"] > 0.4


def test_async_defenses_import_first_in_a_fresh_interpreter():
    """The hogwild package imports this module; importing it first must not meet that cycle half-way."""
    code = "import siegecraft.defenses.async_defenses as d; print(len(d.ASYNC_DEFENSES.names()))"
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"
