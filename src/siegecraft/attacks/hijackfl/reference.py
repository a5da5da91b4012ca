"""The clean reference: the same federation with no adversary, for the utility drop."""

from __future__ import annotations

from pathlib import Path

import torch

from siegecraft.core.results.rundir import RunDir
from siegecraft.engines.federated.config import FederatedExperiment as Experiment
from siegecraft.engines.federated.engine import Federation

__all__ = ["clean_reference"]


def clean_reference(exp: Experiment, root: Path) -> dict[str, float]:
    """Train `exp` with attack `none` into `root/reference-<time>/`; returns its final accuracy and loss."""
    clean = exp.model_copy(update={"attack": exp.attack.model_copy(update={"name": "none", "clients": [],
                                                                            "options": {}})})
    run = RunDir.create(root, "reference")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed)
        final = Federation(clean, run).run()
    return {"accuracy": float(final["accuracy"]), "loss": float(final["loss"])}
