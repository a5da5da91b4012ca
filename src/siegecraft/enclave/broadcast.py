"""One-to-many delivery of a round's global model: encrypt once, share the ciphertext, send each party a ticket.

The sender draws a fresh 256-bit key and 96-bit nonce (os.urandom) every round, encrypts the payload
once with AES-256-GCM, with associated data binding the session id, the round and the sender's role,
and writes the ciphertext to one shared-memory segment. Each recipient receives, inside its own
authenticated pairwise channel, a `Ticket`: the segment name, its size, the key, the nonce and the
SHA-256 of the ciphertext. A recipient copies the segment into private memory, checks size and
digest, then decrypts.

Why the digest: every recipient learns the round key, so GCM's tag alone would let one recipient
forge a ciphertext the others accept. The digest arrives over each recipient's own channel from the
sender, so a segment that anyone else wrote - the host, or another key holder - is refused. The key
and the associated data change every round, so a previous round's broadcast never verifies either.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from siegecraft.enclave import shm
from siegecraft.enclave.errors import ChannelError

_DOMAIN = b"citadel/broadcast/v1\0"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class BroadcastError(ChannelError):
    """A broadcast was altered, replaced, truncated, replayed from another round or not from its sender."""


class BroadcastMissingError(BroadcastError):
    """The broadcast segment is gone (the round ended, or the host deleted it): a dropout, not an attack."""


@dataclass(frozen=True)
class Ticket:
    """What one recipient needs to open a broadcast; sent only inside an authenticated channel."""

    segment: str
    size: int
    key: bytes
    nonce: bytes
    digest: bytes

    def to_meta(self) -> dict[str, Any]:
        return {"segment": self.segment, "size": self.size, "key": self.key.hex(), "nonce": self.nonce.hex(),
                "sha256": self.digest.hex()}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Ticket:
        try:
            ticket = cls(str(meta["segment"]), int(meta["size"]), bytes.fromhex(meta["key"]),
                         bytes.fromhex(meta["nonce"]), bytes.fromhex(meta["sha256"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BroadcastError(f"malformed broadcast ticket: {exc}") from None
        if len(ticket.key) != KEY_BYTES or len(ticket.nonce) != NONCE_BYTES or len(ticket.digest) != 32:
            raise BroadcastError("malformed broadcast ticket: wrong key, nonce or digest length")
        return ticket


def associated_data(session: bytes, rnd: int, sender: str) -> bytes:
    """What a broadcast is bound to: the session, the round and the sending role."""
    role = sender.encode()
    return b"".join([_DOMAIN, struct.pack(">H", len(session)), session, struct.pack(">QH", rnd, len(role)), role])


def seal(payload: bytes, *, session: bytes, rnd: int, sender: str, prefix: str) -> Ticket:
    """Encrypt `payload` under a fresh key into a new segment; the caller unlinks `ticket.segment` later."""
    key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, payload, associated_data(session, rnd, sender))
    digest = hashlib.sha256(ciphertext).digest()  # of our private copy, before the host can touch it
    return Ticket(shm.write(prefix, ciphertext), len(ciphertext), key, nonce, digest)


def open_ticket(ticket: Ticket, *, session: bytes, rnd: int, sender: str, prefix: str) -> bytearray:
    """The payload of the broadcast `ticket` (received from `sender` on its channel), in a private,
    writable buffer; raises BroadcastError."""
    try:
        ciphertext = shm.read(ticket.segment, ticket.size, prefix)
    except shm.SegmentMissingError as exc:
        raise BroadcastMissingError(f"broadcast of round {rnd} from {sender!r}: {exc}") from None
    except shm.SegmentError as exc:
        raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: {exc}") from None
    if not hmac.compare_digest(hashlib.sha256(ciphertext).digest(), ticket.digest):
        raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: the segment's digest does not match the "
                             "ticket (the ciphertext was altered or replaced)")
    if len(ciphertext) < TAG_BYTES:
        raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: shorter than an authentication tag")
    payload = bytearray(len(ciphertext) - TAG_BYTES)
    try:
        AESGCM(ticket.key).decrypt_into(ticket.nonce, ciphertext, associated_data(session, rnd, sender), payload)
        return payload
    except InvalidTag:
        raise BroadcastError(f"broadcast of round {rnd} from {sender!r}: authentication failed (wrong round, "
                             "session or sender)") from None
