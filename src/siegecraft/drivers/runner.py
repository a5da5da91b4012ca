"""Run one validated experiment end to end: preflight, run directory, topology, summary, report."""

from __future__ import annotations

import random
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import tomllib
import torch

from siegecraft.core.config import ConfigError, ExperimentBase, FieldError, read_toml, to_toml
from siegecraft.core.data.paths import DatasetNotFoundError
from siegecraft.core.results import RunDir, Stopwatch, build_report, package_versions
from siegecraft.core.results.tracking import start_tracking
from siegecraft.core.topology import TOPOLOGIES
from siegecraft.drivers.experiment import preflight

#: sections every resumed run may change: where and how results are written, not what is computed (a
#: topology adds its own keys with `Topology.resume_may_differ`, e.g. federated `fl.rounds`)
RESUME_MAY_DIFFER = ("output", "tracking")
_UNSET = object()


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def check_resume_config(exp: ExperimentBase, resume: str | Path) -> None:
    """Refuse to resume `resume` with a config that differs from the one saved in it (ConfigError, one line).

    Both sides go through the same resolved-TOML form (every default written out), so only real changes
    count; keys under `RESUME_MAY_DIFFER` and the topology's `resume_may_differ` may change. Generic for
    every topology, and checked before any work.
    """
    saved = _flatten(read_toml(Path(resume) / "config.toml"))
    current = _flatten(tomllib.loads(to_toml(exp.model_dump(mode="json"))))
    free = RESUME_MAY_DIFFER + TOPOLOGIES.get(exp.topology).resume_may_differ

    def may_differ(key: str) -> bool:
        return any(key == f or key.startswith(f + ".") for f in free)

    differing = [
        k for k in sorted(set(saved) | set(current))
        if not may_differ(k) and saved.get(k, _UNSET) != current.get(k, _UNSET)
    ]  # fmt: skip
    if not differing:
        return

    def show(v: Any) -> str:
        return "unset" if v is _UNSET else repr(v)

    parts = ", ".join(f"{k} = {show(current.get(k, _UNSET))} (run directory: {show(saved.get(k, _UNSET))})"
                      for k in differing)  # fmt: skip
    raise ConfigError(
        f"--resume {str(resume)!r}: config differs from the run directory's: {parts}; allowed: the run "
        f"directory's config.toml (only {', '.join(_pattern(f) for f in free)} may change on resume), "
        "or a new run without --resume"
    )


def _pattern(key: str) -> str:
    """`output` -> `output.*` (a section), `fl.rounds` stays (a key)."""
    return key if "." in key else key + ".*"


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit(143) while a run executes, so `finally` blocks release what the run
    started (a private redis-server, function containers); only in the main thread, where signals arrive."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    directory behind. With `resume`, a config that differs from the run directory's saved one is refused
    first (`check_resume_config`). SIGTERM ends the run as SystemExit, through every cleanup.
    """
    if resume is not None:
        check_resume_config(exp, resume)
    preflight(exp)
    seed_everything(exp.seed)
    run = RunDir.open(resume) if resume else RunDir.create(out_root or exp.output.root, exp.name)
    try:
        with sigterm_as_exit():
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
