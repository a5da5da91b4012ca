"""Evaluate a hijacker on the final global model: accuracy with and without the attack's inputs,
visibility (SSIM, L2), the confusion matrix, figures and optional squeezing detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from siegecraft.attacks.hijackfl.adapter import HijackData
from siegecraft.attacks.hijackfl.detection import squeeze_detection
from siegecraft.attacks.hijackfl.execution import Hijacker, RawHijacker
from siegecraft.attacks.hijackfl.figures import confusion_figure, image_grid
from siegecraft.attacks.hijackfl.metrics import accuracy, confusion_matrix, mean_l2, mean_ssim
from siegecraft.attacks.hijackfl.options import HijackOptions
from siegecraft.core.models import SiegeModel

__all__ = ["evaluate_hijacker", "figure_rows"]


def figure_rows(y: torch.Tensor, k: int, per_class: int) -> torch.Tensor:
    """Indices of the first `per_class` samples of each class 0..k-1, class by class."""
    return torch.cat([(y == c).nonzero().flatten()[:per_class] for c in range(k)])


def evaluate_hijacker(
    name: str,
    hijacker: Hijacker,
    model: SiegeModel,
    data: HijackData,
    opts: HijackOptions,
    figures_dir: Path,
    clean_x: torch.Tensor,
) -> dict[str, Any]:
    """Metrics of `hijacker` answering the hijacking test set through `model` (the final global model)."""
    x, y = data.test.x, data.test.y
    k = data.num_classes
    pred = hijacker.predict(model, x)
    raw_pred = RawHijacker(hijacker.mapping).predict(model, x)
    sent = hijacker.own_query(x, y)
    cm = confusion_matrix(pred, y, k)
    out: dict[str, Any] = {
        "hijack_acc": accuracy(pred, y),
        "no_cloak_acc": accuracy(raw_pred, y),
        "chance": 1.0 / k,
        "queries_per_input": int(hijacker.queries(x[:1]).shape[0]),
        "ssim": mean_ssim(sent, x),
        "l2": mean_l2(sent, x),
        "confusion_matrix": cm.tolist(),
        "per_class_hijack_acc": (cm.diag().float() / cm.sum(1).clamp_min(1)).tolist(),
    }
    if opts.squeeze_detect:

        out.update(squeeze_detection(
            model, clean_x, hijacker.queries(x), bit_depth=opts.squeeze_bit_depth,
            median_kernel=opts.squeeze_median_kernel, fpr=opts.squeeze_fpr,
        ))
    if opts.figures:
        write_figures(name, hijacker, data, pred, sent, cm, figures_dir, opts.figure_samples)
    return out


def write_figures(
    name: str, hijacker: Hijacker, data: HijackData, pred: torch.Tensor, sent: torch.Tensor,
    cm: torch.Tensor, figures_dir: Path, per_class: int,
) -> None:
    """Raw samples, each cloak (pattern), the attack's inputs with predicted labels, the confusion matrix."""
    k = data.num_classes
    y = data.test.y
    rows = figure_rows(y, k, per_class)
    captions = [str(int(v)) for v in y[rows]]
    image_grid(data.test.x[rows], figures_dir / "hijack_1_raw_samples.png",
               f"raw hijacking samples ({data.test.name}; caption: true class)", ncols=per_class, labels=captions)
    patterns = hijacker.pattern_images()
    if patterns is not None:
        image_grid(patterns, figures_dir / "hijack_2_cloaks.png", f"{name}: learned pattern per cloak",
                   ncols=min(len(patterns), 10), labels=[f"cloak {i}" for i in range(len(patterns))])
    wrong = (pred[rows] != y[rows]).tolist()
    labels = [f"{int(t)}->{int(p)}" for t, p in zip(y[rows], pred[rows])]
    image_grid(sent[rows], figures_dir / "hijack_3_attack_inputs.png",
               f"{name}: inputs sent for each sample (true->predicted; red = wrong)",
               ncols=per_class, labels=labels, wrong=wrong)
    confusion_figure(cm, figures_dir / "hijack_4_confusion.png", f"{name}: hijacking confusion matrix")
