"""Behaviour preserved: four small runs reproduce their committed `metrics.jsonl` (timing fields dropped).

The golden files were written before the package was re-layered; every later change must keep them.
Regenerate only on purpose: `SIEGECRAFT_REGEN_GOLDEN=1 pytest tests/test_golden.py`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from siegecraft.drivers.experiment import load_experiment
from siegecraft.drivers.runner import run_experiment

GOLDEN = Path(__file__).parent / "golden"
CASES = ["quickstart", "hogwild_gated", "serverless_memory", "zero_sum"]
# Wall-clock quantities (and what is derived from them: cost, bytes moved while polling) differ run to
# run; everything else must not.
TIMING_KEYS = {
    "bytes_per_worker",
    "round_s", "wall_s", "time_s", "elapsed_s", "train_seconds", "samples_per_s", "spent_usd", "cost_usd",
    "billed_s", "duration_s", "t", "sync_s", "compute_s", "profile_s",
}


def _is_timing(key: str) -> bool:
    return key in TIMING_KEYS or key.endswith(("_s", "_seconds", "_usd")) or key.startswith("secure_") and key.endswith("_s")


def strip_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_timing(v) for k, v in value.items() if not _is_timing(k)}
    if isinstance(value, list):
        return [strip_timing(v) for v in value]
    return value


def read_metrics(path: Path) -> list[Any]:
    return [strip_timing(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def assert_same(got: Any, want: Any, where: str = "") -> None:
    """Equal structure and values; floats within 1e-6 (relative) so a different CPU's rounding does not fail."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and isinstance(got, (int, float)):
        assert (math.isnan(want) and math.isnan(got)) or math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), (
            f"{where}: {got!r} != {want!r}")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


@pytest.mark.parametrize("case", CASES)
def test_golden_metrics(case: str, tmp_path: Path) -> None:
    exp = load_experiment(GOLDEN / f"{case}.toml")
    run = run_experiment(exp, out_root=tmp_path)
    got = read_metrics(run.metrics_file)
    golden = GOLDEN / f"{case}.metrics.jsonl"
    if os.environ.get("SIEGECRAFT_REGEN_GOLDEN"):
        golden.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in got))
    assert got, f"{case}: the run logged no metrics"
    want = [json.loads(line) for line in golden.read_text().splitlines() if line.strip()]
    assert_same(got, want, case)
