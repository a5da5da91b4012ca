"""Every aggregation rule against small cases computed by hand, and the robustness claims."""

from __future__ import annotations

import pytest
import torch

from siegecraft.defenses.aggregators import (
    AGGREGATORS,
    coordinate_median,
    geometric_median,
    krum,
    krum_scores,
    multi_krum,
    trimmed_mean,
    weighted_mean,
)
from siegecraft.engines.federated.aggregation import get_aggregator

# Five 1-D clients at 0, 1, 2, 10, 11 (the Krum cases below are worked out on these).
LINE = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
ONES5 = torch.ones(5)


def test_mean_is_sample_weighted() -> None:
    u = torch.tensor([[1.0, 0.0], [4.0, 2.0]])
    assert torch.allclose(weighted_mean(u, torch.tensor([3.0, 1.0])), torch.tensor([1.75, 0.5]))  # (3+4)/4, 2/4


def test_median_odd_and_even() -> None:
    odd = torch.tensor([[1.0, 5.0], [2.0, 7.0], [10.0, -1.0]])
    assert torch.equal(coordinate_median(odd, torch.ones(3)), torch.tensor([2.0, 5.0]))
    even = torch.tensor([[1.0], [2.0], [4.0], [10.0]])
    assert torch.equal(coordinate_median(even, torch.ones(4)), torch.tensor([3.0]))  # (2 + 4) / 2
    assert torch.equal(coordinate_median(torch.tensor([[7.0, 8.0]]), torch.ones(1)), torch.tensor([7.0, 8.0]))


def test_trimmed_mean_drops_beta_n_from_each_side() -> None:
    u = torch.tensor([[1.0, -50.0], [2.0, 3.0], [4.0, 5.0], [100.0, 4.0]])
    # beta 0.25, n 4: one value dropped at each end, per coordinate: mean(2, 4) = 3, mean(3, 4) = 3.5
    assert torch.allclose(trimmed_mean(u, torch.ones(4), beta=0.25), torch.tensor([3.0, 3.5]))
    # beta 0.1 * 4 rounds down to 0 trimmed: the plain mean
    assert torch.allclose(trimmed_mean(u, torch.ones(4), beta=0.1), u.mean(0))


@pytest.mark.parametrize("signs", [(1, 1), (1, -1), (-1, -1)])
def test_trimmed_mean_tolerates_beta_n_outliers(signs: tuple[int, int]) -> None:
    honest = torch.linspace(0.9, 1.1, 8)[:, None]
    outliers = torch.tensor([[signs[0] * 1e6], [signs[1] * 1e6]])
    u = torch.cat([honest, outliers])  # n = 10, beta * n = 2 outliers
    out = float(trimmed_mean(u, torch.ones(10), beta=0.2))
    assert 0.9 <= out <= 1.1
    # one outlier more than beta * n and the rule breaks: the bound is tight
    u3 = torch.cat([honest[:7], torch.full((3, 1), 1e6)])
    assert float(trimmed_mean(u3, torch.ones(10), beta=0.2)) > 1e5


def test_krum_scores_and_choice_by_hand() -> None:
    # f = 1, n = 5: each score sums squared distances to the n - f - 2 = 2 nearest others
    scores = krum_scores(LINE, f=1)
    assert torch.allclose(scores, torch.tensor([1 + 4, 1 + 1, 1 + 4, 1 + 64, 1 + 81], dtype=torch.float32))
    assert torch.equal(krum(LINE, ONES5, f=1), torch.tensor([1.0]))


def test_multi_krum_by_hand() -> None:
    # the m = 3 best scores are clients 1, 0 and 2 -> mean 1; weighted 1, 1, 2 on clients 0, 1, 2 -> 5 / 4
    assert torch.allclose(multi_krum(LINE, ONES5, f=1, m=3), torch.tensor([1.0]))
    assert torch.allclose(multi_krum(LINE, torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0]), f=1, m=3), torch.tensor([1.25]))
    # default m = n - f = 4 keeps client 3 (score 65) and drops client 4 (score 82): (0 + 1 + 2 + 10) / 4
    assert torch.allclose(multi_krum(LINE, ONES5, f=1), torch.tensor([3.25]))


def test_krum_picks_the_honest_cluster_when_f_adversaries_are_far() -> None:
    gen = torch.Generator().manual_seed(0)
    honest = 1.0 + 0.05 * torch.randn(7, 20, generator=gen)
    colluders = 100.0 + 0.001 * torch.randn(3, 20, generator=gen)  # tightly packed, far away
    u = torch.cat([colluders, honest])
    chosen = krum(u, torch.ones(10), f=3)
    assert any(torch.equal(chosen, h) for h in honest)
    kept = multi_krum(u, torch.ones(10), f=3)
    assert (kept - 1.0).abs().max() < 0.2
    # the mean, by contrast, is dragged 30 units away
    assert (weighted_mean(u, torch.ones(10)) - 1.0).abs().min() > 25


def test_krum_needs_more_than_f_plus_two_clients() -> None:
    with pytest.raises(ValueError, match="n > f \\+ 2"):
        krum(LINE[:3], torch.ones(3), f=1)


def test_geometric_median_by_hand() -> None:
    square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    assert torch.allclose(geometric_median(square, torch.ones(4)), torch.tensor([1.0, 1.0]), atol=1e-5)
    # on a line the geometric median is the median: 1 for 0, 1, 10 (the mean would be 3.67)
    line = torch.tensor([[0.0], [1.0], [10.0]])
    assert torch.allclose(geometric_median(line, torch.ones(3)), torch.tensor([1.0]), atol=1e-4)
    # weights count: 3 units at 0 outweigh 1 unit at 10
    two = torch.tensor([[0.0], [10.0]])
    assert torch.allclose(geometric_median(two, torch.tensor([3.0, 1.0])), torch.tensor([0.0]), atol=1e-4)


def test_geometric_median_resists_one_far_outlier() -> None:
    u = torch.tensor([[1.0, 1.0], [1.2, 0.8], [0.8, 1.2], [1.1, 1.1], [1e6, -1e6]])
    out = geometric_median(u, torch.ones(5))
    assert (out - 1.0).abs().max() < 0.3


def test_bad_inputs_are_errors() -> None:
    with pytest.raises(ValueError, match="beta"):
        trimmed_mean(LINE, ONES5, beta=0.5)
    with pytest.raises(ValueError, match="weights shape"):
        weighted_mean(LINE, torch.ones(4))
    with pytest.raises(ValueError, match="non-empty"):
        coordinate_median(torch.zeros(0, 3), torch.zeros(0))


def test_registry_and_bound_options() -> None:
    assert {"mean", "median", "trimmed_mean", "krum", "multi_krum", "geomedian"} <= set(AGGREGATORS.names())
    assert torch.equal(get_aggregator("krum", f=1)(LINE, ONES5), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="known: .*median"):
        get_aggregator("medain")
