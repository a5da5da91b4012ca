"""HijackFL: benign uploads, snapshot, class mapping, anchors, cloaks, execution, metrics, a full tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from siegecraft.attacks.hijackfl import (
    BlendPatterns,
    ClassSampler,
    CloakedHijacker,
    CloakSchedule,
    CloakView,
    FeatureScale,
    HijackFL,
    RawHijacker,
    adapt_to_input,
    class_confidence,
    cloak_loss,
    greedy_mapping,
    index_mapping,
    load_hijack_data,
    mean_anchors,
    prediction_counts,
    search_cloaks,
    synthetic_anchor_inputs,
)
from siegecraft.attacks.hijackfl.mapping import ClassMapping
from siegecraft.attacks.hijackfl.metrics import confusion_matrix, mean_l2, ssim
from siegecraft.core.config import ConfigError
from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.models import SiegeModel, build_model, flat_params
from siegecraft.core.results import RunDir
from siegecraft.core.training import TrainConfig, local_train
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated import Federation
from siegecraft.engines.federated.extensions import ATTACKS, build_adversary
from tests.conftest import tiny_raw

FAST = {"num_classes": 3, "samples_per_class": 30, "test_per_class": 20, "epochs": 2, "anchor_steps": 5}


@pytest.fixture(scope="module")
def digits_model() -> SiegeModel:
    """A small cnn trained briefly on sklearn digits: the 'snapshot' of the unit tests."""
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=8, width=8, hidden=32)
    train = load_dataset("digits", "train")
    local_train(model, train, TrainConfig(lr=0.05, momentum=0.9, epochs=3, batch_size=32), seed=0)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def hijack3():
    """Three Fashion-MNIST classes shrunk to the 8x8 digits model: a task it was never trained on."""
    return load_hijack_data("fashion_mnist", 3, (1, 8, 8), samples_per_class=60, test_per_class=40)


# -- class mapping -----------------------------------------------------------------------------
def test_greedy_mapping_takes_largest_cells_one_to_one_and_keeps_a_negative_class() -> None:
    counts = torch.tensor([
        [5, 9, 0, 0, 1],
        [1, 8, 7, 0, 0],
        [0, 0, 6, 0, 2],
    ])
    m = greedy_mapping(counts)
    # 9 -> (0,1); 8 is (1,1) but column 1 is taken, so 7 -> (1,2); 6 is (2,2) taken -> 2 -> (2,4)
    assert m.targets == (1, 2, 4)
    assert m.negative == 0  # unused columns 0 and 3; column 0 has the larger sum
    assert m.original_labels(torch.tensor([2, 0])).tolist() == [4, 1]


def test_mapping_needs_one_spare_original_class() -> None:
    with pytest.raises(ValueError, match="at least 4 original classes"):
        greedy_mapping(torch.ones(3, 3, dtype=torch.long))
    assert index_mapping(3, 10) == ClassMapping((0, 1, 2), 3, 10)


def test_prediction_counts_cover_every_sample(digits_model: SiegeModel, hijack3) -> None:
    counts = prediction_counts(digits_model, hijack3.train.x, hijack3.train.y, 3)
    assert counts.shape == (3, 10) and int(counts.sum()) == len(hijack3.train)
    assert counts.sum(1).tolist() == torch.bincount(hijack3.train.y).tolist()


# -- data adaptation ---------------------------------------------------------------------------
def test_hijacking_data_of_another_shape_is_adapted_to_the_model_input() -> None:
    data = load_hijack_data("mnist5k", 2, (3, 32, 32), samples_per_class=5, test_per_class=3)
    assert data.train.shape == (3, 32, 32) and len(data.train) == 10 and len(data.test) == 6
    assert data.train.y.unique().tolist() == [0, 1]
    assert 0.0 <= float(data.train.x.min()) and float(data.train.x.max()) <= 1.0
    same = adapt_to_input(data.test, (3, 32, 32))
    assert same is data.test
    with pytest.raises(ValueError, match="square"):
        adapt_to_input(data.test, (3, 32, 16))


# -- anchors, cloaks, execution ----------------------------------------------------------------
def test_synthetic_anchor_inputs_reach_high_confidence(digits_model: SiegeModel) -> None:
    classes = [3, 7]
    p = synthetic_anchor_inputs(digits_model, classes, steps=60, lr=0.1, seed=0)
    assert p.shape == (2, 1, 8, 8) and float(p.min()) >= 0 and float(p.max()) <= 1
    probs = digits_model(p).softmax(1)
    assert probs[0, 3] > 0.9 and probs[1, 7] > 0.9, probs


class _GatedModel(SiegeModel):
    """Class 1 is reachable only through one ReLU that is dead unless the mean pixel exceeds `gate`."""

    def __init__(self, gate: float) -> None:
        super().__init__(in_channels=1, num_classes=2, image_size=8, feature_dim=1)
        self.gate = gate
        self.head = torch.nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[0.0], [20.0]]))
            self.head.bias.copy_(torch.tensor([2.0, -1.0]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(10.0 * (x.flatten(1).mean(1, keepdim=True) - self.gate))


def test_stalled_synthetic_anchor_is_restarted_and_others_are_kept() -> None:
    # The gate sits just above class 1's first random start, so that start gets no gradient and stalls.
    first_start = torch.sigmoid(torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))[1])
    retry_means = [float(torch.sigmoid(torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(r))).mean())
                   for r in range(1, 5)]
    model = _GatedModel(gate=float(first_start.mean()) + 1e-3)
    assert max(retry_means) > model.gate  # some fresh start lies past the gate
    single = synthetic_anchor_inputs(model, [0, 1], steps=100, lr=0.05, seed=0, restarts=0)
    restarted = synthetic_anchor_inputs(model, [0, 1], steps=100, lr=0.05, seed=0, restarts=4)
    stalled, fixed = class_confidence(model, single, [0, 1]), class_confidence(model, restarted, [0, 1])
    assert float(stalled[1]) < 0.5 and torch.equal(single[1], first_start)  # no gradient: it never moved
    assert float(fixed[1]) > 0.9, fixed
    assert float(fixed[0]) > 0.9 and torch.equal(restarted[0], single[0])  # the class that succeeded is untouched
    with pytest.raises(ValueError, match="restarts"):
        synthetic_anchor_inputs(model, [0, 1], steps=1, restarts=-1)


def test_anchor_confidences_are_summarised_and_a_stall_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    adv = HijackFL([1], HijackFL.options_model())
    with caplog.at_level("WARNING", logger="siegecraft.attacks.hijack"):
        adv.note_anchor_confidence([4, 7], torch.tensor([[0.99, 0.95], [0.98, 0.97]]))
    assert not caplog.records
    assert adv.notes["anchor_sets"] == 2 and adv.notes["anchor_confidence_min"] == pytest.approx(0.95)
    with caplog.at_level("WARNING", logger="siegecraft.attacks.hijack"):
        adv.note_anchor_confidence([4, 7], torch.tensor([[0.99, 0.10], [0.98, 0.97]]))
    assert len(caplog.records) == 1 and "original class 7 reaches only 0.10" in caplog.records[0].getMessage()
    assert adv.notes["anchor_confidence"] == pytest.approx((0.99 + 0.10 + 0.98 + 0.97) / 4)


def test_mean_anchors_are_class_means_of_features(digits_model: SiegeModel) -> None:
    data = load_dataset("digits", "test")
    a = mean_anchors(digits_model, data, [0, 5])
    expected = digits_model.features(data.x[data.y == 5]).mean(0)
    assert a.shape == (2, digits_model.feature_dim) and torch.allclose(a[1], expected, atol=1e-5)
    with pytest.raises(ValueError, match="no sample of original class 9"):
        mean_anchors(digits_model, data.filter_classes([0, 1], relabel=False), [9])


@pytest.mark.parametrize("contrast", [0.0, 10.0])
def test_cloak_search_lowers_its_loss_and_beats_uncloaked_queries(
    digits_model: SiegeModel, hijack3, contrast: float
) -> None:
    mapping = greedy_mapping(prediction_counts(digits_model, hijack3.train.x, hijack3.train.y, 3))
    own = load_dataset("digits", "train")
    anchors = mean_anchors(digits_model, own, [*mapping.targets, mapping.negative])
    cloaks, losses = search_cloaks(
        digits_model, hijack3.train, anchors[:-1], anchors[-1], alpha=0.5, beta=1.0, contrast=contrast,
        schedule=CloakSchedule(epochs=100, lr=0.1, batch_size=96, schedule="cosine"), seed=0,
    )  # 96 / 3 classes = 32 samples of each class per step, every cloak applied to all 96
    assert len(cloaks) == 3 and cloaks.images().shape == (3, 1, 8, 8) and len(losses) == 200
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    x, y = hijack3.test.x, hijack3.test.y
    cloaked = (CloakedHijacker(mapping, cloaks).predict(digits_model, x) == y).float().mean()
    raw = (RawHijacker(mapping).predict(digits_model, x) == y).float().mean()
    assert cloaked > raw + 0.15, (float(cloaked), float(raw))


def test_cloak_loss_matches_its_definition_by_hand() -> None:
    dist = torch.tensor([[1.0, 4.0, 2.0], [3.0, 0.5, 5.0]])  # 2 cloaks x 3 samples
    dist_neg = torch.tensor([[9.0, 1.0, 2.0], [6.0, 7.0, 3.0]])
    labels = torch.tensor([0, 1, 0])
    authors = cloak_loss(dist, dist_neg, labels, beta=0.5, contrast=0.0, tau=1.0)
    # cloak 0: pull mean(1, 2) = 1.5, push over sample 1 = 1.0; cloak 1: pull 0.5, push mean(6, 3) = 4.5
    assert float(authors) == pytest.approx((1.5 + 0.5 * 1.0) + (0.5 + 0.5 * 4.5))
    ce = torch.nn.functional.cross_entropy(-dist.T / 2.0, labels)
    full = cloak_loss(dist, dist_neg, labels, beta=0.5, contrast=3.0, tau=2.0)
    assert float(full) == pytest.approx(float(authors) + 3.0 * 2 * float(ce))


def test_contrast_term_prefers_the_own_cloak_nearest() -> None:
    labels = torch.tensor([0, 1])
    right = torch.tensor([[1.0, 5.0], [5.0, 1.0]])  # each sample nearest its own cloak's anchor
    wrong = right.flip(0)
    zeros = torch.zeros(2, 2)
    def k_way(d: torch.Tensor) -> float:
        return float(cloak_loss(d, zeros, labels, beta=0.0, contrast=1.0, tau=1.0)
                     - cloak_loss(d, zeros, labels, beta=0.0, contrast=0.0, tau=1.0))
    assert k_way(right) < 0.1
    assert k_way(wrong) > 4.0


def test_balanced_sampler_draws_every_class_equally(hijack3) -> None:
    x, y = ClassSampler(hijack3.train, 3, seed=0).balanced(5)
    assert x.shape[0] == 15 and torch.equal(y, torch.tensor([0] * 5 + [1] * 5 + [2] * 5))
    pool = {c: hijack3.train.x[hijack3.train.y == c] for c in range(3)}
    for xi, yi in zip(x, y):  # each drawn image really belongs to its label's class
        assert (pool[int(yi)] == xi).flatten(1).all(1).any()


def test_shifted_samples_are_translated_copies_within_the_limit(hijack3) -> None:
    sampler = ClassSampler(hijack3.train, 3, seed=0)
    x = torch.zeros(6, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0  # a 2x2 blob in the middle: every shift of up to 2 keeps it whole
    assert torch.equal(sampler.shifted(x, 0), x)
    out = sampler.shifted(x, 2)
    assert out.shape == x.shape
    offsets = set()
    for img in out:
        rows, cols = img[0].nonzero(as_tuple=True)
        assert img.sum() == 4 and rows.max() - rows.min() == 1 and cols.max() - cols.min() == 1
        dy, dx = int(rows.min()) - 3, int(cols.min()) - 3
        assert abs(dy) <= 2 and abs(dx) <= 2
        offsets.add((dy, dx))
    assert len(offsets) > 1  # each sample draws its own offset


def test_standardised_feature_scale_has_zero_mean_and_unit_spread(digits_model: SiegeModel) -> None:
    x = load_dataset("digits", "train").x
    scale = FeatureScale.standardize(digits_model, x)
    f = scale(digits_model.features(x))
    live = scale.scale > scale.scale.min()  # features above the floor
    assert torch.allclose(f.mean(0), torch.zeros(f.shape[1]), atol=1e-4)
    assert torch.allclose(f.std(0)[live], torch.ones(int(live.sum())), atol=1e-3)


def test_blend_keeps_pixels_in_range_and_alpha_weights_the_raw_input() -> None:
    patterns = BlendPatterns(torch.full((2, 1, 4, 4), 50.0), alpha=0.3)  # sigmoid -> 1
    x = torch.zeros(5, 1, 4, 4)
    out = patterns.apply(x, 1)
    assert torch.allclose(out, torch.full_like(x, 0.7))
    assert float(patterns.apply(torch.ones_like(x), 0).max()) <= 1.0


def test_execution_decodes_k_queries_by_the_mapped_class_probability() -> None:
    mapping = ClassMapping((2, 0), negative=1, num_original=3)
    hijacker = CloakedHijacker(mapping, BlendPatterns(torch.zeros(2, 1, 2, 2), 0.5))
    # probs[q, b, c]: 2 cloaks x 2 inputs x 3 original classes
    probs = torch.tensor([
        [[0.1, 0.2, 0.7], [0.3, 0.4, 0.3]],   # cloak 0 (mapped to class 2)
        [[0.5, 0.4, 0.1], [0.6, 0.1, 0.3]],   # cloak 1 (mapped to class 0)
    ])
    assert hijacker.decode(probs).tolist() == [0, 1]
    assert hijacker.queries(torch.zeros(4, 1, 2, 2)).shape == (2, 4, 1, 2, 2)
    # top-1 decoding: input 0 under cloak 1 has top-1 class 0 == its mapped class, cloak 0's top-1 is 2 -> both
    # count, larger wins; input 1: only cloak 1's top-1 (0) is its mapped class
    top1 = CloakedHijacker(mapping, BlendPatterns(torch.zeros(2, 1, 2, 2), 0.5), decoding="top1")
    assert top1.decode(probs).tolist() == [0, 1]
    probs[0, 1] = torch.tensor([0.1, 0.1, 0.8])
    assert top1.decode(probs).tolist()[1] == 0 and hijacker.decode(probs).tolist()[1] == 0


def test_several_cloak_sets_send_every_cloak_and_sum_their_scores() -> None:
    mapping = ClassMapping((2, 0), negative=1, num_original=3)
    a = BlendPatterns(torch.zeros(2, 1, 2, 2), 0.5)
    b = BlendPatterns(torch.ones(2, 1, 2, 2), 0.5)
    hijacker = CloakedHijacker(mapping, [a, b])
    q = hijacker.queries(torch.zeros(3, 1, 2, 2))
    assert q.shape == (4, 3, 1, 2, 2)  # 2 sets x 2 cloaks
    assert torch.equal(q[0], a.apply(torch.zeros(3, 1, 2, 2), 0)) and torch.equal(q[3], b.apply(torch.zeros(3, 1, 2, 2), 1))
    # one input; set A prefers class 0 a little (0.6 vs 0.5), set B prefers class 1 a lot (0.9 vs 0.1)
    probs = torch.tensor([
        [[0.2, 0.2, 0.6]],  # set A, cloak 0 (mapped to 2): 0.6
        [[0.5, 0.3, 0.2]],  # set A, cloak 1 (mapped to 0): 0.5
        [[0.8, 0.1, 0.1]],  # set B, cloak 0: 0.1
        [[0.9, 0.1, 0.0]],  # set B, cloak 1: 0.9
    ])
    assert CloakedHijacker(mapping, a).decode(probs[:2]).tolist() == [0]
    assert torch.allclose(hijacker.scores(probs), torch.tensor([[0.7, 1.4]]))
    assert hijacker.decode(probs).tolist() == [1]
    with pytest.raises(ValueError, match="at least one"):
        CloakedHijacker(mapping, [])
    with pytest.raises(ValueError, match="3 cloaks for 2"):
        CloakedHijacker(mapping, [a, BlendPatterns(torch.zeros(3, 1, 2, 2), 0.5)])


# -- metrics -----------------------------------------------------------------------------------
def test_ssim_and_l2() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(4, 1, 28, 28, generator=gen)
    assert torch.allclose(ssim(a, a), torch.ones(4), atol=1e-5)
    noisy = (a + 0.3 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    assert float(ssim(a, noisy).max()) < 0.9
    assert mean_l2(a, a) == 0.0 and abs(mean_l2(torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)) - 2.0) < 1e-6
    cm = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2)
    assert cm.tolist() == [[1, 1], [0, 1]]


# -- the adversary in the federation -----------------------------------------------------------
def _federation(tmp_path: Path, options: dict, **overrides) -> Federation:
    raw = tiny_raw(attack={"name": "hijackfl", "clients": [1], "options": options}, **overrides)
    exp = build_experiment(raw)
    return Federation(exp, RunDir.create(tmp_path, "t"))


def _hijacker(tmp_path: Path, options: dict) -> tuple[HijackFL, CloakedHijacker]:
    fed = _federation(tmp_path, {**FAST, "attack_round": 1, **options})
    adv = fed.adversary
    assert isinstance(adv, HijackFL)
    adv.setup(fed.ctx)
    weights = fed.global_weights.clone()
    adv.client_update(fed.ctx, 1, 1, weights, lambda: fed.trainer.train(1, 1, weights))
    assert isinstance(adv.hijacker, CloakedHijacker)
    return adv, adv.hijacker


def test_cloak_sets_are_independent_searches(tmp_path: Path) -> None:
    adv, hijacker = _hijacker(tmp_path, {"cloak_sets": 2})
    assert adv.data is not None and len(hijacker.sets) == 2
    assert not torch.allclose(hijacker.sets[0].weights, hijacker.sets[1].weights)
    assert hijacker.queries(adv.data.test.x[:2]).shape[0] == 2 * 3


def test_anchors_per_set_give_later_sets_their_own_anchors_and_leave_the_first_alone(tmp_path: Path) -> None:
    shared_adv, shared = _hijacker(tmp_path / "shared", {"cloak_sets": 2})
    own_adv, own = _hijacker(tmp_path / "own", {"cloak_sets": 2, "anchors_per_set": True})
    assert shared_adv.notes["anchor_sets"] == 1 and own_adv.notes["anchor_sets"] == 2
    assert torch.equal(shared.sets[0].weights, own.sets[0].weights)  # set 0 keeps seed 0's anchors
    assert not torch.allclose(shared.sets[1].weights, own.sets[1].weights, atol=1e-4)
    with pytest.raises(ConfigError, match="anchors_per_set"):
        build_experiment(tiny_raw(attack={"name": "hijackfl", "clients": [0],
                                          "options": {"anchors": "mean", "anchors_per_set": True}}))


def test_input_noise_perturbs_the_drawn_samples_within_range_and_changes_the_search(
    tmp_path: Path, hijack3
) -> None:
    sampler = ClassSampler(hijack3.train, 3, seed=0)
    x, _ = sampler.balanced(4)
    assert sampler.noisy(x, 0.0) is x
    noisy = sampler.noisy(x, 0.1)
    assert noisy.shape == x.shape and float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    inside = (x > 0.2) & (x < 0.8)  # away from the clamp, the noise is roughly N(0, 0.1^2)
    assert 0.07 < float((noisy - x)[inside].std()) < 0.13
    again = ClassSampler(hijack3.train, 3, seed=0)
    again.balanced(4)
    assert torch.equal(again.noisy(x, 0.1), noisy)  # seeded with the sampler
    _, plain = _hijacker(tmp_path / "plain", {})
    _, noised = _hijacker(tmp_path / "noised", {"input_noise": 0.1})
    assert not torch.allclose(plain.sets[0].weights, noised.sets[0].weights, atol=1e-4)


def test_adversary_uploads_exactly_the_benign_update_and_keeps_a_snapshot(tmp_path: Path) -> None:
    fed = _federation(tmp_path, {**FAST, "attack_round": 2})
    adv = fed.adversary
    assert isinstance(adv, HijackFL)
    adv.setup(fed.ctx)
    weights = fed.global_weights.clone()
    for rnd in (1, 2):
        mine = adv.client_update(fed.ctx, 1, rnd, weights, lambda rnd=rnd: fed.trainer.train(1, rnd, weights))
        honest = fed.trainer.train(1, rnd, weights)
        assert torch.equal(mine.update, honest.update) and mine.num_samples == honest.num_samples
        assert (adv.snapshot is None) == (rnd == 1)
    assert adv.snapshot is not None and adv.snapshot.round == 2 and torch.equal(adv.snapshot.weights, weights)
    weights += 1.0  # the snapshot is a copy: later rounds never change it
    assert not torch.equal(adv.snapshot.weights, weights)
    assert adv.hijacker is not None and adv.mapping is not None and adv.mapping.num_hijack == 3


def test_lookahead_uploads_the_benign_update_and_fits_cloaks_to_the_advanced_snapshot(tmp_path: Path) -> None:
    fed = _federation(tmp_path, {**FAST, "attack_round": 1, "lookahead": True}, fl={"server_lr": 0.5})
    adv = fed.adversary
    assert isinstance(adv, HijackFL)
    adv.setup(fed.ctx)
    weights = fed.global_weights.clone()
    calls = []

    def benign():
        calls.append(1)
        return fed.trainer.train(1, 1, weights)

    mine = adv.client_update(fed.ctx, 1, 1, weights, benign)
    honest = fed.trainer.train(1, 1, weights)
    assert len(calls) == 1  # local training ran once and its result was both the guess and the upload
    assert torch.equal(mine.update, honest.update)
    server_lr = fed.ctx.exp.fl.server_lr
    assert adv.ahead_weights is not None and torch.equal(adv.ahead_weights, weights + server_lr * honest.update)
    assert adv.hijacker is not None


def test_a_duplicate_view_leaves_the_cloak_search_unchanged_and_a_different_one_changes_it(
    digits_model: SiegeModel, hijack3
) -> None:
    mapping = greedy_mapping(prediction_counts(digits_model, hijack3.train.x, hijack3.train.y, 3))
    own = load_dataset("digits", "train")
    anchors = mean_anchors(digits_model, own, [*mapping.targets, mapping.negative])
    scale = FeatureScale.identity(anchors.shape[1])
    kwargs = {"contrast": 10.0, "schedule": CloakSchedule(epochs=5, lr=0.1, batch_size=48), "seed": 0}
    alone, losses = search_cloaks(digits_model, hijack3.train, anchors[:-1], anchors[-1], **kwargs)
    same = CloakView(digits_model, anchors[:-1], anchors[-1], scale)
    twice, losses2 = search_cloaks(digits_model, hijack3.train, anchors[:-1], anchors[-1], extra_views=[same], **kwargs)
    assert torch.allclose(alone.weights, twice.weights, atol=1e-5) and losses == pytest.approx(losses2, rel=1e-5)
    other = CloakView(digits_model, anchors[:-1].flip(0), anchors[-1], scale)  # different targets
    mixed, _ = search_cloaks(digits_model, hijack3.train, anchors[:-1], anchors[-1], extra_views=[other], **kwargs)
    assert not torch.allclose(alone.weights, mixed.weights, atol=1e-3)


def test_a_full_run_reports_hijacking_metrics_figures_and_zero_utility_drop(tmp_path: Path) -> None:
    options = {**FAST, "attack_round": 2, "reference_run": True, "squeeze_detect": True, "anchors": "mean",
               "feature_norm": "standardize", "figure_samples": 4, "contrast": 10.0}
    raw = tiny_raw(fl={"rounds": 2}, attack={"name": "hijackfl", "clients": [1], "options": options},
                   output={"report": True})
    run = run_experiment(build_experiment(raw), out_root=tmp_path)
    final = run.read_summary()["final"]
    assert final["snapshot_round"] == 2 and final["hijack_classes"] == 3
    for key in ("hijack_acc", "no_cloak_acc", "ssim", "l2", "squeeze_detect_rate", "squeeze_clean_fpr"):
        assert 0.0 <= final[key] <= (1.0 if key != "l2" else 8.0), key
    for key in ("time_mapping_s", "time_anchors_s", "time_cloaks_s", "time_execution_s"):
        assert final[key] > 0, key
    assert final["utility"] == final["accuracy"]
    assert final["utility_drop"] == 0.0  # benign uploads: the attacked run is the clean run, bit for bit
    assert final["queries_per_input"] == 3 and len(final["confusion_matrix"]) == 3
    assert 0.0 <= final["snapshot_hijack_acc"] <= 1.0
    figures = {p.name for p in run.figures.iterdir()}
    assert {"hijack_1_raw_samples.png", "hijack_2_cloaks.png", "hijack_3_attack_inputs.png",
            "hijack_4_confusion.png"} <= figures
    html = run.report_file.read_text()
    assert html.count("data:image/png;base64") >= 4 and "hijack_acc" in html


def test_snapshot_accuracy_is_measured_on_the_snapshot_whatever_the_final_model(
    tmp_path: Path, digits_model: SiegeModel
) -> None:
    fed = _federation(tmp_path, {**FAST, "attack_round": 1}, model={"options": {"width": 8, "hidden": 32}})
    adv = fed.adversary
    assert isinstance(adv, HijackFL)
    adv.setup(fed.ctx)
    weights = flat_params(digits_model)  # a trained snapshot, so its hijacking accuracy is not chance
    adv.client_update(fed.ctx, 1, 1, weights, lambda: fed.trainer.train(1, 1, weights))
    assert adv.snapshot is not None and adv.mapping is not None
    same = adv.finish(fed.ctx, adv.snapshot.model(fed.ctx.model_factory))  # nothing moved after the snapshot
    assert same["snapshot_hijack_acc"] == same["hijack_acc"]
    constant = adv.snapshot.model(fed.ctx.model_factory)  # a final model that answers one class to everything
    with torch.no_grad():
        constant.head.weight.zero_()
        constant.head.bias.copy_(10.0 * F.one_hot(torch.tensor(adv.mapping.targets[0]), 10))
    moved = adv.finish(fed.ctx, constant)
    assert moved["hijack_acc"] == pytest.approx(1 / 3)  # every input decoded as hijacking class 0
    assert moved["snapshot_hijack_acc"] == same["snapshot_hijack_acc"] != pytest.approx(1 / 3)


def test_config_validation_of_hijackfl_options() -> None:
    build_experiment(tiny_raw(attack={"name": "hijackfl", "clients": [0], "options": {"alpha": 0.3}}))
    with pytest.raises(ConfigError, match="attack.options.alpha"):
        build_experiment(tiny_raw(attack={"name": "hijackfl", "clients": [0], "options": {"alpha": 1.5}}))
    with pytest.raises(ConfigError, match="unknown key"):
        build_experiment(tiny_raw(attack={"name": "hijackfl", "clients": [0], "options": {"alpah": 0.3}}))
    with pytest.raises(ConfigError, match="attack.options.contrast"):
        build_experiment(tiny_raw(attack={"name": "hijackfl", "clients": [0], "options": {"contrast": -1.0}}))
    assert "hijackfl" in ATTACKS


def test_too_many_hijacking_classes_or_a_late_attack_round_fail_before_any_work(tmp_path: Path) -> None:
    fed = _federation(tmp_path, {"num_classes": 10})
    with pytest.raises(ValueError, match="at most 9 hijacking classes"):
        fed.adversary.setup(fed.ctx)  # the runner's preflight makes the same check before the run directory
    with pytest.raises(ConfigError, match="attack.options.attack_round = 9: must not exceed fl.rounds = 3"):
        _federation(tmp_path, {"attack_round": 9})


def test_an_adversary_never_sampled_after_its_attack_round_reports_nothing(tmp_path: Path) -> None:
    adv = build_adversary("hijackfl", [1], {**FAST, "attack_round": 3})
    fed = _federation(tmp_path, {**FAST, "attack_round": 3})
    adv.setup(fed.ctx)
    final = adv.finish(fed.ctx, fed.eval_model)
    assert final["hijack_acc"] is None and 0.0 <= final["utility"] <= 1.0


def test_a_hijacking_dataset_with_too_few_classes_is_rejected() -> None:
    with pytest.raises(ValueError, match="has 10 classes, asked for 11"):
        load_hijack_data("digits", 11, (1, 8, 8))
