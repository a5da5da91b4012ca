"""One-to-many delivery of a round's global model: encrypt once, share the ciphertext, send each party a ticket.

The sender draws a fresh 256-bit key and 96-bit nonce (os.urandom) every round, encrypts the payload
once with AES-256-GCM, with associated data binding the session id, the round and the sender's role,
and writes the ciphertext to one shared-memory segment. Each recipient receives, inside its own
authenticated pairwise channel, a `Ticket`: the segment name, its size, the key, the nonce, and a
one-time Poly1305 key with the tag of the ciphertext under it. A recipient copies the segment into
private memory, checks size and tag, then decrypts.

Why the per-recipient tag: every recipient learns the round key, so GCM's tag alone would let one
recipient forge a ciphertext the others accept. Each recipient's Poly1305 key is fresh (os.urandom),
used for exactly one tag and known only to the sender and that recipient, so a segment anyone else
wrote - the host, or another key holder - fails that recipient's check (Poly1305 is a one-time MAC:
forging a tag under an unknown key succeeds with probability about 2^-100 for a 4 MB message). It
costs the sender one tag per recipient and each recipient one tag: 0.3 ms per 4 MB, against 2 ms
for the SHA-256 digest this replaced. The key and the associated data change every round, so a
previous round's broadcast never verifies either.

Without shared memory (the network transport, net.py: the recipients may be on other machines) the
sender seals with `prefix=None`: no segment is written, the ticket's segment name is empty, and the
ciphertext travels inline beside each ticket inside the pairwise channel (`open_ticket(..., inline=)`).
The per-recipient tag is checked exactly as for a segment.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305

from siegecraft.enclave import shm
from siegecraft.enclave.errors import ChannelError

_DOMAIN = b"citadel/broadcast/v1\0"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16  # AES-GCM's tag, and Poly1305's
MAC_KEY_BYTES = 32


class BroadcastError(ChannelError):
    """A broadcast was altered, replaced, truncated, replayed from another round or not from its sender."""


class BroadcastMissingError(BroadcastError):
    """The broadcast segment is gone (the round ended, or the host deleted it): a dropout, not an attack."""


@dataclass(frozen=True)
class Ticket:
    """What one recipient needs to open a broadcast; sent only inside an authenticated channel."""

    segment: str
    size: int
    key: bytes = field(repr=False)
    nonce: bytes
    mac_key: bytes = field(repr=False)
    tag: bytes

    def to_meta(self) -> dict[str, Any]:
        return {"segment": self.segment, "size": self.size, "key": self.key.hex(), "nonce": self.nonce.hex(),
                "mac_key": self.mac_key.hex(), "tag": self.tag.hex()}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Ticket:
        try:
            ticket = cls(str(meta["segment"]), int(meta["size"]), bytes.fromhex(meta["key"]),
                         bytes.fromhex(meta["nonce"]), bytes.fromhex(meta["mac_key"]), bytes.fromhex(meta["tag"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BroadcastError(f"malformed broadcast ticket: {exc}") from None
        if (len(ticket.key) != KEY_BYTES or len(ticket.nonce) != NONCE_BYTES
                or len(ticket.mac_key) != MAC_KEY_BYTES or len(ticket.tag) != TAG_BYTES):
            raise BroadcastError("malformed broadcast ticket: wrong key, nonce, MAC key or tag length")
        return ticket


@dataclass(frozen=True)
class Broadcast:
    """A sealed broadcast at its sender: the segment, and the private ciphertext tickets are cut from."""

    segment: str
    key: bytes = field(repr=False)
    nonce: bytes
    ciphertext: bytes = field(repr=False)  # the sender's own copy, never the segment (the host can change it)

    def ticket(self) -> Ticket:
        """A ticket for one recipient: a fresh one-time Poly1305 key and the ciphertext's tag under it."""
        mac_key = os.urandom(MAC_KEY_BYTES)
        return Ticket(self.segment, len(self.ciphertext), self.key, self.nonce, mac_key,
                      Poly1305.generate_tag(mac_key, self.ciphertext))


def associated_data(session: bytes, rnd: int, sender: str) -> bytes:
    """What a broadcast is bound to: the session, the round and the sending role."""
    role = sender.encode()
    return b"".join([_DOMAIN, struct.pack(">H", len(session)), session, struct.pack(">QH", rnd, len(role)), role])


def seal(payload: bytes, *, session: bytes, rnd: int, sender: str, prefix: str | None) -> Broadcast:
    """Encrypt `payload` under a fresh key into a new segment; the caller cuts one `ticket()` per
    recipient and unlinks `segment` later. `prefix=None`: no segment (segment ""), the caller sends
    `ciphertext` inline with each ticket."""
    key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, payload, associated_data(session, rnd, sender))
    return Broadcast(shm.write(prefix, ciphertext) if prefix is not None else "", key, nonce, ciphertext)


def open_ticket(ticket: Ticket, *, session: bytes, rnd: int, sender: str, prefix: str | None,
                scratch: bytearray | None = None, inline: bytes | memoryview | None = None) -> bytearray:
    """The payload of the broadcast `ticket` (received from `sender` on its channel), in a private,
    writable buffer; raises BroadcastError. `scratch` (optional, at least `ticket.size` bytes) receives
    the private copy of the ciphertext; it is free again when this returns. `inline`: the ciphertext
    that came with the ticket (no shared memory), checked against the ticket like a segment."""
    if inline is not None:
        ciphertext = memoryview(inline).cast("B")
        if ticket.segment or ciphertext.nbytes != ticket.size:
            raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: inline ciphertext of "
                                 f"{ciphertext.nbytes} bytes for a ticket of {ticket.size} (segment {ticket.segment!r})")
        return _decrypt(ticket, ciphertext, session=session, rnd=rnd, sender=sender)
    if prefix is None:
        raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: no inline ciphertext and no shared memory")
    try:
        ciphertext = shm.read(ticket.segment, ticket.size, prefix, into=scratch)
    except shm.SegmentMissingError as exc:
        raise BroadcastMissingError(f"broadcast of round {rnd} from {sender!r}: {exc}") from None
    except shm.SegmentError as exc:
        raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: {exc}") from None
    return _decrypt(ticket, ciphertext, session=session, rnd=rnd, sender=sender)


def _decrypt(ticket: Ticket, ciphertext: memoryview, *, session: bytes, rnd: int, sender: str) -> bytearray:
    """Check the ticket's one-time tag over the private `ciphertext`, then decrypt it."""
    try:
        Poly1305.verify_tag(ticket.mac_key, ciphertext, ticket.tag)  # constant-time comparison
    except InvalidSignature:
        raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: the segment's tag does not match the "
                             "ticket (the ciphertext was altered or replaced)") from None
    if len(ciphertext) < TAG_BYTES:
        raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: shorter than an authentication tag")
    payload = bytearray(len(ciphertext) - TAG_BYTES)
    try:
        AESGCM(ticket.key).decrypt_into(ticket.nonce, ciphertext, associated_data(session, rnd, sender), payload)
        return payload
    except InvalidTag:
        raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: authentication failed (wrong round, "
                             "session or sender)") from None
