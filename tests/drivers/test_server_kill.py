"""A federated server (`siegecraft run`) killed with SIGKILL and resumed ends identical to an uninterrupted run.

Issue #22: the real CLI in a subprocess, `fl.checkpoint_every = 1`. Only the server process is killed (what a
crash or the OOM killer does), not its process group: the executor's workers must then exit by themselves
(they see their pipe to the server close), so nothing of the killed run survives it. Slow (three CLI runs
per executor): `pytest -m slow tests/drivers/test_server_kill.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from siegecraft.core.config import to_toml
from siegecraft.core.results import RunDir
from tests.conftest import tiny_raw

ROUNDS, KILL_AFTER = 5, 2  # SIGKILL once round 2's checkpoint exists, well before round 5 ends
ROOT = Path(__file__).resolve().parents[2]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


def cli(cfg: Path, *args: str) -> subprocess.Popen[bytes]:
    """`python -m siegecraft.drivers.cli run CFG -q ARGS` in its own session (so its process group is its own)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "siegecraft.drivers.cli", "run", str(cfg), "-q", *args], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]


def only_run(root: Path) -> RunDir:
    (path,) = [p for p in root.iterdir() if (p / "config.toml").is_file()]
    return RunDir.open(path)


def metrics_without_timing(run: RunDir) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "round_s"} for r in run.read_metrics()]


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["inline", "processes"])
def test_sigkilled_server_resumes_from_its_checkpoint_to_the_same_weights_and_metrics(
    tmp_path: Path, executor: str
) -> None:
    raw = tiny_raw(fl={"rounds": ROUNDS, "checkpoint_every": 1}, runtime={"executor": executor, "workers": 2})
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(to_toml(raw))
    finish(cli(cfg, "--out", str(tmp_path / "reference")))
    reference = only_run(tmp_path / "reference")

    proc = cli(cfg, "--out", str(tmp_path / "killed"))
    members: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            members = sorted(set(members) | set(group_members(proc.pid)))  # the server and its workers
            if list((tmp_path / "killed").glob(f"*/checkpoints/round-{KILL_AFTER:05d}.pt")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the server ended before it could be killed"
        members = sorted(set(members) | set(group_members(proc.pid)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60  # workers notice the closed pipe and exit; give a loaded machine time
        while group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = group_members(proc.pid)
    finally:
        if group_members(proc.pid):  # never leave our own processes behind, whatever the assertion says
            os.killpg(proc.pid, signal.SIGKILL)
    assert not survivors, f"processes of the killed server outlived it: {survivors}"
    if executor == "processes":
        assert len(members) > 1, "expected the processes executor's workers in the server's process group"

    killed = only_run(tmp_path / "killed")
    done = int(killed.latest_checkpoint().stem.split("-")[1])
    assert KILL_AFTER <= done < ROUNDS and not (killed.path / "final_weights.pt").exists()
    finish(cli(cfg, "--resume", str(killed.path)))
    assert torch.equal(torch.load(killed.path / "final_weights.pt"), torch.load(reference.path / "final_weights.pt"))
    assert metrics_without_timing(killed) == metrics_without_timing(reference)
    assert [r["round"] for r in killed.read_metrics()] == list(range(1, ROUNDS + 1))
