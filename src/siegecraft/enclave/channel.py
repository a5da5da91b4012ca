"""Authenticated, encrypted channels between attested parties.

Keys: X25519 between the two parties' attested keys, then HKDF-SHA256 with the hash of the attested
transcript (both roles, both keys, both measurements, the session context) as salt and the direction
("a->b") as info, giving one AES-256-GCM key per direction. Each sealed message carries a sequence
number that is part of the 96-bit nonce (direction tag | seq) and, with the sender, receiver and kind,
of the associated data; the receiver accepts exactly the next number, so tampered, replayed, reordered,
misrouted or reflected messages are all rejected with a clear error. A rejected message is never
retried: after tampering or loss, later messages on that channel are out of order, so the channel
fails closed (the deployment must be restarted), while a replayed copy is simply dropped.
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

from siegecraft.enclave.errors import ChannelError, OutOfOrderError, ReplayError, TamperedMessageError
from siegecraft.enclave.wire import Envelope, pack, unpack

_TRANSCRIPT_DOMAIN = b"citadel/transcript/v1\0"
_KEY_DOMAIN = b"citadel/channel/v1\0"
TAG_BYTES = 16  # AES-GCM authentication tag


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


def _nonce(src: str, dst: str, seq: int) -> bytes:
    return hashlib.sha256(f"{src}->{dst}".encode()).digest()[:4] + struct.pack(">Q", seq)


class SecureChannel:
    """One end of a two-way channel; `seal` outgoing payloads, `open` incoming envelopes."""

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
        self._send_seq = 0
        self._recv_seq = 0

    def seal(self, kind: str, payload: bytes | bytearray | memoryview) -> Envelope:
        """Encrypt `payload` as the next message from local to peer."""
        env = Envelope(kind, self.local.role, self.peer.role, self._send_seq, b"")
        nonce = _nonce(env.src, env.dst, env.seq)
        body = self._send.encrypt(nonce, payload, env.header_bytes())
        self._send_seq += 1
        return Envelope(env.kind, env.src, env.dst, env.seq, body)

    def seal_into(self, kind: str, payload: bytes | bytearray | memoryview, out: memoryview) -> Envelope:
        """Like `seal`, but the body (exactly `sealed_size(len(payload))` bytes) is written into `out`;
        returns the envelope's header with an empty body."""
        if out.nbytes != self.sealed_size(len(payload)):
            raise ValueError(f"sealed body needs {self.sealed_size(len(payload))} bytes, the buffer has {out.nbytes}")
        env = Envelope(kind, self.local.role, self.peer.role, self._send_seq, b"")
        self._send.encrypt_into(_nonce(env.src, env.dst, env.seq), payload, env.header_bytes(), out)
        self._send_seq += 1
        return env

    @staticmethod
    def sealed_size(payload_size: int) -> int:
        """Bytes of a sealed body: the payload plus AES-GCM's 16-byte tag."""
        return payload_size + TAG_BYTES

    def open(self, env: Envelope) -> bytes:
        """Authenticate and decrypt the next message from the peer; raise ChannelError otherwise."""
        if env.src != self.peer.role or env.dst != self.local.role:
            raise ChannelError(f"misrouted message {env.src!r}->{env.dst!r} on channel "
                               f"{self.peer.role!r}->{self.local.role!r}")
        if not env.sealed:
            raise ChannelError(f"plaintext {env.kind!r} message from {env.src!r} where a sealed one is required")
        if env.seq < self._recv_seq:
            raise ReplayError(f"replayed message from {env.src!r}: seq {env.seq} was already accepted "
                              f"(next expected {self._recv_seq})")
        try:
            payload = self._recv.decrypt(_nonce(env.src, env.dst, env.seq), env.body, env.header_bytes())
        except InvalidTag:
            raise TamperedMessageError(f"authentication failed for {env.kind!r} from {env.src!r} (seq "
                                       f"{env.seq}): ciphertext or header was modified") from None
        if env.seq != self._recv_seq:
            raise OutOfOrderError(f"out-of-order message from {env.src!r}: seq {env.seq}, expected {self._recv_seq} "
                              "(a message was dropped or reordered on the relay)")
        self._recv_seq += 1
        return payload

    def seal_message(self, kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> Envelope:
        return self.seal(kind, pack(meta, arrays))

    def open_message(self, env: Envelope) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return unpack(self.open(env))
