"""Liveness against a hostile host: one lost, duplicated or altered message costs at most its own round.

For every message kind of a round, the host drops, duplicates or alters the first one of round r; the
round may end with a result or an abort (with a reason), and round r + 1, left alone, must give the
exact mean of every party. Every round returns within the documented bound, whatever was lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from siegecraft.enclave import CitadelSession, RoundAbortedError
from siegecraft.enclave.roles.admin import ROUND_BUDGET
from siegecraft.enclave.wire import Envelope, round_epoch

from .synthetic import config, global_weights, mean_error_bound, plaintext_mean

TIMEOUT_S = 1.5
PARTIES = [0, 1, 2, 3]
ROUND_KINDS = ["ROUND_PLAN", "PLANNED", "ROUND_START", "READY", "MASK", "EXPECT", "MASKED", "PARTIAL", "SUBMITTED",
               "SUMMED", "COMMIT", "COMMITTED", "RESULT"]
ACTIONS = ["drop", "duplicate", "tamper"]
#: the longest a round may take: the owner's wait, plus slack for a loaded machine
BOUND_S = (ROUND_BUDGET + 1) * TIMEOUT_S + 5.0
#: rounds tried until the spoiled kind is really sent (a round can abort on a timeout before reaching it)
LOAD_ATTEMPTS = 3
#: how long a finished round's last messages may take to cross the relay
SETTLE_S = 3.0


@dataclass
class OneShot:
    """Applies `action` to the first envelope of `kind` in round `rnd` (other traffic passes untouched)."""

    kind: str = ""
    action: str = ""
    rnd: int = -1
    hits: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, env: Envelope, data: bytes) -> list[bytes]:
        with self.lock:
            if env.kind != self.kind or env.epoch != round_epoch(self.rnd) or self.hits:
                return [data]
            self.hits.append(f"{self.action} {env.kind} {env.src}->{env.dst}")
        if self.action == "drop":
            return []
        if self.action == "duplicate":
            return [data, data]
        raw = bytearray(data)
        raw[-5] ^= 0x40  # inside the ciphertext (or its tag)
        return [bytes(raw)]


@pytest.fixture(scope="module")
def deployment() -> Iterator[tuple[CitadelSession, OneShot]]:
    host = OneShot()
    with CitadelSession(config(len(PARTIES), round_timeout_s=TIMEOUT_S), tamper=host) as session:
        yield session, host


def timed_round(session: CitadelSession, rnd: int) -> tuple[object, float]:
    start = time.monotonic()
    try:
        outcome: object = session.run_round(rnd, global_weights(rnd), PARTIES)
    except RoundAbortedError as exc:
        outcome = exc
    return outcome, time.monotonic() - start


def check_exact(session: CitadelSession, outcome: object, survivors: list[int], rnd: int) -> None:
    assert not isinstance(outcome, RoundAbortedError), f"round {rnd} aborted: {outcome}"
    expected, count = plaintext_mean(session.config, survivors, rnd, global_weights(rnd))
    assert outcome.survivors == survivors and outcome.num_samples == count  # type: ignore[attr-defined]
    assert np.abs(outcome.mean - expected).max() <= mean_error_bound(session.config.codec, len(survivors))  # type: ignore[attr-defined]


_next_round = iter(range(1, 10_000, 2))


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("kind", ROUND_KINDS)
def test_one_spoiled_message_costs_at_most_its_round(deployment: tuple[CitadelSession, OneShot], kind: str,
                                                      action: str) -> None:
    session, host = deployment
    for _attempt in range(LOAD_ATTEMPTS):
        rnd = next(_next_round)
        with host.lock:
            host.kind, host.action, host.rnd, host.hits = kind, action, rnd, []
        outcome, took = timed_round(session, rnd)
        assert took < BOUND_S, f"round {rnd} took {took:.1f} s after {host.hits}"
        # the root's RESULT can reach the owner before the admin's COMMITTED has crossed the relay
        settle = time.monotonic() + SETTLE_S
        while not host.hits and time.monotonic() < settle:
            session.owner.drain(0.1)
        if host.hits:
            break
        # the round ended before any `kind` was sent: on a loaded machine a party can miss the 1.5 s
        # timeout first; that round must still end cleanly (an abort with a reason), and the next try spoils
        assert isinstance(outcome, RoundAbortedError) and outcome.reason, f"round {rnd}: {outcome}"
        session.owner.drain(0.2)
    assert host.hits, f"no {kind} crossed the relay in {LOAD_ATTEMPTS} rounds (the last: {rnd})"
    if isinstance(outcome, RoundAbortedError):
        assert outcome.reason and action != "duplicate", f"{host.hits}: {outcome}"
    else:  # a result is always exact, for the parties it names
        check_exact(session, outcome, outcome.survivors, rnd)  # type: ignore[attr-defined]
        assert set(outcome.survivors) <= set(PARTIES) and len(outcome.survivors) >= 2  # type: ignore[attr-defined]
    session.owner.drain(0.2)  # anything still in flight for round rnd arrives now, not in the next round
    assert len(session.owner.results.get(rnd, [])) <= 1
    clean, took = timed_round(session, rnd + 1)
    check_exact(session, clean, PARTIES, rnd + 1)
    assert len(session.owner.results[rnd + 1]) == 1
