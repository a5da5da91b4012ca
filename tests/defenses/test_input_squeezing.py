"""Feature squeezing: the two squeezers by hand, scores, threshold fitting and detection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from siegecraft.defenses import defense_catalog
from siegecraft.defenses.input_squeezing import (
    INPUT_DEFENSES,
    FeatureSqueezer,
    median_smooth,
    reduce_bit_depth,
    squeeze_inputs,
)


def test_reduce_bit_depth_by_hand() -> None:
    x = torch.tensor([0.0, 0.2, 0.49, 0.51, 0.9, 1.3, -0.2])
    assert reduce_bit_depth(x, 1).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert torch.allclose(reduce_bit_depth(x, 2), torch.tensor([0.0, 1 / 3, 1 / 3, 2 / 3, 1.0, 1.0, 0.0]))
    once = reduce_bit_depth(torch.rand(50), 4)
    assert torch.equal(reduce_bit_depth(once, 4), once)  # idempotent: already on the grid
    with pytest.raises(ValueError, match="bits"):
        reduce_bit_depth(x, 0)


def test_median_smooth_by_hand() -> None:
    x = torch.tensor([[[[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]])
    # 2x2 windows reach right/down (edge replicated); the upper middle of the four values is taken
    assert median_smooth(x, 2).tolist() == [[[[1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]]
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1.0
    assert torch.equal(median_smooth(impulse, 3), torch.zeros(1, 1, 5, 5))  # a lone bright pixel vanishes
    two = torch.stack([impulse[0, 0], torch.ones(5, 5)])[None]  # channels are filtered independently
    assert torch.equal(median_smooth(two, 3)[0, 1], torch.ones(5, 5))
    assert torch.equal(median_smooth(x, 1), x)
    with pytest.raises(ValueError, match="B, C, H, W"):
        median_smooth(torch.zeros(3, 3), 2)


def test_squeeze_inputs_chains_both_steps() -> None:
    x = torch.rand(2, 1, 6, 6)
    assert torch.equal(squeeze_inputs(x, bit_depth=3, median_kernel=2), median_smooth(reduce_bit_depth(x, 3), 2))
    assert torch.equal(squeeze_inputs(x), x)


def _linear_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    model.train()
    return model


def test_detects_fine_perturbations_that_squeezing_removes() -> None:
    model = _linear_model()
    levels = torch.randint(0, 16, (40, 1, 1, 1)).float() / 15  # flat images exactly on the 4-bit grid
    clean = levels.expand(40, 1, 8, 8).clone()
    w = model[1].weight[0].detach().view(1, 1, 8, 8)
    crafted = (clean + 0.02 * w.sign()).clamp(0, 1)  # below half a 4-bit level: squeezing undoes it
    sq = FeatureSqueezer(bit_depth=4, median_kernel=0)
    clean_scores, crafted_scores = sq.scores(model, clean), sq.scores(model, crafted)
    assert clean_scores.shape == (40,) and clean_scores.abs().max() < 1e-6
    assert (crafted_scores > 1e-3).float().mean() > 0.9
    threshold = sq.fit_threshold(model, clean, fpr=0.05)
    assert not sq.detect(model, clean, threshold).any()
    assert sq.detect(model, crafted, threshold).float().mean() > 0.9
    assert model.training  # the caller's mode is restored


def test_score_is_the_max_over_squeezers() -> None:
    model = _linear_model()
    x = torch.rand(16, 1, 8, 8)
    both = FeatureSqueezer(bit_depth=3, median_kernel=2).scores(model, x)
    bits = FeatureSqueezer(bit_depth=3, median_kernel=0).scores(model, x)
    median = FeatureSqueezer(bit_depth=0, median_kernel=2).scores(model, x)
    assert torch.allclose(both, torch.maximum(bits, median))
    assert (both <= 2.0).all()  # an L1 distance between two distributions


def test_threshold_keeps_clean_false_positives_at_most_fpr() -> None:
    model = _linear_model()
    clean = torch.rand(200, 1, 8, 8)
    sq = FeatureSqueezer()
    for fpr in (0.05, 0.2):
        threshold = sq.fit_threshold(model, clean, fpr=fpr)
        rate = float(sq.detect(model, clean, threshold).float().mean())
        assert fpr - 0.02 <= rate <= fpr
    with pytest.raises(ValueError, match="fpr"):
        sq.fit_threshold(model, clean, fpr=1.0)


def test_bad_squeezer_settings() -> None:
    with pytest.raises(ValueError, match="at least one squeezer"):
        FeatureSqueezer(bit_depth=0, median_kernel=0)
    with pytest.raises(ValueError, match="bits"):
        FeatureSqueezer(bit_depth=20)


def test_catalog_lists_every_kind() -> None:
    cat = defense_catalog()
    assert cat["feature_squeezing"] == "input" and INPUT_DEFENSES.get("feature_squeezing") is FeatureSqueezer
    assert cat["median"] == "aggregator" and cat["fltrust"] == "strategy" and cat["norm_clip"] == "strategy"
    assert {"bit_depth", "median_smoothing", "adaptive_norm_clip", "krum", "geomedian"} <= set(cat)
    assert cat.get("bounded_staleness") == "async"  # the Hogwild engineer's defenses, listed lazily
