"""Seeded fuzz of the host against live deployments (on_dropout="remask"): random delays, drops,
duplicates, reorders and cross-round replays, one schedule per round, with the one-result oracle.

Per attacked round, exactly one of: run_round returned a result whose survivors are >= 2 of the planned
clients, with their sample count and their plaintext weighted mean (codec bound); or RoundAbortedError
with a reason. Never two RESULTs for a round at the model owner, never a wrong mean, never a hang (each
round ends within BOUND_S), never a role process that exits, and every frame the host replays from an
earlier round is refused as a replay (receivers' audit logs). The root's audit shows at most one attempt
unmasked per round, and no role logs a round that delivered a result as aborted for being superseded.
Attacked rounds need not succeed: the outcomes are counted and printed.

A deployment serves many schedules: it warms up with an untouched round, then each schedule attacks one
round; the host releases what it held at the boundary after a drain longer than the admin's deadlines,
and the next round is sometimes run untouched. A new deployment (4-6 parties, fanout 2-3, drawn from
the seed of its first schedule) starts every PER_DEPLOYMENT schedules, and whenever the host broke a
channel by its own model of the channels (conservative: the channels now resynchronise every round), a
round hung or a role exited.

Replay a failing schedule on a fresh deployment with the line the failure message gives:
    CITADEL_FUZZ_REPLAY=<seed>:<parties>:<fanout>[,...] pytest tests/enclave/test_session_fuzz.py -k replay -s
A schedule's frame decisions depend only on its seed and the frames' headers, so a replay repeats them;
what the roles do in between depends on timing (timeouts), so an outcome can differ between runs.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from siegecraft.enclave import CitadelSession, RoundAbortedError

from .hostile_host import HostileHost, Schedule
from .round_oracle import (
    RoundRun,
    audit_problems,
    outcome_problems,
    record_results,
    replay_problems,
    results_for,
    results_problems,
    run_bounded,
)
from .synthetic import config, read_audit

TIMEOUT_S = 1.0
BOUND_S = 10 * TIMEOUT_S + 5.0  # a round must end (result or abort) within this
DRAIN_S = 1.5 * TIMEOUT_S + 0.5  # after an attacked round, before the boundary: past the admin's deadlines
GAP_S = 0.3
BASE_SEED = 41_000
DEFAULT_SEEDS = list(range(BASE_SEED, BASE_SEED + 12))
SLOW_SEEDS = list(range(BASE_SEED + 1_000, BASE_SEED + 1_200))
REPLAY_ENV = "CITADEL_FUZZ_REPLAY"


#: finding classes, by a phrase of the oracle's message
CLASSES = (
    ("two RESULTs for one round", ("RESULTs",)),
    ("root released two attempts", ("unmasked/released attempts",)),
    ("wrong result", ("differs from the plaintext", "num_samples", "are not >= 2", "shape")),
    ("hang", ("(hang)",)),
    ("delivered round logged as superseded", ("superseded",)),
    ("replay not refused", ("refused replays",)),
    ("role exited", ("role processes exited",)),
    ("unexpected exception", ("run_round raised", "hook raised", "without a reason")),
)


def classify(finding: str) -> list[str]:
    return [name for name, phrases in CLASSES if any(p in finding for p in phrases)] or ["other"]


def deployment_params(seed: int) -> tuple[int, int]:
    """(parties, fanout) of a deployment whose first schedule has this seed."""
    rng = random.Random(f"deployment/{seed}")
    return rng.choice([4, 5, 6]), rng.choice([2, 3])


@dataclass
class Tally:
    schedules: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # attacked rounds: result / aborted / hang / error
    by_shape: Counter[str] = field(default_factory=Counter)  # (schedule shape, outcome)
    followups: Counter[str] = field(default_factory=Counter)
    late_results: int = 0  # a RESULT reached the model owner after its run_round had aborted
    warm_ups: Counter[str] = field(default_factory=Counter)
    deployments: int = 0
    restarts: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        shapes = ", ".join(f"{k}: {n}" for k, n in sorted(self.by_shape.items()))
        return (f"fuzz: {self.schedules} schedules in {time.monotonic() - self.started:.0f} s; attacked rounds "
                f"{dict(self.outcomes)} ({shapes}); untouched follow-up rounds {dict(self.followups)}; "
                f"RESULT after an abort: {self.late_results}; deployments {self.deployments} "
                f"(warm-up rounds {dict(self.warm_ups)}; restarts {dict(self.restarts)}); host actions "
                f"{dict(self.actions)}; findings {len(self.findings)}{self.classes()}")

    def classes(self) -> str:
        seeds: dict[str, list[str]] = {}
        for finding in self.findings:
            match = re.match(r"(seed \d+|deployment of seeds \[[^]]*\])", finding)
            for name in classify(finding):
                seeds.setdefault(name, []).append(match.group(1).split()[-1] if match else "?")
        return "".join(f"\n  {name}: {len(found)} (seeds {', '.join(dict.fromkeys(found))})"
                       for name, found in seeds.items())

    def report(self) -> str:
        shown = self.findings[:6]
        rest = [f.splitlines()[0] for f in self.findings[6:]]
        return "\n\n".join([self.summary(), *shown, *(["further findings:\n" + "\n".join(rest)] if rest else [])])


class Deployment:
    """One live deployment under a hostile host; `stale` says why it must not take more schedules."""

    def __init__(self, parties: int, fanout: int, audit_dir: Path) -> None:
        self.parties, self.fanout, self.audit_dir = parties, fanout, audit_dir
        self.cfg = config(parties, fanout=fanout, on_dropout="remask", round_timeout_s=TIMEOUT_S,
                          start_timeout_s=30.0, audit_dir=str(audit_dir))
        self.clients = list(range(parties))
        self.leaves = [f"te-{c}" for c in self.clients]
        self.host = HostileHost()
        self.session = CitadelSession(self.cfg, tamper=self.host)
        self.host.attach(self.session.relay)
        self.session.start()
        self.owner = self.session.owner
        record_results(self.owner)
        self.rnd = 0
        self.schedules = 0
        self.round_seed: dict[int, int] = {}
        self.planned: dict[int, list[int]] = {}
        self.delivered: set[int] = set()
        self.reported: set[int] = set()  # rounds with a double RESULT already reported
        self.stale: str | None = None
        self.closed = False
        self.checked = False

    def where(self, seed: int | None, rnd: int) -> str:
        replay = f"{REPLAY_ENV}={seed}:{self.parties}:{self.fanout}" if seed is not None else "warm-up round"
        return f"seed {seed} (parties {self.parties}, fanout {self.fanout}, round {rnd}; {replay})"

    def _round(self, rnd: int, planned: list[int], seed: int | None) -> RoundRun:
        self.round_seed[rnd], self.planned[rnd] = seed if seed is not None else -1, planned
        run = run_bounded(self.session, rnd, planned, BOUND_S)
        if run.hung:
            self.stale = "hang"
            self._stop()  # closes the model owner's mailbox, which ends the waiting round
            run.reap()
        return run

    def _judge(self, run: RoundRun) -> list[str]:
        problems = outcome_problems(self.cfg, run, BOUND_S)
        if not run.hung:
            problems += results_problems(self.cfg, self.owner, run.rnd, run.planned)
            if len(results_for(self.owner, run.rnd)) > 1:
                self.reported.add(run.rnd)
            if run.result is not None or results_for(self.owner, run.rnd):
                self.delivered.add(run.rnd)
        return problems

    def warm_up(self, tally: Tally) -> list[str]:
        """An untouched round (it also gives the host frames to replay later); judged like any other."""
        self.rnd += 1
        self.host.next_round(self.rnd)
        run = self._round(self.rnd, self.clients, None)
        if not self.closed:
            self.owner.drain(0.1)
        tally.warm_ups[run.outcome] += 1
        problems = self._judge(run)
        return [f"{self.where(None, run.rnd)}: {p}\n{self.host.describe()}" for p in problems]

    def run_schedule(self, seed: int, tally: Tally) -> list[str]:
        rng = random.Random(f"plan/{seed}")
        planned = self.clients if rng.random() < 0.7 else sorted(rng.sample(self.clients, rng.randint(3, self.parties)))
        follow = rng.random() < 0.4
        schedule = Schedule.random(seed, [f"te-{c}" for c in planned])
        log_start = len(self.host.log)
        shape = schedule.label.split()[0]
        self.schedules += 1
        tally.schedules += 1
        actions_before = sum(self.host.stats.values())

        self.rnd += 1
        rnd = self.rnd
        self.host.next_round(rnd, schedule)
        run = self._round(rnd, planned, seed)
        acted = sum(self.host.stats.values()) > actions_before
        if not self.closed:
            self.owner.drain(DRAIN_S if acted else GAP_S)
            self.rnd += 1
            self.host.next_round(self.rnd)  # boundary: what the host held is delivered; the gap is untouched
            self.owner.drain(GAP_S)
        problems = self._judge(run)
        tally.outcomes[run.outcome] += 1
        tally.by_shape[f"{shape}/{run.outcome}"] += 1
        if isinstance(run.error, RoundAbortedError) and results_for(self.owner, rnd):
            tally.late_results += 1

        if not self.closed:
            dead = sorted(r for r, p in self.session.processes.items() if not p.is_alive())
            broken = self.host.broken_paths()
            if dead:
                problems.append(f"role processes exited: {dead}")
                self.stale = "role exited"
            elif broken:
                self.stale = "broken channel"
            elif follow:  # the host leaves this round alone
                after = self._round(self.rnd, self.clients, seed)
                if not self.closed:
                    self.owner.drain(GAP_S)
                problems += self._judge(after)
                tally.followups[after.outcome] += 1
        if self.host.errors:
            problems.append(f"the host's hook raised: {self.host.errors[:3]}")
            self.host.errors.clear()
        if not problems:
            return []
        head = f"{self.where(seed, rnd)}: planned {planned}; {run.outcome} after {run.seconds:.1f} s"
        if run.error:
            head += f" ({'once the deployment was closed: ' if run.hung else ''}{type(run.error).__name__}: {run.error})"
        return [f"{head}\n  " + "\n  ".join(problems) + f"\n{self.host.describe(since=log_start)}"]

    def _stop(self) -> None:
        """Release what the host holds and stop every role (STOP follows the released frames)."""
        if not self.closed:
            self.closed = True
            self.host.flush()
            try:
                if self.stale != "hang":
                    self.owner.drain(GAP_S)
            finally:
                self.session.close()

    def close(self) -> list[str]:
        """Stop the deployment, then check the audit logs and the model owner's RESULT record."""
        self._stop()
        if self.checked:
            return []
        self.checked = True
        problems = []
        for rnd, entries in sorted(self.owner.results.items()):
            if len(entries) > 1 and rnd not in self.reported:
                problems.append((rnd, f"round {rnd}: the model owner received {len(entries)} RESULTs by the end"))
        records = read_audit(self.audit_dir)
        problems += audit_problems(records, self.delivered)
        found = [f"{self.where(self.round_seed.get(rnd), rnd)}: {text}" for rnd, text in problems]
        seeds = sorted({s for s in self.round_seed.values() if s >= 0})
        found += [f"deployment of seeds {seeds} (parties {self.parties}, fanout {self.fanout}): {text}"
                  for text in replay_problems(records, self.host.verdicts)]
        return found


