"""Helpers for studies that run many hijacking attacks on one federation (hijackfl_table.py, ablations).

An attacked run can resume the clean run's checkpoint of the round before its attack round: no attack
acts earlier, and the engine resumes bit-exactly, so the result equals a full run with that adversary
at a fraction of the CPU time.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

from siegecraft.attacks.hijackfl.adversary import default_attack_round
from siegecraft.core.results import RunDir
from siegecraft.drivers.experiment import build_experiment
from siegecraft.drivers.runner import run_experiment
from siegecraft.engines.federated.extensions import ATTACKS

__all__ = ["attack_config", "clean_config", "fork_run", "options_for", "run_attack", "run_clean"]


def options_for(name: str, hijack_options: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The HijackFL options attack `name` also has (hijacking data, attack round, blend schedule), plus `extra`."""
    fields = ATTACKS.get(name).options_model.model_fields
    return {**{k: v for k, v in hijack_options.items() if k in fields}, **(extra or {})}


def clean_config(raw: dict[str, Any], name: str = "clean") -> dict[str, Any]:
    """`raw` with no adversary and a checkpoint every round (what attacked runs fork from)."""
    out = copy.deepcopy(raw)
    out["name"] = name
    out["attack"] = {"name": "none"}
    out["fl"] = {**out["fl"], "checkpoint_every": 1}
    return out


def attack_config(raw: dict[str, Any], name: str, extra: dict[str, Any] | None = None,
                  options: dict[str, Any] | None = None) -> dict[str, Any]:
    """`raw` (a HijackFL experiment) with attack `name`; `options` override the HijackFL options first."""
    out = copy.deepcopy(raw)
    hijack_options = {**out["attack"]["options"], **(options or {})}
    out["attack"] = {**out["attack"], "name": name, "options": options_for(name, hijack_options, extra)}
    out["name"] = name
    return out


def fork_run(clean: RunDir, root: Path, name: str, upto: int) -> RunDir:
    """A new run directory holding the clean run's checkpoint and metrics up to round `upto`."""
    run = RunDir.create(root, name)
    src = clean.checkpoints / f"round-{upto:05d}.pt"
    if not src.exists():
        raise FileNotFoundError(f"{src} is missing: the clean run needs fl.checkpoint_every = 1")
    shutil.copy(src, run.checkpoints / src.name)
    lines = clean.metrics_file.read_text().splitlines(True)
    run.metrics_file.write_text("".join(line for line in lines if json.loads(line)["round"] <= upto))
    return run


def run_clean(raw: dict[str, Any], root: Path, name: str = "clean") -> tuple[RunDir, float]:
    t0 = time.perf_counter()
    run = run_experiment(build_experiment(clean_config(raw, name)), out_root=root)
    return run, time.perf_counter() - t0


def run_attack(raw: dict[str, Any], root: Path, clean: RunDir | None = None) -> tuple[RunDir, float]:
    """Run the attacked experiment `raw`, resuming `clean` before its attack round when given."""
    attack_round = raw["attack"]["options"].get("attack_round") or default_attack_round(raw["fl"]["rounds"])
    t0 = time.perf_counter()
    if clean is None or attack_round <= 1:
        run = run_experiment(build_experiment(raw), out_root=root)
    else:
        raw = {**raw, "fl": {**raw["fl"], "checkpoint_every": 0}}
        run = run_experiment(build_experiment(raw), resume=fork_run(clean, root, raw["name"], attack_round - 1).path)
    return run, time.perf_counter() - t0
