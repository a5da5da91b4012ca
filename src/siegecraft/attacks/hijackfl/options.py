"""Options shared by every hijacking attack (the hijacking task, the snapshot, evaluation, defenses),
and HijackFL's own cloak-search dials. They are the `[attack.options]` table of a config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from siegecraft.engines.federated.extensions import AttackOptions


class HijackOptions(AttackOptions):
    """What every hijacking attack shares: the hijacking task, when to snapshot, how to evaluate."""

    dataset: str = Field("mnist5k", description="the hijacking dataset (any registered dataset)")
    data_dir: str | None = None
    num_classes: int = Field(9, ge=2, description="hijacking classes K (labels 0..K-1); K <= C - 1")
    samples_per_class: int | None = Field(None, ge=1, description="hijacking training samples per class; None = all")
    test_per_class: int | None = Field(None, ge=1, description="hijacking test samples per class; None = all")
    attack_round: int | None = Field(
        None, ge=1, description="round whose received global model is the snapshot; None = 3/4 of the rounds"
    )
    negative: Literal["column_sum", "distinct"] = Field(
        "column_sum", description="negative class: the unused class with the largest column sum (authors), or the "
        "class the snapshot recognises best on the attacker's data, chosen before the greedy mapping",
    )
    reference_run: bool = Field(False, description="also train the clean federation to measure the utility drop")
    squeeze_detect: bool = Field(False, description="feature-squeezing detection rate on the attack's inputs")
    squeeze_bit_depth: int = Field(4, ge=0, le=8, description="bits kept; 0 disables")
    squeeze_median_kernel: int = Field(2, ge=0, description="median window; 0 disables")
    squeeze_fpr: float = Field(0.05, gt=0, lt=1, description="false-positive rate on clean inputs")
    figures: bool = True
    figure_samples: int = Field(8, ge=1, le=32, description="samples per row in the figures")


class CloakOptions(HijackOptions):
    """Dials of an input-blend attack: x' = alpha * x + (1 - alpha) * sigmoid(W) (HijackFL, UAP, reprogram)."""

    alpha: float = Field(0.5, gt=0, lt=1, description="weight of the raw input in the blend (the budget)")
    epochs: int = Field(100, ge=1, description="passes over each class's hijacking samples")
    lr: float = Field(5e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    schedule: Literal["constant", "cosine"] = "constant"
    max_steps: int | None = Field(None, ge=1, description="cap on optimiser steps (after epochs)")


class HijackFLOptions(CloakOptions):
    """HijackFL (Li et al.): per-class feature-space cloaks towards anchor features."""

    beta: float = Field(1.0, ge=0, description="weight of the negative (other classes -> negative anchor) term")
    contrast: float = Field(
        0.0, ge=0, description="weight of the K-way term: a sample's own cloak must bring it nearer its anchor than "
        "any other cloak brings it to theirs (feature distances as logits); 0 = the authors' loss",
    )
    contrast_tau: float = Field(1.0, gt=0, description="temperature of the K-way term's distance logits")
    shift: int = Field(0, ge=0, le=8, description="random translation (pixels) of each hijacking sample during the cloak search")
    cloak_sets: int = Field(
        1, ge=1, le=8, description="independent cloak searches (different random starts and batches); execution "
        "sums their scores per class (1 = the authors' single set)",
    )
    anchors_per_set: bool = Field(
        False, description="each cloak set gets its own synthetic anchors (its own random start, seed + 1000 r) "
        "instead of sharing the first set's",
    )
    input_noise: float = Field(
        0.0, ge=0, le=0.5, description="std of Gaussian noise added to each hijacking sample during the cloak "
        "search (clamped to [0, 1]); 0 = none",
    )
    lookahead: bool = Field(
        False, description="also fit the cloaks to the snapshot plus the attacker's own benign update (a guess at "
        "the next global model)",
    )
    anchors: Literal["synthetic", "mean"] = "synthetic"
    anchor_steps: int = Field(500, ge=1)
    anchor_lr: float = Field(5e-3, gt=0)
    anchor_restarts: int = Field(
        4, ge=0, le=32, description="fresh random starts for a synthetic anchor stalled below 0.9 confidence "
        "(0 = the authors' single start; anchors that reach it first time are unchanged)",
    )
    feature_norm: Literal["none", "standardize"] = Field(
        "none", description="measure feature distances in units of each feature's spread over real inputs"
    )
    decoding: Literal["mapped", "top1"] = Field(
        "mapped", description="cloak score: its mapped class's probability, or the top-1 one when it is the mapped class"
    )

    @model_validator(mode="after")
    def _anchors_per_set_needs_synthetic(self) -> HijackFLOptions:
        if self.anchors_per_set and self.anchors != "synthetic":
            raise ValueError("anchors_per_set needs anchors = 'synthetic' (mean anchors have no random start)")
        return self