def fuzz(seeds: list[int], tmp_path: Path, per_deployment: int,
         params: tuple[int, int] | None = None) -> Tally:
    tally = Tally()
    deployment: Deployment | None = None
    try:
        for seed in seeds:
            if deployment is None or deployment.stale or deployment.schedules >= per_deployment:
                if deployment is not None:
                    tally.restarts[deployment.stale or "rotation"] += 1
                    tally.actions.update(deployment.host.stats)
                    tally.findings += deployment.close()
                parties, fanout = params or deployment_params(seed)
                deployment = Deployment(parties, fanout, tmp_path / f"deployment-{tally.deployments}")
                tally.deployments += 1
                tally.findings += deployment.warm_up(tally)
            tally.findings += deployment.run_schedule(seed, tally)
    finally:
        if deployment is not None:
            tally.actions.update(deployment.host.stats)
            tally.findings += deployment.close()
    print(tally.summary())
    return tally


def test_fuzz_host_schedules(tmp_path: Path) -> None:
    """12 seeded schedules over two deployments (default suite)."""
    tally = fuzz(DEFAULT_SEEDS, tmp_path, per_deployment=6)
    if tally.findings:
        pytest.fail(tally.report(), pytrace=False)


@pytest.mark.slow
def test_fuzz_host_schedules_long(tmp_path: Path) -> None:
    """200 seeded schedules, a new deployment every 20 (pytest -m slow)."""
    tally = fuzz(SLOW_SEEDS, tmp_path, per_deployment=20)
    if tally.findings:
        pytest.fail(tally.report(), pytrace=False)
    assert tally.schedules == len(SLOW_SEEDS)


@pytest.mark.skipif(not os.environ.get(REPLAY_ENV), reason=f"set {REPLAY_ENV}=<seed>:<parties>:<fanout>[,...]")
def test_fuzz_replay(tmp_path: Path) -> None:
    """Each listed schedule alone on a fresh deployment of the given size."""
    tally = Tally()
    for item in os.environ[REPLAY_ENV].split(","):
        seed, parties, fanout = (int(x) for x in item.split(":"))
        part = fuzz([seed], tmp_path / f"seed-{seed}", per_deployment=1, params=(parties, fanout))
        tally.findings += part.findings
    if tally.findings:
        pytest.fail("\n\n".join(tally.findings), pytrace=False)
