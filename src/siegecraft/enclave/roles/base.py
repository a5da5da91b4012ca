"""Machinery shared by every protocol party: channels, message intake, attestation with the admin.

`Endpoint` is any party with a mailbox and secure channels (the enclave roles, the model owner and
the data owners); `EnclaveRole` adds what only a (simulated) enclave has: a platform that quotes its
measurement, the attestation handshake with the admin, an audit log and the event loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from siegecraft.enclave.attestation import Quote, QuoteVerifier, VerifierPolicy, quote_checker
from siegecraft.enclave.channel import PeerIdentity, SecureChannel, public_bytes
from siegecraft.enclave.errors import AttestationError, ChannelError, CitadelError, ReplayError
from siegecraft.enclave.quoting import EnclavePlatform
from siegecraft.enclave.transport import Mailbox
from siegecraft.enclave.wire import PLAINTEXT_SEQ, Envelope, pack, round_epoch, unpack

log = logging.getLogger("siegecraft.enclave")

HOST = "host"
ADMIN = "admin"
OWNER = "owner"
HANDSHAKE_KINDS = frozenset({"HELLO", "CHALLENGE", "EVIDENCE", "OWNER_HELLO", "ADMIN_EVIDENCE",
                             "PROVISION_HELLO", "PROVISION_EVIDENCE", "PROVISION_REFUSED"})
HOST_KINDS = frozenset({"PEER_DOWN", "STOP"})


class Message(NamedTuple):
    """An accepted message: sealed ones were authenticated and decrypted on the sender's channel."""

    kind: str
    src: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    sealed: bool

    def __repr__(self) -> str:
        """Names and shapes only: a message's values may be secrets (mask seeds, broadcast keys, updates)."""
        arrays = {name: f"{arr.dtype}[{arr.size}]" for name, arr in self.arrays.items()}
        return (f"Message(kind={self.kind!r}, src={self.src!r}, meta_keys={sorted(self.meta)}, arrays={arrays}, "
                f"sealed={self.sealed})")

    __str__ = __repr__


#: sealed envelopes kept for a peer whose channel is not open yet (only during set-up)
MAX_HELD = 256
MAX_HELD_BYTES = 64 << 20


def attest_context(enclave_nonce: bytes, admin_nonce: bytes) -> bytes:
    """Channel context of an enclave-admin channel: both attestation nonces."""
    return b"citadel/attest/" + enclave_nonce + admin_nonce


def peer_context(session: bytes) -> bytes:
    """Channel context between two parties introduced by the admin in `session`."""
    return b"citadel/peer/" + session


def byte_chi2(values: np.ndarray) -> float:
    """Pearson chi-square statistic of the byte histogram against uniform (255 degrees of freedom)."""
    counts = np.bincount(np.ascontiguousarray(values).view(np.uint8), minlength=256).astype(np.float64)
    expected = counts.sum() / 256
    return float(((counts - expected) ** 2 / expected).sum())


