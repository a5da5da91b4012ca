"""The admin's round decisions without processes: one commit per round, for the current attempt only,
and READY counts held to the data owners' declarations."""

from __future__ import annotations

import time
from typing import Any

from siegecraft.enclave.masks import ZeroSumMaskIssuer
from siegecraft.enclave.roles.admin import AdminRole, RoundState
from siegecraft.enclave.roles.base import Message
from siegecraft.enclave.tree import AggregationTree

SESSION = b"s" * 16


def admin(attempt: int = 1) -> tuple[AdminRole, list[tuple[str, str, dict[str, Any]]]]:
    """An admin in round 1, aggregating `attempt` over te-0 and te-1; `sent` records its sends."""
    role = AdminRole.__new__(AdminRole)
    role.tree = AggregationTree.build(["te-0", "te-1"], 2)
    role.layout = [4]
    role.provisioned = {"te-0": 10, "te-1": 20}
    now = time.monotonic()
    state = RoundState(1, ["te-0", "te-1"], now + 60, now + 240, phase="aggregate", attempt=attempt,
                       survivors=["te-0", "te-1"], total=30)
    _, state.blinding = ZeroSumMaskIssuer(SESSION, [4], 32).issue_blinded(1, attempt, ["te-0", "te-1"], "root")
    role.state = state
    sent: list[tuple[str, str, dict[str, Any]]] = []
    role.send = lambda dst, kind, meta, arrays=None: sent.append((dst, kind, meta))  # type: ignore[method-assign]
    role.audit = lambda *a, **k: None  # type: ignore[method-assign]
    return role, sent


def summed(attempt: int, num_samples: int = 30) -> Message:
    return Message("SUMMED", "root", {"rnd": 1, "attempt": attempt, "num_samples": num_samples}, {}, True)


def test_a_late_sum_of_an_earlier_attempt_is_never_committed() -> None:
    role, sent = admin(attempt=1)
    role.handle(summed(0))  # attempt 0's sum, delayed by the host until after the remask
    assert sent == [] and role.state.phase == "aggregate"
    role.handle(summed(1))
    assert [(dst, kind) for dst, kind, _ in sent] == [("root", "COMMIT"), ("owner", "COMMITTED")]
    commit = sent[0][2]
    assert commit["attempt"] == 1 and len(bytes.fromhex(commit["unblind"])) == 32
    assert role.state.phase == "done" and role.state.outcome == "committed" and role.state.blinding is None


def test_a_round_commits_once_and_is_never_aborted_after() -> None:
    role, sent = admin(attempt=0)
    role.handle(summed(0))
    role.handle(summed(0))  # a second report (it cannot pass the channel twice, but still)
    role.handle(Message("ALERT", "te-0", {"rnd": 1, "reason": "late"}, {}, True))
    role._abort("superseded by round 2")
    assert [kind for _, kind, _ in sent] == ["COMMIT", "COMMITTED"]
    assert role.state.outcome == "committed"


def test_a_sum_with_the_wrong_sample_count_aborts_instead_of_committing() -> None:
    role, sent = admin(attempt=0)
    role.state.planned, role.down = ["te-0", "te-1"], set()
    role.channels = {}
    role.handle(summed(0, num_samples=31))
    assert ("owner", "ABORT") in [(dst, kind) for dst, kind, _ in sent]
    assert "COMMIT" not in [kind for _, kind, _ in sent] and role.state.outcome == "aborted"


def test_ready_counts_must_match_the_declared_counts() -> None:
    role, _ = admin()
    role.state.phase = "train"
    role.handle(Message("READY", "te-0", {"rnd": 1, "ok": True, "num_samples": 10}, {}, True))
    role.handle(Message("READY", "te-1", {"rnd": 1, "ok": True, "num_samples": 999}, {}, True))
    assert role.state.ready == {"te-0": 10}
    assert "declared 20" in role.state.failed["te-1"]
