"""An aggregator's running sums: inputs are added as they arrive, and only the admin's named children count."""

from __future__ import annotations

from typing import Any

import numpy as np

from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.masks import ZeroSumMaskIssuer
from siegecraft.enclave.roles.aggregator import AggregatorRole
from siegecraft.enclave.roles.base import ADMIN, Message

CODEC = FixedPointCodec(8.0, 16, 64)
SESSION = b"s" * 16


def aggregator(children: set[str]) -> tuple[AggregatorRole, list[tuple[str, str, dict[str, Any], Any]]]:
    """The role's summing logic without a process, channels or attestation; `sent` records its sends."""
    role = AggregatorRole.__new__(AggregatorRole)
    role.id, role.codec, role.is_root, role.parent = "agg-1-0", CODEC, False, "root"
    role.children, role.expect, role.sums = children, None, {}
    role.blinded, role.released_round, role.session = {}, -1, SESSION
    sent: list[tuple[str, str, dict[str, Any], Any]] = []
    role.send = lambda dst, kind, meta, arrays=None: sent.append((dst, kind, meta, arrays))  # type: ignore[method-assign]
    role.audit = lambda *a, **k: None  # type: ignore[method-assign]
    role.audit_vector = lambda *a, **k: None  # type: ignore[method-assign]
    return role, sent


def masked(src: str, vector: np.ndarray, rnd: int = 1, attempt: int = 0) -> Message:
    meta = {"rnd": rnd, "attempt": attempt, "counts": {src.removeprefix("te-"): 3}, "t_sent": 1.0}
    return Message("MASKED", src, meta, {"v": vector}, True)


def expect(children: list[str], rnd: int = 1, attempt: int = 0) -> Message:
    return Message("EXPECT", ADMIN, {"rnd": rnd, "attempt": attempt, "children": children}, {}, True)


def vectors(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 2**64 - 1, 1000, dtype=np.uint64, endpoint=True) for _ in range(n)]


def test_inputs_before_and_after_expect_sum_modulo_m_once() -> None:
    role, sent = aggregator({"te-0", "te-1", "te-2"})
    v = vectors(3)
    role.handle(masked("te-0", v[0]))
    role.handle(masked("te-0", v[1]))  # a second input from the same child is ignored
    role.handle(expect(["te-0", "te-1", "te-2"]))
    role.handle(masked("te-1", v[1]))
    assert sent == []  # te-2 is still missing
    role.handle(masked("te-2", v[2]))
    ((dst, kind, meta, arrays),) = sent
    assert (dst, kind, meta["counts"]) == ("root", "PARTIAL", {"0": 3, "1": 3, "2": 3})
    np.testing.assert_array_equal(arrays["v"], v[0] + v[1] + v[2])  # uint64 wraps: the sum is modulo 2^64
    assert role.sums == {} and role.expect is None


def test_an_input_from_a_child_the_admin_did_not_name_fails_closed() -> None:
    role, sent = aggregator({"te-0", "te-1", "te-2"})
    v = vectors(3)
    for i in range(3):
        role.handle(masked(f"te-{i}", v[i]))
    role.handle(expect(["te-0", "te-1"]))
    ((dst, kind, meta, _),) = sent
    assert (dst, kind, meta["rnd"]) == (ADMIN, "ALERT", 1) and "te-2" in meta["reason"]
    assert role.sums == {}


def test_sums_of_an_earlier_attempt_are_dropped_by_a_later_expect() -> None:
    role, sent = aggregator({"te-0", "te-1"})
    v = vectors(2)
    role.handle(masked("te-0", v[0], attempt=0))
    role.handle(expect(["te-0", "te-1"], attempt=1))
    assert (1, 0) not in role.sums
    role.handle(masked("te-0", v[0], attempt=1))
    role.handle(masked("te-1", v[1], attempt=1))
    ((_, kind, meta, arrays),) = sent
    assert kind == "PARTIAL" and meta["attempt"] == 1
    np.testing.assert_array_equal(arrays["v"], v[0] + v[1])