class Endpoint:
    """A party with an X25519 identity key, a mailbox on the relay and secure channels to its peers."""

    def __init__(self, role_id: str, mailbox: Mailbox, measurement: bytes) -> None:
        self.id = role_id
        self.mailbox = mailbox
        self.key = X25519PrivateKey.generate()
        self.identity = PeerIdentity(role_id, public_bytes(self.key), measurement)
        self.channels: dict[str, SecureChannel] = {}
        self.backlog: list[Message] = []
        self.held: list[Envelope] = []
        self.held_bytes = 0
        #: True while the set-up may still open channels; afterwards unknown senders are dropped at once
        self.setting_up = True
        #: envelopes dropped because their sender was unknown or unexpected: count and bytes
        self.dropped_unknown = {"count": 0, "bytes": 0}
        self.stopped = False

    # -- sending ---------------------------------------------------------------------------
    def send(self, dst: str, kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        """Seal and send on the channel to `dst`, in the epoch of the round `meta["rnd"]` names (if any)."""
        epoch = round_epoch(int(meta["rnd"])) if "rnd" in meta else 0
        self.mailbox.send_sealed(self.channels[dst], kind, pack(meta, arrays), epoch)

    def send_payload(self, dst: str, kind: str, payload: bytearray | memoryview, rnd: int) -> None:
        """Seal and send a payload of round `rnd` that the caller built in place (`wire.payload_buffer`)."""
        self.mailbox.send_sealed(self.channels[dst], kind, payload, round_epoch(rnd))

    def send_plain(self, dst: str, kind: str, meta: dict[str, Any]) -> None:
        """Send a public handshake message (its content is signed or quoted, never secret)."""
        self.mailbox.send(Envelope(kind, self.id, dst, PLAINTEXT_SEQ, pack(meta)))

    # -- receiving -------------------------------------------------------------------------
    def on_rejected(self, env: Envelope, exc: CitadelError) -> None:
        """Called for every envelope that failed authentication or policy; subclasses escalate."""
        log.warning("%s rejected %s from %s: %s", self.id, env.kind, env.src, exc)

    def drop_unknown(self, env: Envelope, why: str) -> None:
        """Drop an envelope from an unknown or unexpected sender, counting it (never buffered, never alerted:
        anyone on the host can send such bytes, so they must not cost more than reading them)."""
        self.dropped_unknown["count"] += 1
        self.dropped_unknown["bytes"] += len(env.body)
        count = self.dropped_unknown["count"]
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th... drop: bounded logging under a flood
            log.warning("%s dropped %d envelope(s) from unknown or unexpected senders (%d bytes); latest: %s "
                        "from %r (%s)", self.id, count, self.dropped_unknown["bytes"], env.kind, env.src, why)
            self.on_dropped_unknown(env, why)

    def on_dropped_unknown(self, env: Envelope, why: str) -> None:
        """Hook for roles with an audit log (called for the 1st, 2nd, 4th, ... drop)."""

    def end_setup(self) -> None:
        """The set-up is over: no new channel will open, held envelopes are re-examined or dropped."""
        self.setting_up = False
        self.release_held()

    def accept(self, env: Envelope) -> Message | None:
        """Authenticate one envelope; return the message, or None if it was rejected or held back."""
        if env.dst != self.id:
            self.on_rejected(env, ChannelError(f"misrouted envelope for {env.dst!r}"))
            return None
        if not env.sealed:
            host_notice = env.kind in HOST_KINDS and env.src == HOST
            if not host_notice and not (self.setting_up and env.kind in HANDSHAKE_KINDS):
                if env.kind in HANDSHAKE_KINDS or env.src not in self.channels:  # nobody we talk to
                    self.drop_unknown(env, f"plaintext {env.kind} outside the set-up")
                else:  # a peer's message in the clear is a protocol violation
                    self.on_rejected(env, ChannelError(f"plaintext {env.kind!r} from {env.src!r} refused"))
                return None
            try:
                meta, arrays = unpack(env.body)
            except ChannelError as exc:
                self.on_rejected(env, exc)
                return None
            if env.kind == "STOP":
                self.stopped = True
            return Message(env.kind, env.src, meta, arrays, False)
        channel = self.channels.get(env.src)
        if channel is None:
            if not self.setting_up:
                self.drop_unknown(env, "no channel with this sender")
            elif len(self.held) >= MAX_HELD or self.held_bytes + len(env.body) > MAX_HELD_BYTES:
                self.drop_unknown(env, f"set-up buffer full ({MAX_HELD} envelopes, {MAX_HELD_BYTES} bytes)")
            else:
                self.held.append(env)
                self.held_bytes += len(env.body)
            return None
        try:
            meta, arrays = channel.open_message(env)
        except ChannelError as exc:
            self.on_rejected(env, exc)
            return None
        return Message(env.kind, env.src, meta, arrays, True)

    def release_held(self) -> None:
        """Re-examine sealed envelopes that arrived before their channel existed."""
        held, self.held, self.held_bytes = self.held, [], 0
        for env in held:
            msg = self.accept(env)
            if msg is not None:
                self.backlog.append(msg)

    def next_message(self, timeout: float | None) -> Message | None:
        """The next accepted message (backlog first), or None when `timeout` passes without one."""
        if self.backlog:
            return self.backlog.pop(0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            env = self.mailbox.receive(left)
            if env is not None:
                msg = self.accept(env)
                if msg is not None:
                    return msg
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def wait_for(self, match: Callable[[Message], bool], timeout: float, what: str) -> Message:
        """Wait for a message matching `match`; others are kept, in order, for the event loop."""
        deadline = time.monotonic() + timeout
        skipped: list[Message] = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CitadelError(f"{self.id}: timed out after {timeout:g} s waiting for {what}")
                msg = self.next_message(left)
                if msg is None:
                    continue
                if match(msg):
                    return msg
                if msg.kind == "STOP":
                    raise CitadelError(f"{self.id}: stopped while waiting for {what}")
                skipped.append(msg)
        finally:
            self.backlog[:0] = skipped


class EnclaveRole(Endpoint):
    """A role process inside its (simulated) enclave: attests to the admin, then runs `handle` per message."""

    kind: ClassVar[str]
    tick_s: ClassVar[float] = 0.5

    def __init__(self, role_id: str, config: dict[str, Any], mailbox: Mailbox, platform: EnclavePlatform,
                 options: dict[str, Any]) -> None:
        super().__init__(role_id, mailbox, platform.measurement)
        self.config = config
        #: what this enclave knows of its platform: its measurement, the signer to trust, a quoting line
        self.platform = platform
        settings = dict(config.get("attestation") or {})
        if settings.get("backend", platform.backend) != platform.backend:
            raise AttestationError(f"{role_id} was measured for backend {settings['backend']!r} but runs on "
                                   f"{platform.backend!r}")
        self.min_svn = int(settings.get("min_svn", 0))
        self.allow_debug = bool(settings.get("allow_debug", False))
        self.options = options
        self.start_timeout_s = float(options.get("start_timeout_s", 120.0))
        self.session = b""
        audit_dir = options.get("audit_dir")
        self._audit = None
        if audit_dir:
            Path(audit_dir).mkdir(parents=True, exist_ok=True)
            self._audit = open(Path(audit_dir) / f"{role_id}.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    # -- audit -----------------------------------------------------------------------------
    def audit(self, event: str, **fields: Any) -> None:
        """Append one record to this role's audit log (instrumentation for tests; off by default)."""
        if self._audit is not None:
            self._audit.write(json.dumps({"role": self.id, "event": event, **fields}) + "\n")
            self._audit.flush()

    def audit_vector(self, event: str, vector: np.ndarray, **fields: Any) -> None:
        """Record a fingerprint of a vector this role handled: SHA-256, size and byte chi-square."""
        if self._audit is not None:
            digest = hashlib.sha256(np.ascontiguousarray(vector).view(np.uint8)).hexdigest()
            self.audit(event, sha256=digest, size=int(vector.size), chi2=byte_chi2(vector), **fields)

    def close_audit(self) -> None:
        if self.dropped_unknown["count"]:
            self.audit("dropped_unknown_total", **self.dropped_unknown, inbox_overflow=self.mailbox.overflow)
        if self._audit is not None:
            self._audit.close()
            self._audit = None

    def on_dropped_unknown(self, env: Envelope, why: str) -> None:
        self.audit("dropped_unknown", kind=env.kind, src=env.src, reason=why, **self.dropped_unknown)

    def on_rejected(self, env: Envelope, exc: CitadelError) -> None:
        if isinstance(exc, ReplayError):  # a copy of a message already accepted, or of a past round: harmless
            log.info("%s dropped %s from %s: %s", self.id, env.kind, env.src, exc)
            self.audit("dropped_replay", kind=env.kind, src=env.src, epoch=env.epoch, seq=env.seq)
            return
        super().on_rejected(env, exc)
        self.audit("rejected", kind=env.kind, src=env.src, error=str(exc))
        if ADMIN in self.channels and self.id != ADMIN:
            self.send(ADMIN, "ALERT", {"reason": f"{self.id} rejected {env.kind} from {env.src}: {exc}"})

    # -- attestation -----------------------------------------------------------------------
    def quote_verifier(self, accepted: dict[str, bytes | set[bytes]]) -> QuoteVerifier:
        """A verifier with this enclave's measured policy: `accepted` measurements per role, the platform's
        signer as the trust anchor, the configured minimum SVN and debug rule."""
        policy = VerifierPolicy.build(accepted, self.platform.signer, min_svn=self.min_svn,
                                      allow_debug=self.allow_debug, backend=self.platform.backend)
        return QuoteVerifier(quote_checker(self.platform.backend), policy, nonce_ttl_s=self.start_timeout_s)

    def attest(self) -> None:
        """Mutual attestation with the admin, then the admin's key release (peer directory)."""
        admin_measurement = bytes.fromhex(self.config["admin_measurement"])
        verifier = self.quote_verifier({ADMIN: admin_measurement})
        own_nonce = verifier.challenge(ADMIN)
        self.send_plain(ADMIN, "HELLO", {"public_key": self.identity.public_key.hex(), "nonce": own_nonce.hex()})
        msg = self.wait_for(lambda m: m.kind == "CHALLENGE" and m.src == ADMIN, self.start_timeout_s,
                            "the admin's challenge")
        admin_key = bytes.fromhex(msg.meta["public_key"])
        verifier.verify(ADMIN, Quote.from_dict(msg.meta["quote"]), admin_key)
        admin_nonce = bytes.fromhex(msg.meta["nonce"])
        quote = self.platform.quote(self.identity.public_key, admin_nonce)
        self.send_plain(ADMIN, "EVIDENCE", {"quote": quote.to_dict()})
        admin = PeerIdentity(ADMIN, admin_key, admin_measurement)
        self.channels[ADMIN] = SecureChannel(self.identity, self.key, admin, attest_context(own_nonce, admin_nonce))
        self.release_held()
        keys = self.wait_for(lambda m: m.kind == "KEYS" and m.src == ADMIN, self.start_timeout_s, "key release")
        self.session = bytes.fromhex(keys.meta["session"])
        for data in keys.meta["peers"]:
            peer = PeerIdentity.from_dict(data)
            self.channels[peer.role] = SecureChannel(self.identity, self.key, peer, peer_context(self.session))
        self.release_held()
        self.audit("attested", session=self.session.hex(), peers=sorted(self.channels))

    # -- event loop ------------------------------------------------------------------------
    def setup(self) -> None:
        self.attest()

    def handle(self, msg: Message) -> None:
        raise NotImplementedError

    def on_tick(self) -> None:
        """Called after every message and at least every `tick_s` seconds (deadlines live here)."""

    def run(self) -> None:
        self.setup()
        self.end_setup()
        while not self.stopped:
            msg = self.next_message(self.tick_s)
            if msg is not None and msg.kind != "STOP":
                self.handle(msg)
            self.on_tick()


def random_session() -> bytes:
    return secrets.token_bytes(16)
