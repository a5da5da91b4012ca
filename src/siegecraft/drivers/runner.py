"""Run one validated experiment end to end: preflight, run directory, topology, summary, report."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siegecraft.core.config import ConfigError, ExperimentBase, FieldError, to_toml
from siegecraft.core.data.paths import DatasetNotFoundError
from siegecraft.core.results import RunDir, Stopwatch, build_report, package_versions
from siegecraft.core.results.tracking import start_tracking
from siegecraft.core.topology import TOPOLOGIES
from siegecraft.drivers.experiment import preflight


def seed_everything(seed: int) -> None:
    """One seed for every generator the framework touches."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_experiment(
    exp: ExperimentBase,
    *,
    out_root: str | Path | None = None,
    resume: str | Path | None = None,
    progress: Any = None,
) -> RunDir:
    """Execute `exp`; with `resume`, continue the given run directory from its last checkpoint.

    A user mistake found before or during the run (ConfigError, a missing dataset) leaves no new run
    directory behind.
    """
    preflight(exp)
    seed_everything(exp.seed)
    run = RunDir.open(resume) if resume else RunDir.create(out_root or exp.output.root, exp.name)
    try:
        return _execute(exp, run, resume=resume is not None, progress=progress)
    except (ConfigError, FieldError, DatasetNotFoundError):
        if not resume:
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def _execute(exp: ExperimentBase, run: RunDir, *, resume: bool, progress: Any) -> RunDir:
    run.write_config(to_toml(exp.model_dump(mode="json")))
    clock = Stopwatch()
    topology = TOPOLOGIES.get(exp.topology)
    tracker, ok = start_tracking(exp, run), False
    try:
        final = topology.run(exp, run, progress=progress, resume=resume)
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
