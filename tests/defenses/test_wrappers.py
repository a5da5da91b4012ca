"""Strategy wrappers (norm clipping, FLTrust) by hand, their composition, state and option checks."""

from __future__ import annotations

import math

import pytest
import torch

from siegecraft.defenses.aggregators import coordinate_median
from siegecraft.defenses.clipping import AdaptiveNormClip, NormClip, clip_rows
from siegecraft.defenses.fltrust import FLTrust, fltrust_aggregate, rescale_to, trust_scores
from siegecraft.engines.federated.strategy import FedAvg, FedAvgM
from siegecraft.engines.federated.wrappers import DefenseContext, split_root_dataset, wrap_strategy

R = 1 / math.sqrt(2)


def test_clip_rows_by_hand() -> None:
    out, clipped = clip_rows(torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]), 1.0)
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    assert clipped.tolist() == [True, False, False]


def test_fixed_norm_clip_around_fedavg() -> None:
    s = wrap_strategy(FedAvg(), ["norm_clip"], {"norm_clip": {"max_norm": 1.0}})
    assert isinstance(s, NormClip)
    upd = s.combine(torch.tensor([[30.0, 40.0], [0.2, 0.0]]), torch.tensor([1.0, 1.0]))
    assert torch.allclose(upd, torch.tensor([0.4, 0.4]))  # ([0.6, 0.8] + [0.2, 0]) / 2
    assert s.round_metrics() == {"clip_bound": 1.0, "clipped": 1}


def test_adaptive_clip_uses_the_round_median_norm() -> None:
    s = wrap_strategy(FedAvg(), ["adaptive_norm_clip"], {})
    assert isinstance(s, AdaptiveNormClip)
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -100.0]])  # norms 1, 2, 3, 100: median 2.5
    upd = s.combine(u, torch.ones(4))
    assert torch.allclose(upd, torch.tensor([1.0 + 2.5, 2.0 - 2.5]) / 4)
    assert s.round_metrics()["clip_bound"] == pytest.approx(2.5) and s.round_metrics()["clipped"] == 2
    # the bound follows the honest majority however large the outlier grows
    u[3, 1] = -1e9
    assert torch.allclose(s.combine(u, torch.ones(4)), upd)


def test_fltrust_by_hand() -> None:
    ref = torch.tensor([1.0, 0.0])
    u = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]])
    assert torch.allclose(trust_scores(u, ref), torch.tensor([1.0, 0.0, 0.0, R]))
    assert torch.allclose(rescale_to(u, 1.0)[0], torch.tensor([1.0, 0.0]))
    expected = (torch.tensor([1.0, 0.0]) + R * torch.tensor([R, R])) / (1 + R)  # [0.8787, 0.2929]
    assert torch.allclose(fltrust_aggregate(u, ref), expected)
    # the wrapper around FedAvg's weighted mean is exactly the rule, whatever the sample counts
    s = wrap_strategy(FedAvg(), ["fltrust"], {}, DefenseContext(server_update=lambda rnd, w: ref))
    assert isinstance(s, FLTrust)
    s.begin_round(1, torch.zeros(2))
    assert torch.allclose(s.combine(u, torch.tensor([5.0, 1.0, 9.0, 2.0])), expected)
    assert s.round_metrics()["trusted"] == 2
    assert torch.equal(fltrust_aggregate(-u[:1], ref), torch.zeros(2))  # nobody trusted: no step


def test_fltrust_scaling_cannot_buy_influence() -> None:
    ref = torch.tensor([1.0, 1.0])
    u = torch.tensor([[1.0, 0.9], [1.0, 1.1], [1e6, 0.0]])  # a huge, loosely aligned upload
    out = fltrust_aggregate(u, ref)
    assert out.norm() <= ref.norm() + 1e-6


def test_wrappers_compose_first_name_outermost() -> None:
    ctx = DefenseContext(server_update=lambda rnd, w: torch.tensor([1.0, 0.0]))
    s = wrap_strategy(FedAvg(aggregator=coordinate_median), ["norm_clip", "fltrust"], {"norm_clip": {"max_norm": 0.5}}, ctx)
    assert isinstance(s, NormClip) and isinstance(s.inner, FLTrust) and isinstance(s.inner.inner, FedAvg)
    s.begin_round(3, torch.zeros(2))
    u = torch.tensor([[4.0, 0.0], [2.0, 2.0], [-3.0, 0.0]])
    out = s.combine(u, torch.ones(3))
    # clip to 0.5, then FLTrust rescales to |ref| = 1 and drops the negative one; median of the two kept
    assert torch.allclose(out, torch.tensor([(1.0 + R) / 2, R / 2]))
    metrics = s.round_metrics()
    assert metrics["clipped"] == 3 and metrics["trusted"] == 2


def test_wrapper_delegates_apply_and_state() -> None:
    s = wrap_strategy(FedAvgM(momentum=0.5), ["norm_clip"], {"norm_clip": {"max_norm": 10.0}})
    w = s.apply(torch.zeros(1), torch.ones(1))
    w = s.apply(w, torch.ones(1))
    assert torch.allclose(w, torch.tensor([2.5]))
    t = wrap_strategy(FedAvgM(momentum=0.5), ["norm_clip"], {})
    t.load_state_dict(s.state_dict())
    assert torch.allclose(t.apply(torch.zeros(1), torch.zeros(1)), torch.tensor([0.75]))


def test_wrap_strategy_errors() -> None:
    with pytest.raises(ValueError, match="needs a server root dataset"):
        wrap_strategy(FedAvg(), ["fltrust"], {})
    with pytest.raises(ValueError, match="repeat"):
        wrap_strategy(FedAvg(), ["norm_clip", "norm_clip"], {})
    with pytest.raises(ValueError, match="known: adaptive_norm_clip, fltrust, norm_clip"):
        wrap_strategy(FedAvg(), ["norm_clipping"], {})
    with pytest.raises(ValueError, match="defense.options.norm_clip.maxnorm.*allowed keys: max_norm"):
        wrap_strategy(FedAvg(), ["norm_clip"], {"norm_clip": {"maxnorm": 1.0}})
    with pytest.raises(ValueError, match="greater than 0"):
        wrap_strategy(FedAvg(), ["norm_clip"], {"norm_clip": {"max_norm": -1.0}})


def test_root_split_is_disjoint_seeded_and_complete() -> None:
    from siegecraft.core.data.image_dataset import ImageDataset

    n = 50
    ds = ImageDataset(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 8, 8), torch.arange(n) % 10, 10, "ids")
    train, root = split_root_dataset(ds, 12, seed=1)
    assert root is not None and len(root) == 12 and len(train) == 38
    ids = lambda d: set(d.x[:, 0, 0, 0].long().tolist())
    assert ids(train).isdisjoint(ids(root)) and ids(train) | ids(root) == set(range(n))
    _, again = split_root_dataset(ds, 12, seed=1)
    assert again is not None and ids(again) == ids(root)
    assert split_root_dataset(ds, 0, seed=1) == (ds, None)
    with pytest.raises(ValueError, match="leaves nothing"):
        split_root_dataset(ds, n, seed=1)
