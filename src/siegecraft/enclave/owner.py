"""The model owner's endpoint, in the launching process: attests the admin, ships the signed bundle
and each round's weights to the attested training enclaves, and receives the mean update from the root.

The model owner is not an enclave; its X25519 key is vouched for by its Ed25519 signature, whose
public half is part of every role's measured configuration.

The weights of a round are broadcast (broadcast.py): encrypted once under a fresh round key into one
shared-memory segment, with each training enclave receiving the key and its own one-time tag of the
ciphertext in its ROUND_START over its own channel. The segment is unlinked when the round ends.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave import broadcast, shm
from siegecraft.enclave.attestation import Quote, QuoteChecker, QuoteVerifier, VerifierPolicy, key_fingerprint
from siegecraft.enclave.bundle import CodeBundle, sign_bundle
from siegecraft.enclave.channel import PeerIdentity, SecureChannel
from siegecraft.enclave.errors import (
    AttestationError,
    BundleError,
    CitadelError,
    ReplayError,
    RoundAbortedError,
)
from siegecraft.enclave.roles.admin import OWNER_HELLO_DOMAIN, leaf_name
from siegecraft.enclave.roles.base import ADMIN, HOST, OWNER, Endpoint, Message, peer_context
from siegecraft.enclave.transport import Mailbox
from siegecraft.enclave.tree import ROOT
from siegecraft.enclave.wire import Envelope, pack

log = logging.getLogger("siegecraft.enclave")


class ModelOwner(Endpoint):
    """The model owner's side of the protocol."""

    def __init__(self, mailbox: Mailbox, checker: QuoteChecker, admin_policy: VerifierPolicy,
                 signing_key: Ed25519PrivateKey | None = None) -> None:
        self.signing_key = signing_key or Ed25519PrivateKey.generate()
        self.verify_key = self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        super().__init__(OWNER, mailbox, key_fingerprint(self.verify_key))
        #: how the admin is attested: the backend's checker and a policy naming the admin's measurement,
        #: the platform's signer, the minimum SVN and the debug rule
        self.checker = checker
        self.admin_policy = admin_policy
        (self.admin_measurement,) = admin_policy.measurements[ADMIN]
        self.rejections: list[str] = []
        self.session = b""
        self.broadcasts: list[str] = []
        self.num_samples: dict[int, int] = {}  # client -> samples, as the admin checked them at deployment
        #: round -> attempts of every RESULT accepted from the root (the protocol allows one per round)
        self.results: dict[int, list[int]] = {}

    def on_rejected(self, env: Envelope, exc: CitadelError) -> None:
        if isinstance(exc, ReplayError):  # a duplicate, or a message of a round that is over: harmless
            log.info("owner dropped %s from %s: %s", env.kind, env.src, exc)
            return
        super().on_rejected(env, exc)
        self.rejections.append(f"{env.kind} from {env.src}: {exc}")

    def _record(self, msg: Message) -> None:
        if msg.kind == "RESULT" and msg.src == ROOT:
            self.results.setdefault(int(msg.meta["rnd"]), []).append(int(msg.meta["attempt"]))

    def drain(self, seconds: float) -> None:
        """Read whatever reaches the model owner for `seconds` (recording any RESULT), e.g. after a round."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.next_message(left)
            if msg is not None:
                self._record(msg)

    def connect(self, policy: dict[str, Any], timeout: float) -> None:
        """Attest the admin, send it the policy and open channels to the roles it attested."""
        verifier = QuoteVerifier(self.checker, self.admin_policy, nonce_ttl_s=timeout)
        nonce = verifier.challenge(ADMIN)
        signature = self.signing_key.sign(OWNER_HELLO_DOMAIN + self.identity.public_key + nonce)
        self.send_plain(ADMIN, "OWNER_HELLO", {"public_key": self.identity.public_key.hex(), "nonce": nonce.hex(),
                                               "signature": signature.hex()})
        msg = self.wait_for(lambda m: m.kind == "ADMIN_EVIDENCE" and m.src == ADMIN, timeout, "the admin's quote")
        admin_key = bytes.fromhex(msg.meta["public_key"])
        verifier.verify(ADMIN, Quote.from_dict(msg.meta["quote"]), admin_key)
        admin = PeerIdentity(ADMIN, admin_key, self.admin_measurement)
        self.channels[ADMIN] = SecureChannel(self.identity, self.key, admin, b"citadel/owner/" + nonce)
        self.send(ADMIN, "POLICY", policy)
        msg = self.wait_for(lambda m: m.src in (ADMIN, HOST) and m.kind in ("DIRECTORY", "ATTESTATION_FAILED",
                                                                            "PEER_DOWN"),
                            timeout, "the admin's directory of attested roles")
        if msg.kind == "PEER_DOWN":
            raise AttestationError(f"{msg.meta.get('role')} exited before attestation completed")
        if msg.kind == "ATTESTATION_FAILED":
            raise AttestationError(f"attestation of {msg.meta['role']} failed: {msg.meta['reason']}")
        session = self.session = bytes.fromhex(msg.meta["session"])
        for data in msg.meta["peers"]:
            peer = PeerIdentity.from_dict(data)
            self.channels[peer.role] = SecureChannel(self.identity, self.key, peer, peer_context(session))
        self.end_setup()

    def deploy(self, bundle: CodeBundle, clients: list[int], timeout: float) -> dict[int, int]:
        """Send the signed bundle to every training enclave; returns client -> number of samples, as the
        admin accepted them (each enclave's count from its provisioned data, matching its data owner's
        declaration). Raises if an enclave refuses the bundle or the admin refuses the deployment."""
        for c in clients:
            self.send(leaf_name(c), "BUNDLE", {"signed": sign_bundle(bundle, self.signing_key, leaf_name(c))})
        leaves = {leaf_name(c) for c in clients}
        deadline = time.monotonic() + timeout
        while True:
            msg = self.wait_for(lambda m: (m.kind == "BUNDLE_ACK" and m.src in leaves) or m.kind == "PEER_DOWN"
                                or (m.src == ADMIN and m.kind in ("DEPLOYED", "DEPLOY_FAILED")),
                                max(0.0, deadline - time.monotonic()), "the admin's confirmation of the deployment")
            if msg.kind == "PEER_DOWN":
                raise CitadelError(f"{msg.meta.get('role')} exited while the deployment was loading")
            if msg.kind == "BUNDLE_ACK" and "error" in msg.meta:
                raise BundleError(f"{msg.src} refused the bundle: {msg.meta['error']}")
            if msg.kind == "DEPLOY_FAILED":
                raise AttestationError(f"the admin refused the deployment: {msg.meta['role']}: {msg.meta['reason']}")
            if msg.kind == "DEPLOYED":
                counts = {int(c): int(n) for c, n in msg.meta["counts"].items()}
                if set(counts) != set(clients):
                    raise CitadelError(f"the admin confirmed clients {sorted(counts)}, expected {sorted(clients)}")
                self.num_samples = counts
                return counts

    def start_round(self, rnd: int, weights: np.ndarray, clients: list[int]) -> None:
        """Tell the admin who takes part, broadcast the encrypted weights, send each enclave its ticket."""
        self.rejections.clear()
        self.end_round()
        self.send(ADMIN, "ROUND_PLAN", {"rnd": rnd, "clients": clients})
        sealed = broadcast.seal(pack({"rnd": rnd}, {"weights": weights}), session=self.session, rnd=rnd,
                                sender=OWNER, prefix=self.mailbox.shm_prefix)
        if sealed.segment:
            self.broadcasts.append(sealed.segment)
        # the planned total lets each enclave encode early; the admin's total for the attempt decides
        planned = sum(self.num_samples.get(c, 0) for c in clients)
        # without shared memory (network transport) the ciphertext travels inline beside each ticket
        inline = None if sealed.segment else {"broadcast": np.frombuffer(sealed.ciphertext, dtype=np.uint8)}
        for c in clients:  # each enclave's ticket carries its own one-time tag
            self.send(leaf_name(c), "ROUND_START", {"rnd": rnd, "broadcast": sealed.ticket().to_meta(),
                                                    "total_samples": planned}, inline)

    def end_round(self) -> None:
        """Unlink this round's broadcast segment (late readers then drop out, as if the host withheld it)."""
        shm.unlink_all(self.broadcasts)
        self.broadcasts.clear()

    def await_result(self, rnd: int, timeout: float, result_grace: float) -> Message:
        """The root's RESULT for `rnd`; raises RoundAbortedError on abort, rejection, role loss or timeout.

        Waits at most `result_grace` for the admin to acknowledge the plan (PLANNED), at most `timeout` for
        its decision (COMMITTED or ABORT), and once the admin has committed, at most `result_grace` more
        for the root's RESULT; the error names who did not deliver what."""
        start = time.monotonic()
        deadline = start + timeout
        committed: dict[str, Any] | None = None
        planned = False
        while True:
            if self.rejections:
                raise RoundAbortedError(rnd, f"the model owner rejected a message: {self.rejections[0]}")
            now = time.monotonic()
            if not planned and now - start >= result_grace:
                raise RoundAbortedError(rnd, f"the admin did not acknowledge the plan of round {rnd} within "
                                             f"{result_grace:g} s (ROUND_PLAN or PLANNED lost)")
            left = deadline - now
            if left <= 0:
                if committed is None:
                    raise RoundAbortedError(rnd, f"the admin sent neither COMMITTED nor ABORT for round {rnd} "
                                                 f"within {timeout:g} s")
                raise RoundAbortedError(rnd, f"the root did not deliver the RESULT of round {rnd} (attempt "
                                             f"{committed['attempt']}) within {result_grace:g} s of the admin's "
                                             "commit", list(committed.get("dropped", [])))
            msg = self.next_message(min(left, 0.1 if not planned else 0.5))
            if msg is None:
                continue
            self._record(msg)
            if msg.kind == "RESULT" and msg.src == ROOT and int(msg.meta["rnd"]) == rnd:
                return msg
            if msg.kind in ("PLANNED", "COMMITTED") and msg.src == ADMIN and int(msg.meta["rnd"]) == rnd:
                planned = True  # a commit implies the plan arrived, should PLANNED itself be lost
            if msg.kind == "COMMITTED" and msg.src == ADMIN and int(msg.meta["rnd"]) == rnd and committed is None:
                committed = msg.meta
                deadline = time.monotonic() + result_grace
            if msg.kind == "ABORT" and msg.src == ADMIN and int(msg.meta["rnd"]) == rnd:
                raise RoundAbortedError(rnd, str(msg.meta["reason"]), list(msg.meta.get("dropped", [])))
            if msg.kind == "PEER_DOWN" and (msg.meta.get("role") == ADMIN or msg.meta.get("role") == ROOT
                                            or str(msg.meta.get("role", "")).startswith("agg-")):
                raise RoundAbortedError(rnd, f"role {msg.meta.get('role')} exited")  # a dead party is a dropout
