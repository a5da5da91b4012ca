"""`HijackAdversary`: the life cycle every hijacking attack shares, and `HijackFL` on top of it.

Life cycle: at the first round >= `attack_round` in which one of its clients is sampled, the attacker
keeps the global model it received (the snapshot), maps classes and prepares its attack on that snapshot
only (`prepare`). Its uploads are whatever `upload` returns: benign for HijackFL, UAP and reprogramming,
poisoned for the poisoning baselines. `finish` queries the final global model and reports.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from siegecraft.attacks.hijackfl.adapter import HijackData, load_hijack_data
from siegecraft.attacks.hijackfl.anchors import (
    STALLED_CONFIDENCE,
    FeatureScale,
    batched_features,
    class_confidence,
    mean_anchors,
    synthetic_anchor_inputs,
)
from siegecraft.attacks.hijackfl.cloaks import CloakSchedule, CloakView, search_cloaks
from siegecraft.attacks.hijackfl.evaluation import evaluate_hijacker
from siegecraft.attacks.hijackfl.execution import CloakedHijacker, Hijacker
from siegecraft.attacks.hijackfl.figures import loss_figure
from siegecraft.attacks.hijackfl.mapping import (
    ClassMapping,
    greedy_mapping,
    most_distinct_class,
    prediction_counts,
)
from siegecraft.attacks.hijackfl.metrics import accuracy
from siegecraft.attacks.hijackfl.options import HijackFLOptions, HijackOptions
from siegecraft.attacks.hijackfl.reference import clean_reference
from siegecraft.attacks.hijackfl.snapshot import Snapshot, frozen_model
from siegecraft.core.config import FieldError
from siegecraft.core.data.datasets import DATASETS
from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.models import SiegeModel
from siegecraft.core.training import evaluate
from siegecraft.engines.federated.extensions import Adversary, FederationContext

if TYPE_CHECKING:
    from siegecraft.engines.federated.client import ClientUpdate

log = logging.getLogger("siegecraft.attacks.hijack")

__all__ = ["HijackAdversary", "HijackFL", "default_attack_round"]

CLEAN_EVAL_SAMPLES = 2000  # clean original-task inputs used to fit and check the squeezing threshold


def default_attack_round(rounds: int) -> int:
    """3/4 of the way through training (the authors' 150 of 200)."""
    return max(1, math.ceil(0.75 * rounds))


class HijackAdversary(Adversary):
    """Base of every hijacking attack; subclasses implement `build_hijacker` (and maybe `upload`)."""

    options_model = HijackOptions
    options: HijackOptions
    success_metric = "hijack_acc"

    @classmethod
    def check(cls, options: HijackOptions, exp: Any) -> None:
        if options.dataset not in DATASETS:
            raise FieldError(("attack", "options", "dataset"), options.dataset,
                             f"unknown dataset; known: {', '.join(DATASETS.names())}")
        rounds = exp.fl.rounds
        if options.attack_round and options.attack_round > rounds:
            raise FieldError(("attack", "options", "attack_round"), options.attack_round,
                             f"must not exceed fl.rounds = {rounds}")

    @classmethod
    def check_data(cls, options: HijackOptions, exp: Any, train_set: ImageDataset) -> None:
        c = train_set.num_classes
        if options.num_classes > c - 1:
            raise FieldError(("attack", "options", "num_classes"), options.num_classes,
                             f"with {c} original classes at most {c - 1} hijacking classes fit "
                             "(one is the negative class)")

    def __init__(self, clients: list[int], options: HijackOptions) -> None:
        super().__init__(clients, options)
        self.snapshot: Snapshot | None = None
        self.mapping: ClassMapping | None = None
        self.hijacker: Hijacker | None = None
        self.data: HijackData | None = None
        self.times: dict[str, float] = {}
        self.notes: dict[str, Any] = {}  # attack-specific diagnostics added to the summary
        self.attack_round = 0

    # -- life cycle ----------------------------------------------------------------------------
    def setup(self, ctx: FederationContext) -> None:
        rounds = ctx.exp.fl.rounds
        self.attack_round = self.options.attack_round or default_attack_round(rounds)
        self.check(self.options, ctx.exp)
        self.check_data(self.options, ctx.exp, ctx.train_set)
        o = self.options
        self.data = load_hijack_data(
            o.dataset, o.num_classes, ctx.trainer.model.input_shape, samples_per_class=o.samples_per_class,
            test_per_class=o.test_per_class, seed=ctx.exp.seed, data_dir=o.data_dir,
        )

    def client_update(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        if self.snapshot is None and rnd >= self.attack_round:
            self.snapshot = Snapshot.capture(rnd, global_weights)
            self.prepare(ctx, self.snapshot.model(ctx.model_factory))
        return self.upload(ctx, client_id, rnd, global_weights, benign)

    def upload(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        """What the attacker's client sends; benign by default."""
        del ctx, client_id, rnd, global_weights
        return benign()

    def prepare(self, ctx: FederationContext, snapshot: SiegeModel) -> None:
        """Class mapping, then the attack's own preparation, all on the snapshot."""
        assert self.data is not None
        with self.stage("mapping"):
            counts = prediction_counts(snapshot, self.data.train.x, self.data.train.y, self.data.num_classes)
            negative = None
            if self.options.negative == "distinct":
                own = self.attacker_data(ctx)
                negative = most_distinct_class(snapshot, own.x, own.y)
            self.mapping = self.map_classes(counts, negative)
        self.hijacker = self.build_hijacker(ctx, snapshot, self.mapping)

    def map_classes(self, counts: torch.Tensor, negative: int | None) -> ClassMapping:
        return greedy_mapping(counts, negative)

    def build_hijacker(self, ctx: FederationContext, snapshot: SiegeModel, mapping: ClassMapping) -> Hijacker:
        raise NotImplementedError

    def finish(self, ctx: FederationContext, final_model: SiegeModel) -> dict[str, Any]:
        out: dict[str, Any] = {"utility": float(evaluate(final_model, ctx.test_set).accuracy)}
        if self.options.reference_run:
            with self.stage("reference_run"):
                ref = clean_reference(ctx.exp, ctx.figures_dir.parent)
            out["reference_utility"] = ref["accuracy"]
            out["utility_drop"] = ref["accuracy"] - out["utility"]
        if self.hijacker is None or self.data is None:
            log.warning("the hijacking adversary never took part at or after round %d: nothing to evaluate",
                        self.attack_round)
            return {**out, "hijack_acc": None, "attack_round": self.attack_round}
        assert self.snapshot is not None and self.mapping is not None
        name = type(self).__name__
        with self.stage("execution"):
            metrics = evaluate_hijacker(
                name, self.hijacker, final_model, self.data, self.options, ctx.figures_dir,
                ctx.test_set.x[:CLEAN_EVAL_SAMPLES],
            )
        # The same hijacker on the model it was built on: the gap to hijack_acc is what transfer costs.
        snapshot_pred = self.hijacker.predict(self.snapshot.model(ctx.model_factory), self.data.test.x)
        out.update(metrics)
        out["snapshot_hijack_acc"] = accuracy(snapshot_pred, self.data.test.y)
        out.update({
            "attack_round": self.attack_round, "snapshot_round": self.snapshot.round,
            "mapping": list(self.mapping.targets), "negative_class": self.mapping.negative,
            "hijack_classes": self.data.num_classes, "hijack_train_samples": len(self.data.train),
            "hijack_test_samples": len(self.data.test),
        })
        out.update(self.notes)
        out.update({f"time_{k}_s": v for k, v in self.times.items()})
        return out

    # -- helpers -------------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage of the attack; the total lands in summary.json as `time_<name>_s`."""
        t0 = time.perf_counter()
        yield
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0

    def attacker_data(self, ctx: FederationContext) -> ImageDataset:
        """The original-task data the attacker holds: its clients' partitions."""
        idx = torch.cat([torch.as_tensor(ctx.partitions[c], dtype=torch.long) for c in sorted(self.clients)])
        return ctx.train_set.subset(idx)


class HijackFL(HijackAdversary):
    """HijackFL: benign uploads; per-class feature-space cloaks learnt on the snapshot.

    With `lookahead`, the cloaks are also fitted to the snapshot advanced by the attacker's own benign
    update (its guess at the next global model, exact in expectation under IID FedAvg), so they need to
    transfer less far to the final model.
    """

    options_model = HijackFLOptions
    options: HijackFLOptions

    def __init__(self, clients: list[int], options: HijackOptions) -> None:
        super().__init__(clients, options)
        self.ahead_weights: torch.Tensor | None = None

    def client_update(
        self, ctx: FederationContext, client_id: int, rnd: int, global_weights: torch.Tensor,
        benign: Callable[[], ClientUpdate],
    ) -> ClientUpdate:
        if self.snapshot is None and rnd >= self.attack_round and self.options.lookahead:
            update = benign()  # the same benign update the attacker uploads, computed once
            self.ahead_weights = global_weights + ctx.exp.fl.server_lr * update.update
            return super().client_update(ctx, client_id, rnd, global_weights, lambda: update)
        return super().client_update(ctx, client_id, rnd, global_weights, benign)

    def build_hijacker(self, ctx: FederationContext, snapshot: SiegeModel, mapping: ClassMapping) -> Hijacker:
        assert self.data is not None
        o = self.options
        own = self.attacker_data(ctx)
        classes = [*mapping.targets, mapping.negative]
        ahead = frozen_model(ctx.model_factory, self.ahead_weights) if self.ahead_weights is not None else None
        with self.stage("anchors"):
            view_sets, confidences = [], []  # per anchor set: the snapshot's view, then the look-ahead model's
            for r in range(o.cloak_sets if o.anchors_per_set else 1):
                inputs = None
                if o.anchors == "synthetic":
                    inputs = synthetic_anchor_inputs(snapshot, classes, steps=o.anchor_steps, lr=o.anchor_lr,
                                                     seed=ctx.exp.seed + 1000 * r, restarts=o.anchor_restarts)
                    confidences.append(class_confidence(snapshot, inputs, classes))
                views = [self.view(snapshot, own, classes, inputs)]
                if ahead is not None:
                    views.append(self.view(ahead, own, classes, inputs))
                view_sets.append(views)
            if confidences:
                self.note_anchor_confidence(classes, torch.stack(confidences))
        schedule = CloakSchedule(o.epochs, o.lr, o.batch_size, o.schedule, o.max_steps)
        searches = []
        with self.stage("cloaks"):
            for r in range(o.cloak_sets):
                main, *extra = view_sets[r if o.anchors_per_set else 0]
                searches.append(search_cloaks(
                    snapshot, self.data.train, main.targets, main.negative, alpha=o.alpha, beta=o.beta,
                    contrast=o.contrast, tau=o.contrast_tau, schedule=schedule, scale=main.scale, shift=o.shift,
                    noise=o.input_noise, extra_views=extra, seed=ctx.exp.seed + 1000 * r,
                ))
        sets = [cloaks for cloaks, _ in searches]
        if o.figures:  # the first set's loss curve
            loss_figure(searches[0][1], ctx.figures_dir / "hijack_5_cloak_loss.png", "HijackFL cloak search")
        return CloakedHijacker(mapping, sets, o.decoding)

    def note_anchor_confidence(self, classes: list[int], conf: torch.Tensor) -> None:
        """Summary fields for the synthetic anchors' confidences [sets, classes]; a stalled anchor is logged."""
        self.notes.update(anchor_sets=len(conf), anchor_confidence=float(conf.mean()),
                          anchor_confidence_min=float(conf.min()))
        per_class = conf.min(0).values
        worst = int(per_class.argmin())
        if float(per_class[worst]) < STALLED_CONFIDENCE:
            log.warning("synthetic anchor of original class %d reaches only %.2f confidence after %d restarts; its "
                        "cloak will be weak (raise anchor_restarts or anchor_lr)", classes[worst],
                        float(per_class[worst]), self.options.anchor_restarts)

    def view(self, model: SiegeModel, own: ImageDataset, classes: list[int], inputs: torch.Tensor | None) -> CloakView:
        """`model` with its anchors: features of the synthetic anchor inputs, or its class means of features."""
        anchors = batched_features(model, inputs) if inputs is not None else mean_anchors(model, own, classes)
        scale = (FeatureScale.standardize(model, own.x) if self.options.feature_norm == "standardize"
                 else FeatureScale.identity(model.feature_dim))
        anchors = scale(anchors)
        return CloakView(model, anchors[:-1], anchors[-1], scale)