def root_expect(children: list[str], total_samples: int, attempt: int = 0) -> Message:
    meta = {"rnd": 1, "attempt": attempt, "children": children, "t_ready": 0.5, "total_samples": total_samples}
    return Message("EXPECT", ADMIN, meta, {}, True)


def commit(attempt: int, seed: bytes, rnd: int = 1) -> Message:
    meta = {"rnd": rnd, "attempt": attempt, "unblind": seed.hex(), "layout": [2], "t_ready": 0.5}
    return Message("COMMIT", ADMIN, meta, {}, True)


def root_with_blinded_attempts(attempts: int) -> tuple[AggregatorRole, list, list[bytes]]:
    """A root that summed `attempts` complete attempts of round 1 (each blinded), plus their seeds."""
    role, sent = aggregator({"te-0", "te-1"})
    role.is_root, role.id = True, "root"
    issuer = ZeroSumMaskIssuer(SESSION, [2], 64)
    updates = {"te-0": np.array([0.5, -1.0]), "te-1": np.array([0.25, 2.0])}
    seeds = []
    for attempt in range(attempts):
        grants, blinding = issuer.issue_blinded(1, attempt, list(updates), "root")
        assert blinding.seed is not None
        seeds.append(blinding.seed)
        role.handle(root_expect(list(updates), total_samples=6, attempt=attempt))
        for src, update in updates.items():  # what each training enclave sends: encoded (weight 3/6), masked
            role.handle(masked(src, grants[src].add_to(CODEC.encode(update, weight=0.5), [2], 64), attempt=attempt))
    return role, sent, seeds


def test_root_reports_a_blinded_sum_and_releases_the_mean_only_on_the_admins_commit() -> None:
    role, sent, (seed,) = root_with_blinded_attempts(1)
    ((admin, kind, meta, arrays),) = sent
    assert (admin, kind, meta, arrays) == (ADMIN, "SUMMED", {"rnd": 1, "attempt": 0, "num_samples": 6}, None)
    held = role.blinded[(1, 0)].total
    assert np.abs(CODEC.decode(held)).max() > 1e3  # still blinded: the masks summed to B, not to zero
    role.handle(commit(attempt=1, seed=seed))  # an attempt the root never summed: nothing happens
    assert len(sent) == 1
    role.handle(commit(attempt=0, seed=seed))
    dst, kind, meta, arrays = sent[1]
    assert (dst, kind, meta["num_samples"], meta["attempt"]) == ("owner", "RESULT", 6, 0)
    np.testing.assert_allclose(arrays["mean"], [0.375, 0.5], atol=CODEC.error_bound(2))
    role.handle(commit(attempt=0, seed=seed))  # a second commit (a replay that got through) releases nothing
    assert len(sent) == 2 and role.blinded == {}


def test_root_releases_at_most_one_attempt_per_round() -> None:
    """Two attempts of one round both complete at the root (the remask race): only one ever leaves it."""
    role, sent, seeds = root_with_blinded_attempts(2)
    assert [kind for _, kind, _, _ in sent] == ["SUMMED", "SUMMED"]
    role.handle(commit(attempt=1, seed=seeds[1]))
    role.handle(commit(attempt=0, seed=seeds[0]))
    results = [meta["attempt"] for _, kind, meta, _ in sent if kind == "RESULT"]
    assert results == [1]


def test_root_alerts_when_the_counts_do_not_add_up_to_the_admins_total() -> None:
    role, sent = aggregator({"te-0", "te-1"})
    role.is_root = True
    role.handle(root_expect(["te-0", "te-1"], total_samples=7))  # the inputs say 3 + 3
    for src in ("te-0", "te-1"):
        role.handle(masked(src, CODEC.encode(np.array([1.0, 1.0]), weight=0.5)))
    ((dst, kind, meta, _),) = sent
    assert (dst, kind, meta["rnd"]) == (ADMIN, "ALERT", 1) and "add up to 6" in meta["reason"]
