"""The broadcast without shared memory (network transport): the ciphertext travels inline beside each ticket
and is checked against the ticket's one-time tag exactly like a segment."""

from __future__ import annotations

import dataclasses

import pytest

from siegecraft.enclave import broadcast

SESSION = b"s" * 16


def sealed() -> broadcast.Broadcast:
    return broadcast.seal(b"weights" * 1000, session=SESSION, rnd=3, sender="owner", prefix=None)


def open_inline(ticket: broadcast.Ticket, data: bytes, rnd: int = 3) -> bytearray:
    return broadcast.open_ticket(ticket, session=SESSION, rnd=rnd, sender="owner", prefix=None, inline=data)


def test_inline_broadcast_writes_no_segment_and_opens_with_its_ticket() -> None:
    b = sealed()
    assert b.segment == ""
    assert bytes(open_inline(b.ticket(), b.ciphertext)) == b"weights" * 1000


@pytest.mark.parametrize("alter", [
    lambda c: c[:-1] + bytes([c[-1] ^ 1]),  # flipped byte
    lambda c: c[:-1],  # truncated
    lambda c: c + b"\0",  # extended
])
def test_an_altered_inline_ciphertext_is_refused(alter) -> None:
    b = sealed()
    with pytest.raises(broadcast.BroadcastError):
        open_inline(b.ticket(), alter(b.ciphertext))


def test_another_rounds_inline_ciphertext_or_a_ticket_naming_a_segment_is_refused() -> None:
    b, other = sealed(), sealed()
    with pytest.raises(broadcast.BroadcastError, match="tag does not match"):
        open_inline(b.ticket(), other.ciphertext)
    with pytest.raises(broadcast.BroadcastError, match="authentication failed"):
        open_inline(b.ticket(), b.ciphertext, rnd=4)
    with pytest.raises(broadcast.BroadcastError, match="segment"):
        open_inline(dataclasses.replace(b.ticket(), segment="ctdl00000000_0000000000000000"), b.ciphertext)
    with pytest.raises(broadcast.BroadcastError, match="no inline ciphertext and no shared memory"):
        broadcast.open_ticket(b.ticket(), session=SESSION, rnd=3, sender="owner", prefix=None)
