"""What an endpoint does with envelopes it cannot use: bounded, counted, never buffered without limit;
and what its messages and grants print: never a secret."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from siegecraft.enclave import CitadelSession
from siegecraft.enclave.broadcast import Ticket
from siegecraft.enclave.masks import MaskDomain, MaskGrant, ZeroSumMaskIssuer
from siegecraft.enclave.roles.base import MAX_HELD, Endpoint, Message
from siegecraft.enclave.wire import PLAINTEXT_SEQ, Envelope, pack

from .synthetic import config, global_weights, read_audit


class _NoMailbox:
    def __init__(self) -> None:
        self.overflow = {"count": 0, "bytes": 0}


def endpoint() -> Endpoint:
    return Endpoint("te-0", _NoMailbox(), b"m" * 32)  # type: ignore[arg-type]


def garbage(i: int, size: int = 100) -> Envelope:
    return Envelope("MASKED", f"evil-{i % 7}", "te-0", i, os.urandom(size), 1)


def test_set_up_holds_a_bounded_number_of_early_envelopes_then_drops_the_rest() -> None:
    ep = endpoint()
    for i in range(MAX_HELD + 50):
        assert ep.accept(garbage(i)) is None
    assert len(ep.held) == MAX_HELD
    assert ep.dropped_unknown == {"count": 50, "bytes": 50 * 100}
    ep.end_setup()  # no channel opened for them: every held envelope is dropped and counted
    assert ep.held == [] and ep.held_bytes == 0
    assert ep.dropped_unknown["count"] == MAX_HELD + 50


def test_after_set_up_unknown_senders_and_late_handshakes_are_dropped_at_once() -> None:
    ep = endpoint()
    ep.end_setup()
    for i in range(2_000):
        assert ep.accept(garbage(i, 10)) is None
    hello = Envelope("HELLO", "evil", "te-0", PLAINTEXT_SEQ, pack({"public_key": "00"}))
    assert ep.accept(hello) is None
    assert ep.held == [] and ep.dropped_unknown == {"count": 2_001, "bytes": 20_000 + len(hello.body)}
    stop = Envelope("STOP", "host", "te-0", PLAINTEXT_SEQ, pack({}))
    assert ep.accept(stop) is not None  # the host's own notices still arrive


def test_a_flood_of_garbage_is_logged_a_logarithmic_number_of_times(caplog: pytest.LogCaptureFixture) -> None:
    ep = endpoint()
    ep.end_setup()
    with caplog.at_level(logging.WARNING, logger="siegecraft.enclave"):
        for i in range(2_000):
            ep.accept(garbage(i, 10))
    assert len(caplog.records) == 11  # drops 1, 2, 4, ..., 1024


def test_no_secret_in_the_repr_of_grants_messages_or_tickets() -> None:
    issuer = ZeroSumMaskIssuer(b"s" * 16, [64], 32)
    grants, blinding = issuer.issue_blinded(3, 0, ["te-0", "te-1"], "root")
    seed = grants["te-0"].seed
    assert seed is not None and blinding.seed is not None
    for grant in (*grants.values(), blinding):
        text = repr(grant) + str(grant)
        assert seed.hex() not in text and blinding.seed.hex() not in text and "correction" not in text
    correction = grants["te-1"].correction
    assert correction is not None and str(correction[:4].tolist())[1:-1] not in repr(grants["te-1"])
    mask_msg = Message("MASK", "admin", {"rnd": 3, "seed": seed.hex()}, {"correction": correction}, True)
    assert seed.hex() not in repr(mask_msg) and seed.hex() not in f"{mask_msg}"
    assert "MASK" in repr(mask_msg) and "uint32[64]" in repr(mask_msg)
    ticket = Ticket("seg", 10, b"k" * 32, b"n" * 12, b"m" * 32, b"t" * 16)
    assert (b"k" * 32).hex() not in repr(ticket) and (b"m" * 32).hex() not in repr(ticket)
    grant = MaskGrant(MaskDomain(b"s" * 16, 1, 0, "te-0"), seed=b"\x07" * 32)
    assert "07070707" not in repr(grant)


def test_a_live_flood_from_an_unknown_sender_is_dropped_counted_and_harmless(tmp_path: Path) -> None:
    """The host injects 2,000 sealed-looking envelopes and 100 late HELLOs at te-0 during a round."""
    injected: list[int] = []

    def flood(env: Envelope, data: bytes) -> list[bytes]:
        if env.kind == "ROUND_START" and env.dst == "te-0" and not injected:
            junk = [garbage(i, 64).to_bytes() for i in range(2_000)]
            hellos = [Envelope("HELLO", "evil", "te-0", PLAINTEXT_SEQ, pack({"n": i})).to_bytes() for i in range(100)]
            injected.append(len(junk) + len(hellos))
            return [*junk, *hellos, data]
        return [data]

    cfg = config(3, audit_dir=str(tmp_path), round_timeout_s=10.0)
    with CitadelSession(cfg, tamper=flood) as session:
        result = session.run_round(1, global_weights(1), [0, 1, 2])
        assert result.survivors == [0, 1, 2]
    totals = [r for r in read_audit(tmp_path) if r["event"] == "dropped_unknown_total"]
    assert injected == [2_100]
    assert [(r["role"], r["count"]) for r in totals] == [("te-0", 2_100)]
    assert totals[0]["bytes"] > 2_000 * 64
    assert not [r for r in read_audit(tmp_path) if r["event"] in ("rejected", "fatal")]
    assert np.isfinite(result.mean).all()


def test_plaintext_from_a_stranger_is_dropped_but_from_a_peer_is_a_rejection() -> None:
    """Garbage from nobody costs a counter; a peer's message in the clear is a protocol violation."""
    ep = endpoint()
    ep.channels["admin"] = object()  # type: ignore[assignment]  # a peer with an open channel
    rejected: list[str] = []
    ep.on_rejected = lambda env, exc: rejected.append(env.src)  # type: ignore[method-assign]
    ep.end_setup()
    assert ep.accept(Envelope("MASK", "evil", "te-0", PLAINTEXT_SEQ, pack({"rnd": 1}))) is None
    assert ep.dropped_unknown["count"] == 1 and rejected == []
    assert ep.accept(Envelope("MASK", "admin", "te-0", PLAINTEXT_SEQ, pack({"rnd": 1}))) is None
    assert rejected == ["admin"] and ep.dropped_unknown["count"] == 1
