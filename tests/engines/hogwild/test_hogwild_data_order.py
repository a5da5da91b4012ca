"""Data orders: per-worker shuffles, conditioned (planted) biased batches, and the binomial tail."""

from __future__ import annotations

import math

import pytest
import torch

from siegecraft.engines.hogwild.data_order import DataOrder, PlantedRun, binomial_tail


def _labels(n: int = 640) -> torch.Tensor:
    return torch.arange(n) % 10


def test_each_worker_has_its_own_order_and_every_epoch_is_a_permutation():
    y = _labels()
    a, b = DataOrder(y, 32, seed=1, rank=0), DataOrder(y, 32, seed=1, rank=1)
    ea, eb = torch.cat(a.epoch(0)), torch.cat(b.epoch(0))
    assert sorted(ea.tolist()) == list(range(640)) == sorted(eb.tolist())
    assert not torch.equal(ea, eb)
    assert not torch.equal(ea, torch.cat(a.epoch(1)))
    assert torch.equal(ea, torch.cat(DataOrder(y, 32, seed=1, rank=0).epoch(0)))


def test_planted_batches_have_the_share_and_the_epoch_stays_a_permutation():
    y = _labels()
    run = PlantedRun(label=3, share=0.75, start_step=4, count=2)
    order = DataOrder(y, 32, seed=0, rank=2, planted=run)
    batches = order.epoch(0)
    assert sorted(torch.cat(batches).tolist()) == list(range(640))
    for step in (4, 5):
        assert int((y[batches[step]] == 3).sum()) == 24
    assert int((y[batches[3]] == 3).sum()) < 24
    plain = DataOrder(y, 32, seed=0, rank=2).epoch(1)
    assert all(torch.equal(p, q) for p, q in zip(order.epoch(1), plain))


def test_impossible_plants_are_refused():
    with pytest.raises(ValueError, match="cannot plant"):
        DataOrder(_labels(), 32, seed=0, rank=0, planted=PlantedRun(3, 1.0, 0, count=3))
    with pytest.raises(ValueError, match="one epoch"):
        DataOrder(_labels(), 32, seed=0, rank=0, planted=PlantedRun(3, 0.5, 19, count=2))


def test_binomial_tail():
    assert binomial_tail(10, 0.1, 0.1) == pytest.approx(1 - 0.9**10)
    assert binomial_tail(10, 1.0, 0.1) == pytest.approx(1e-10)
    assert binomial_tail(64, 0.0, 0.1) == 1.0
    p20 = binomial_tail(64, 0.2, 0.1)
    exact = sum(math.comb(64, k) * 0.1**k * 0.9 ** (64 - k) for k in range(13, 65))
    assert p20 == pytest.approx(exact, rel=1e-9)
    assert binomial_tail(64, 0.4, 0.1) < p20
