"""One round, one result: the host cannot make the root release two attempts of the same round.

The attack (on_dropout="remask"): the host withholds one party's SUBMITTED notice and everything the root
sends the admin in the round. The admin, missing that notice, times out and remasks the round without the
party; meanwhile the first attempt (with every party) has been summed. If the root released both attempts,
the model owner would hold the weighted means of S and S - {X}: their weighted difference is X's exact
update. The admin must commit to one attempt per round and the root release only that one.

Checked: at most one RESULT of the round reaches the model owner (`ModelOwner.results`, read after
`ModelOwner.drain`), and the one it gets is the plaintext weighted mean of exactly its survivors; the
root's audit log shows at most one attempt unmasked or released per round; no role logs a round that
delivered a result as aborted because it was superseded; and once the host stops, the next round
aggregates every party. Two release points: right after the admin remasks, and long after its deadlines.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from siegecraft.enclave import CitadelSession

from .hostile_host import HostileHost, Schedule, Target
from .round_oracle import (
    RoundRun,
    audit_problems,
    outcome_problems,
    record_results,
    results_for,
    results_problems,
    run_bounded,
    wait_until,
)
from .synthetic import config, read_audit

PARTIES = 5
VICTIM = 2
TIMEOUT_S = 1.5
BOUND_S = 10 * TIMEOUT_S + 5.0  # a round must end (result or abort) within this


@pytest.mark.parametrize("release", ["after_remask", "after_two_timeouts"])
def test_withheld_notices_cannot_make_the_root_release_two_attempts(tmp_path: Path, release: str) -> None:
    cfg = config(PARTIES, on_dropout="remask", round_timeout_s=TIMEOUT_S, audit_dir=str(tmp_path))
    clients = list(range(PARTIES))
    host = HostileHost()
    session = CitadelSession(cfg, tamper=host)
    host.attach(session.relay)
    delivered: set[int] = set()
    with session:
        owner = session.owner
        record_results(owner)

        host.next_round(1)  # untouched
        first = run_bounded(session, 1, clients, BOUND_S)
        assert not outcome_problems(cfg, first, BOUND_S) and first.result is not None, first.error
        owner.drain(0.2)

        # round 2: withhold te-VICTIM's SUBMITTED and every root -> admin frame until the admin has remasked
        host.next_round(2, Schedule.hold(Target(f"te-{VICTIM}", "admin", frozenset({"SUBMITTED"})),
                                         Target("root", "admin"), label=f"withhold te-{VICTIM} SUBMITTED + root->admin"))
        run = RoundRun(session, 2, clients).start()
        started = time.monotonic()
        if release == "after_remask":  # the admin re-sent masks: a new attempt without the victim
            remasked = wait_until(lambda: host.count("MASK", "admin", "te") > PARTIES, 3 * TIMEOUT_S)
        else:  # long after the admin's deadlines for the notice and for the total
            time.sleep(max(0.0, started + 2.5 * TIMEOUT_S - time.monotonic()))
            remasked = host.count("MASK", "admin", "te") > PARTIES
        withheld = host.stats["delay"]
        host.release(untouched=True)
        run.join(BOUND_S)
        if run.hung:
            session.close()
            run.reap()
        assert not run.hung, f"round 2 did not end within {BOUND_S:g} s\n{host.describe()}"
        owner.drain(2 * TIMEOUT_S)

        error = f" ({type(run.error).__name__}: {run.error})" if run.error else ""
        context = (f"\nround 2: {run.outcome} after {run.seconds:.1f} s{error}; remask seen: {remasked}; "
                   f"frames withheld: {withheld}\n{host.describe()}")
        assert host.count("SUBMITTED", f"te-{VICTIM}", "admin") >= 1 and withheld >= 2, \
            f"the victim's SUBMITTED notice was not withheld: the attack was not mounted{context}"
        problems = outcome_problems(cfg, run, BOUND_S) + results_problems(cfg, owner, 2, clients)
        if run.result is not None or results_for(owner, 2):
            delivered.add(2)

        # the host stops; the next round is clean and delivers exactly one result
        host.next_round(3)
        third = run_bounded(session, 3, clients, BOUND_S)
        owner.drain(0.5)
        problems += outcome_problems(cfg, third, BOUND_S) + results_problems(cfg, owner, 3, clients)
        if third.result is None or third.result.survivors != clients:
            problems.append(f"round 3 (untouched) did not aggregate every client: {third.outcome} {third.error or ''}")
        if len(results_for(owner, 1)) != 1 or len(results_for(owner, 3)) != 1:
            problems.append(f"untouched rounds 1 and 3 got {len(results_for(owner, 1))} and "
                            f"{len(results_for(owner, 3))} RESULTs, not one each")
        delivered |= {1, 3}
        host.flush()
    problems += [text for _, text in audit_problems(read_audit(tmp_path), delivered)]
    assert not problems, "\n".join(problems) + context
