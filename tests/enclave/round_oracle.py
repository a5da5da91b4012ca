"""What a round under a hostile host may end in, and the checks the host tests share.

A round ends in exactly one of: a result whose survivors are >= 2 of the planned clients and whose mean is
the plaintext weighted mean of exactly those survivors (within the codec bound), or RoundAbortedError with
a reason. The model owner never receives two RESULTs for one round (two attempts of the same round differ
by the updates of the parties between them: their weighted difference is those parties' updates).

The model owner's record of RESULTs is `ModelOwner.results` (round -> the attempt of every RESULT it
accepted from the root) with `ModelOwner.drain(seconds)` to keep reading its mailbox between rounds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from siegecraft.enclave import CitadelSession, RoundAbortedError
from siegecraft.enclave.roles.base import Message
from siegecraft.enclave.synthetic_workload import synthetic_update

from .synthetic import global_weights, mean_error_bound, plaintext_mean

RELEASE_EVENTS = ("released",)  # the root's audit event for an attempt's total leaving it


def record_results(owner: Any) -> None:
    """Keep every RESULT message the model owner accepts, mean included, as `owner.result_messages`
    (its own `results` keeps only the attempts, so that it does not hold a model per round)."""
    owner.result_messages = {}
    record = owner._record

    def _record(msg: Message) -> None:
        record(msg)
        if msg.kind == "RESULT" and msg.src == "root":
            owner.result_messages.setdefault(int(msg.meta["rnd"]), []).append(msg)

    owner._record = _record


def results_for(owner: Any, rnd: int) -> list[Message]:
    """The RESULTs of round `rnd` the model owner accepted (its own record and ours agree)."""
    messages = list(owner.result_messages.get(rnd, []))
    assert [int(m.meta["attempt"]) for m in messages] == owner.results.get(rnd, []), "owner.results disagrees"
    return messages


def entry_attempt(entry: Message) -> int:
    return int(entry.meta["attempt"])


def entry_mean_and_survivors(entry: Message) -> tuple[np.ndarray, list[int]]:
    return np.asarray(entry.arrays["mean"], dtype=np.float64), sorted(int(c) for c in entry.meta["counts"])


# -- running a round with a bound ------------------------------------------------------------------
@dataclass
class RoundRun:
    """A round running in a worker thread, so that a hang fails the test instead of blocking it."""

    session: CitadelSession
    rnd: int
    planned: list[int]
    result: Any = None
    error: BaseException | None = None
    seconds: float = 0.0
    hung: bool = False

    def start(self) -> RoundRun:
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"round-{self.rnd}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = self.session.run_round(self.rnd, global_weights(self.rnd), list(self.planned))
        except BaseException as exc:  # noqa: BLE001 - recorded and judged by the oracle
            self.error = exc
        self.seconds = time.monotonic() - self._start

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, bound_s: float) -> RoundRun:
        """Wait until `bound_s` seconds after the start; `hung` if it still runs (close the session, then
        call `reap`)."""
        self._thread.join(max(0.0, self._start + bound_s - time.monotonic()))
        self.hung = self._thread.is_alive()
        if self.hung:
            self.seconds = time.monotonic() - self._start
        return self

    def reap(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

    @property
    def outcome(self) -> str:
        if self.hung:
            return "hang"
        if self.result is not None:
            return "result"
        return "aborted" if isinstance(self.error, RoundAbortedError) else "error"


def run_bounded(session: CitadelSession, rnd: int, planned: list[int], bound_s: float) -> RoundRun:
    return RoundRun(session, rnd, planned).start().join(bound_s)


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


# -- the oracle ------------------------------------------------------------------------------------
def mean_problem(cfg: Any, rnd: int, mean: np.ndarray, survivors: list[int], planned: list[int],
                 num_samples: int | None = None) -> str | None:
    """Why a mean for `survivors` is not acceptable, or None."""
    if not set(survivors) <= set(planned) or len(survivors) < 2 or len(set(survivors)) != len(survivors):
        return f"survivors {survivors} are not >= 2 distinct planned clients (planned {planned})"
    expected, count = plaintext_mean(cfg, survivors, rnd, global_weights(rnd))
    if num_samples is not None and num_samples != count:
        return f"num_samples {num_samples} != {count}, the samples of survivors {survivors}"
    if mean.shape != expected.shape:
        return f"mean has shape {mean.shape}, expected {expected.shape}"
    error = float(np.abs(mean - expected).max())
    bound = mean_error_bound(cfg.codec, len(survivors))
    if not error <= bound:
        return f"mean differs from the plaintext mean of survivors {survivors} by {error:.3g} (bound {bound:.3g})"
    return None


def outcome_problems(cfg: Any, run: RoundRun, bound_s: float) -> list[str]:
    """The oracle on what run_round returned: a correct result, or RoundAbortedError with a reason."""
    if run.hung:
        return [f"round {run.rnd}: run_round neither returned nor raised within {bound_s:g} s (hang)"]
    if run.result is not None:
        r = run.result
        problem = mean_problem(cfg, run.rnd, np.asarray(r.mean), list(r.survivors), run.planned, r.num_samples)
        return [f"round {run.rnd}: result of attempt {r.attempt}: {problem}"] if problem else []
    if isinstance(run.error, RoundAbortedError):
        return [] if str(run.error.reason).strip() else [f"round {run.rnd}: RoundAbortedError without a reason"]
    return [f"round {run.rnd}: run_round raised {type(run.error).__name__}: {run.error}"]


def results_problems(cfg: Any, owner: Any, rnd: int, planned: list[int]) -> list[str]:
    """At most one RESULT per round reached the model owner, and each it got has a correct mean."""
    entries = results_for(owner, rnd)
    problems = []
    for entry in entries:
        problem = mean_problem(cfg, rnd, *entry_mean_and_survivors(entry), planned)
        if problem:
            problems.append(f"round {rnd}: RESULT of attempt {entry_attempt(entry)}: {problem}")
    if len(entries) > 1:
        attempts = [entry_attempt(e) for e in entries]
        problems.append(f"round {rnd}: the model owner received {len(entries)} RESULTs (attempts {attempts})"
                        + leak_note(cfg, rnd, entries))
    return problems


def leak_note(cfg: Any, rnd: int, entries: list[Message]) -> str:
    """If two RESULTs differ by exactly one party, show that their weighted difference is its update."""
    (m0, s0), (m1, s1) = entry_mean_and_survivors(entries[0]), entry_mean_and_survivors(entries[1])
    if len(s0) < len(s1):
        (m0, s0), (m1, s1) = (m1, s1), (m0, s0)
    gone = sorted(set(s0) - set(s1))
    if len(gone) != 1 or not set(s1) <= set(s0):
        return f"; survivors {s0} and {s1}"
    samples = {p.client_id: p.data["num_samples"] for p in cfg.parties}
    n0, n1 = sum(samples[c] for c in s0), sum(samples[c] for c in s1)
    victim = gone[0]
    recovered = (n0 * m0 - n1 * m1) / samples[victim]
    party = next(p for p in cfg.parties if p.client_id == victim)
    truth = synthetic_update(party.data, rnd, global_weights(rnd)).astype(np.float64)
    error = float(np.abs(recovered - truth).max())
    return (f"; survivors {s0} and {s1}: (N0*mean0 - N1*mean1)/n_{victim} equals client {victim}'s update "
            f"within {error:.2g}")


def audit_problems(records: list[dict[str, Any]], delivered: set[int]) -> list[tuple[int, str]]:
    """(round, problem): the root let more than one attempt of a round out, or a role logged a round that
    delivered a result as aborted because it was superseded."""
    problems = []
    released: dict[int, set[int]] = {}
    for rec in records:
        if rec.get("role") == "root" and rec.get("event") in RELEASE_EVENTS and "rnd" in rec:
            released.setdefault(int(rec["rnd"]), set()).add(int(rec.get("attempt", -1)))
    for rnd, attempts in sorted(released.items()):
        if len(attempts) > 1:
            problems.append((rnd, f"round {rnd}: the root unmasked/released attempts {sorted(attempts)}"))
    for rec in records:
        rnd = rec.get("rnd")
        if rnd is None or int(rnd) not in delivered or "abort" not in str(rec.get("event", "")):
            continue
        if "superseded" in str(rec.get("reason", "")) or "superseded" in str(rec.get("event", "")):
            problems.append((int(rnd), f"round {rnd}: delivered a result, yet {rec.get('role')} logged {rec}"))
    return problems


def replay_problems(records: list[dict[str, Any]], verdicts: dict[tuple[str, str, str, str], int]) -> list[str]:
    """Every frame the host delivered as a copy of one already accepted must show up as a refused replay in
    the receiver's audit log (roles with an audit log: all but the model owner)."""
    refused: dict[tuple[str, str, str], int] = {}
    for rec in records:
        if rec.get("event") == "dropped_replay":
            key = (str(rec.get("role")), str(rec.get("src")), str(rec.get("kind")))
            refused[key] = refused.get(key, 0) + 1
    problems = []
    for (dst, src, kind, verdict), n in sorted(verdicts.items()):
        if verdict != "replay" or dst in ("owner", "host"):
            continue
        got = refused.get((dst, src, kind), 0)
        if got < n:
            problems.append(f"{dst} logged {got} refused replays of {kind} from {src}; the host replayed {n}")
    return problems
