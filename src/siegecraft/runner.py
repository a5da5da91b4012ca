"""Run one validated Experiment end to end: run directory, topology, summary, report."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siegecraft.config import Experiment, to_toml
from siegecraft.results import RunDir, Stopwatch, build_report, package_versions
from siegecraft.results.tracking import start_tracking
from siegecraft.topologies import TOPOLOGIES


def seed_everything(seed: int) -> None:
    """One seed for every generator the framework touches."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_experiment(
    exp: Experiment,
    *,
    out_root: str | Path | None = None,
    resume: str | Path | None = None,
    progress: Any = None,
) -> RunDir:
    """Execute `exp`; with `resume`, continue the given run directory from its last checkpoint."""
    seed_everything(exp.seed)
    run = RunDir.open(resume) if resume else RunDir.create(out_root or exp.output.root, exp.name)
    run.write_config(to_toml(exp.model_dump(mode="json")))
    clock = Stopwatch()
    runner = TOPOLOGIES.get(exp.topology).load_runner()
    kwargs: dict[str, Any] = {"progress": progress}
    if resume:
        kwargs["resume"] = True
    tracker, ok = start_tracking(exp, run), False
    try:
        final = runner(exp, run, **kwargs)
        previous = run.read_summary().get("wall_time_s", 0.0) if resume else 0.0
        run.write_summary(
            {
                "name": exp.name,
                "topology": exp.topology,
                "seed": exp.seed,
                "final": final,
                "versions": package_versions(),
                "wall_time_s": previous + clock(),
            }
        )
        if exp.output.report:
            build_report(run)
        tracker.finish(run)
        ok = True
    finally:
        tracker.close(ok)
    return run
