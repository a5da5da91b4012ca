"""Authenticated, encrypted channels between attested parties.

Keys: X25519 between the two parties' attested keys, then HKDF-SHA256 with the hash of the attested
transcript (both roles, both keys, both measurements, the session context) as salt and the direction
("a->b") as info, giving one AES-256-GCM key per direction. Each sealed message carries an epoch and
a sequence number; both are part of the 96-bit nonce (direction tag | epoch | seq) and, with the sender,
receiver and kind, of the associated data. Tampered, misrouted or reflected messages fail with a clear
error; replayed and stale ones (an epoch the receiver has left) are dropped.

Resynchronisation: every round's messages are sealed in that round's epoch, and an authentic message
of a newer epoch resets the receiver's window. A message the host withheld, altered or duplicated can
therefore spoil at most the round it belongs to: the next round's first authentic message puts the
channel back in step, and a message of an older round can never be accepted again (its epoch is gone).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave.errors import ChannelError, ReplayError, TamperedMessageError
from siegecraft.enclave.wire import Envelope, pack, unpack

_TRANSCRIPT_DOMAIN = b"citadel/transcript/v1\0"
_KEY_DOMAIN = b"citadel/channel/v1\0"
TAG_BYTES = 16  # AES-GCM authentication tag
MAX_COUNTER = 2**32 - 1  # epochs and sequence numbers each take 4 bytes of the nonce
#: how many skipped sequence numbers of the current epoch a receiver remembers (to accept them late, once)
MAX_MISSING = 256


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class PeerIdentity:
    """A channel end: role name, attested X25519 public key and measurement (or key fingerprint)."""

    role: str
    public_key: bytes
    measurement: bytes

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "public_key": self.public_key.hex(), "measurement": self.measurement.hex()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeerIdentity:
        return cls(str(data["role"]), bytes.fromhex(data["public_key"]), bytes.fromhex(data["measurement"]))


def transcript_hash(a: PeerIdentity, b: PeerIdentity, context: bytes) -> bytes:
    """Order-independent hash of both identities and the session context (nonces, session id)."""
    h = hashlib.sha256(_TRANSCRIPT_DOMAIN)
    for peer in sorted((a, b), key=lambda p: p.role):
        for part in (peer.role.encode(), peer.public_key, peer.measurement):
            h.update(struct.pack(">I", len(part)) + part)
    h.update(struct.pack(">I", len(context)) + context)
    return h.digest()


def _direction_key(shared: bytes, transcript: bytes, src: str, dst: str) -> bytes:
    info = _KEY_DOMAIN + f"{src}->{dst}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=transcript, info=info).derive(shared)


def _nonce(env: Envelope) -> bytes:
    """The 96-bit AES-GCM nonce: 4 bytes naming the direction, then the epoch and the sequence number
    (4 bytes each). Unique per direction key because epochs only grow and numbers restart per epoch."""
    return hashlib.sha256(f"{env.src}->{env.dst}".encode()).digest()[:4] + struct.pack(">II", env.epoch, env.seq)


class SecureChannel:
    """One end of a two-way channel; `seal` outgoing payloads, `open` incoming envelopes.

    Messages are numbered per epoch: the sender's epoch only moves forward (a round's messages are
    sealed in `round_epoch(rnd)`), and its sequence number restarts at 0 in each new epoch. The
    receiver accepts each (epoch, seq) at most once: anything from an epoch older than the newest it
    accepted is stale, a number it already accepted is a replay (both dropped, harmless), and a gap
    (a message the host withheld) is remembered for a while so that a late or reordered copy is
    still accepted once. A lost message therefore costs at most what it carried; the next epoch
    starts afresh.
    """

    def __init__(self, local: PeerIdentity, private_key: X25519PrivateKey, peer: PeerIdentity,
                 context: bytes) -> None:
        if public_bytes(private_key) != local.public_key:
            raise ChannelError(f"{local.role}: private key does not match the local identity's public key")
        if local.role == peer.role:
            raise ChannelError(f"a channel needs two distinct roles, got {local.role!r} twice")
        try:
            shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer.public_key))
        except ValueError as exc:
            raise ChannelError(f"key agreement with {peer.role!r} failed: {exc}") from None
        transcript = transcript_hash(local, peer, context)
        self.local, self.peer = local, peer
        self.transcript = transcript
        self._send = AESGCM(_direction_key(shared, transcript, local.role, peer.role))
        self._recv = AESGCM(_direction_key(shared, transcript, peer.role, local.role))
        self._send_epoch = 0
        self._send_seq = 0
        self._recv_epoch = 0
        self._recv_seq = 0  # one past the highest sequence number accepted in the receive epoch
        self._recv_missing: dict[int, None] = {}  # skipped numbers of the receive epoch, oldest first
        #: messages the peer sealed that never arrived, as far as this end can tell (gaps never filled)
        self.gaps = 0

    def __repr__(self) -> str:
        return f"SecureChannel({self.local.role!r} <-> {self.peer.role!r})"

    def _next_header(self, kind: str, epoch: int) -> Envelope:
        """The header of the next outgoing message in epoch max(epoch, current), advancing the counters."""
        if epoch > self._send_epoch:
            self._send_epoch, self._send_seq = epoch, 0
        if self._send_epoch > MAX_COUNTER or self._send_seq > MAX_COUNTER:
            raise ChannelError(f"channel {self.local.role!r}->{self.peer.role!r} exhausted its nonces")
        env = Envelope(kind, self.local.role, self.peer.role, self._send_seq, b"", self._send_epoch)
        self._send_seq += 1
        return env

    def seal(self, kind: str, payload: bytes | bytearray | memoryview, epoch: int = 0) -> Envelope:
        """Encrypt `payload` as the next message from local to peer, in epoch `epoch` or the current one
        if that is later (epochs never move back)."""
        env = self._next_header(kind, epoch)
        return env.with_body(self._send.encrypt(_nonce(env), payload, env.header_bytes()))

    def seal_into(self, kind: str, payload: bytes | bytearray | memoryview, out: memoryview,
                  epoch: int = 0) -> Envelope:
        """Like `seal`, but the body (exactly `sealed_size(len(payload))` bytes) is written into `out`;
        returns the envelope's header with an empty body."""
        if out.nbytes != self.sealed_size(len(payload)):
            raise ValueError(f"sealed body needs {self.sealed_size(len(payload))} bytes, the buffer has {out.nbytes}")
        env = self._next_header(kind, epoch)
        self._send.encrypt_into(_nonce(env), payload, env.header_bytes(), out)
        return env

    @staticmethod
    def sealed_size(payload_size: int) -> int:
        """Bytes of a sealed body: the payload plus AES-GCM's 16-byte tag."""
        return payload_size + TAG_BYTES

    def open(self, env: Envelope) -> bytes:
        """Authenticate and decrypt a message from the peer; raise ChannelError otherwise (ReplayError
        for a stale or repeated one, which the caller may drop silently)."""
        if env.src != self.peer.role or env.dst != self.local.role:
            raise ChannelError(f"misrouted message {env.src!r}->{env.dst!r} on channel "
                               f"{self.peer.role!r}->{self.local.role!r}")
        if not env.sealed:
            raise ChannelError(f"plaintext {env.kind!r} message from {env.src!r} where a sealed one is required")
        if not (0 <= env.epoch <= MAX_COUNTER and 0 <= env.seq <= MAX_COUNTER):
            raise TamperedMessageError(f"{env.kind!r} from {env.src!r}: epoch or seq out of range")
        if env.epoch < self._recv_epoch:
            raise ReplayError(f"stale message from {env.src!r}: epoch {env.epoch}, this channel is at epoch "
                              f"{self._recv_epoch}")
        fresh_epoch = env.epoch > self._recv_epoch
        if not fresh_epoch and env.seq < self._recv_seq and env.seq not in self._recv_missing:
            raise ReplayError(f"replayed message from {env.src!r}: epoch {env.epoch} seq {env.seq} was already "
                              "accepted")
        try:
            payload = self._recv.decrypt(_nonce(env), env.body, env.header_bytes())
        except InvalidTag:
            raise TamperedMessageError(f"authentication failed for {env.kind!r} from {env.src!r} (epoch "
                                       f"{env.epoch}, seq {env.seq}): ciphertext or header was modified") from None
        if fresh_epoch:  # only an authentic message moves the epoch, so a forged header cannot
            self.gaps += len(self._recv_missing)
            self._recv_epoch, self._recv_seq, self._recv_missing = env.epoch, 0, {}
        if env.seq in self._recv_missing:
            del self._recv_missing[env.seq]  # a late or reordered message fills its gap
        else:
            first = max(self._recv_seq, env.seq - MAX_MISSING)
            self.gaps += first - self._recv_seq  # too far back to remember
            for skipped in range(first, env.seq):
                self._recv_missing[skipped] = None
            self._recv_seq = env.seq + 1
        while len(self._recv_missing) > MAX_MISSING:
            del self._recv_missing[next(iter(self._recv_missing))]
            self.gaps += 1
        return payload

    def seal_message(self, kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
                     epoch: int = 0) -> Envelope:
        return self.seal(kind, pack(meta, arrays), epoch)

    def open_message(self, env: Envelope) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return unpack(self.open(env))
