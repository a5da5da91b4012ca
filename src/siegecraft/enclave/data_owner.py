"""Data owners: each attests its own training enclave and only then provisions its data to it.

A data owner is not an enclave. Its identity is an Ed25519 signing key drawn in its own process; the
public half goes into its training enclave's measured configuration and into the admin's policy. To
provision, it (1) checks that the enclave configuration the host proposes names this client, this
owner's key and the expected model owner, and computes the measurement of that configuration itself;
(2) challenges the enclave with a fresh nonce and checks its quote against its own policy (the
platform's signer, received from the platform at start-up and not from the host, the minimum SVN, no
debug enclaves unless allowed, the measurement, the key binding); (3) opens a channel (X25519, HKDF,
AES-GCM: `SecureChannel`) to the attested key and sends the data spec with a `SampleDeclaration` for
the session id the enclave reports. It never sends anything to an enclave it did not accept.

SIMULATION choice: all data owners of a deployment live in one "data owners" process (one key pair,
one relay pipe and one endpoint each), separate from the launching process, because starting one
process per owner is slow on small machines and the test suite starts many deployments. The data
specs reach that process from the launching script's experiment description when it starts; from
there on they travel only inside each owner's attested channel.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import util
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave.attestation import (
    Quote,
    QuoteVerifier,
    VerifierPolicy,
    key_fingerprint,
    quote_checker,
)
from siegecraft.enclave.channel import PeerIdentity, SecureChannel
from siegecraft.enclave.errors import AttestationError, CitadelError
from siegecraft.enclave.launcher import PlatformError
from siegecraft.enclave.measurement import measure
from siegecraft.enclave.provisioning import (
    SampleDeclaration,
    data_owner_name,
    hello_message,
    provision_context,
)
from siegecraft.enclave.roles.admin import leaf_name
from siegecraft.enclave.roles.base import Endpoint
from siegecraft.enclave.transport import Mailbox

log = logging.getLogger("siegecraft.enclave")
REPLY_MARGIN_S = 10.0


@dataclass(frozen=True)
class TrustAnchor:
    """The platform's signer as the platform itself announced it."""

    backend: str
    signer: bytes

    @classmethod
    def receive(cls, conn: Connection, timeout: float) -> TrustAnchor:
        """Read the platform's announcement from the pipe the platform was started with."""
        try:
            if not conn.poll(timeout):
                raise AttestationError(f"the platform did not announce its signer within {timeout:g} s")
            body = json.loads(conn.recv_bytes(4096))
            return cls(str(body["backend"]), bytes.fromhex(body["signer"]))
        except (EOFError, OSError, KeyError, TypeError, ValueError) as exc:
            raise AttestationError(f"no trust anchor from the platform: {exc}") from None
        finally:
            conn.close()


@dataclass(frozen=True)
class OwnerPolicy:
    """What every data owner of a deployment requires of its enclave beyond the measurement."""

    model_owner_key: bytes
    min_svn: int = 0
    allow_debug: bool = False


@dataclass
class DataOwnerSpec:
    """One data owner's data and the count it declares (the size of that data unless a test overrides it)."""

    client_id: int
    data: dict[str, Any] = field(repr=False)
    num_samples: int


class DataOwner(Endpoint):
    """One data owner's endpoint: attests its training enclave, then sends it the data and a declaration."""

    def __init__(self, spec: DataOwnerSpec, mailbox: Mailbox, policy: OwnerPolicy) -> None:
        self.signing_key = Ed25519PrivateKey.generate()
        self.verify_key = self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        super().__init__(data_owner_name(spec.client_id), mailbox, key_fingerprint(self.verify_key))
        self.spec = spec
        self.policy = policy
        self.enclave = leaf_name(spec.client_id)
        self._nonce = b""

    def __repr__(self) -> str:
        return f"DataOwner(client_id={self.spec.client_id}, verify_key={self.verify_key.hex()[:12]}...)"

    def expected_measurement(self, config: dict[str, Any]) -> bytes:
        """The measurement of the proposed configuration, after checking the fields this owner vouches for."""
        wanted = {"role": self.enclave, "client_id": self.spec.client_id, "data_owner_key": self.verify_key.hex(),
                  "owner_verify_key": self.policy.model_owner_key.hex()}
        wrong = sorted(k for k, v in wanted.items() if config.get(k) != v)
        if wrong:
            raise AttestationError(f"{self.id}: the proposed configuration of {self.enclave} has the wrong {wrong}")
        if "data" in config:
            raise AttestationError(f"{self.id}: the proposed configuration of {self.enclave} carries data")
        return measure("training", config)

    def start(self, anchor: TrustAnchor, config: dict[str, Any], timeout: float) -> QuoteVerifier:
        """Send the signed hello with a fresh nonce; returns the verifier that holds the nonce."""
        policy = VerifierPolicy.build({self.enclave: self.expected_measurement(config)}, anchor.signer,
                                      min_svn=self.policy.min_svn, allow_debug=self.policy.allow_debug,
                                      backend=anchor.backend)
        verifier = QuoteVerifier(quote_checker(anchor.backend), policy, nonce_ttl_s=timeout)
        nonce = verifier.challenge(self.enclave)
        public_key = self.identity.public_key
        signature = self.signing_key.sign(hello_message(self.enclave, public_key, nonce))
        self.send_plain(self.enclave, "PROVISION_HELLO", {"public_key": public_key.hex(), "nonce": nonce.hex(),
                                                          "signature": signature.hex()})
        self._nonce = nonce
        return verifier

    def finish(self, verifier: QuoteVerifier, timeout: float) -> None:
        """Check the enclave's evidence; only if it passes, send the data and the declaration."""
        msg = self.wait_for(lambda m: m.kind == "PROVISION_EVIDENCE" and m.src == self.enclave, timeout,
                            f"the evidence of {self.enclave}")
        try:
            enclave_key = bytes.fromhex(msg.meta["public_key"])
            quote = Quote.from_dict(msg.meta["quote"])
            verifier.verify(self.enclave, quote, enclave_key)
        except (AttestationError, KeyError, TypeError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, AttestationError) else f"malformed evidence: {exc}"
            self.send_plain(self.enclave, "PROVISION_REFUSED", {"reason": reason})
            raise AttestationError(f"{self.id} refused {self.enclave}: {reason}") from None
        peer = PeerIdentity(self.enclave, enclave_key, quote.measurement)
        self.channels[self.enclave] = SecureChannel(self.identity, self.key, peer, provision_context(self._nonce))
        self.release_held()
        msg = self.wait_for(lambda m: m.kind == "PROVISION_SESSION" and m.src == self.enclave and m.sealed,
                            timeout, f"the session id from {self.enclave}")
        session = bytes.fromhex(str(msg.meta["session"]))
        declaration = SampleDeclaration.sign(self.signing_key, self.spec.client_id, self.spec.num_samples, session)
        self.send(self.enclave, "DATA", {"data": self.spec.data, "declaration": declaration.to_dict()})


def provision_all(owners: dict[int, DataOwner], anchor: TrustAnchor, configs: dict[int, dict[str, Any]],
                  timeout: float) -> dict[int, str]:
    """Provision every owner's enclave: all hellos first, then each owner's evidence in turn (the enclaves
    answer in parallel). Returns client -> "ok" or the reason it was not provisioned."""
    results: dict[int, str] = {}
    verifiers: dict[int, QuoteVerifier] = {}
    for client, owner in owners.items():
        try:
            verifiers[client] = owner.start(anchor, configs[client], timeout)
        except (CitadelError, KeyError) as exc:
            results[client] = f"not started: {exc}"
    for client, verifier in verifiers.items():
        try:
            owners[client].finish(verifier, timeout)
            results[client] = "ok"
        except CitadelError as exc:
            results[client] = str(exc)
            log.warning("%s", exc)
    return results


def _provision_and_report(owners: dict[int, DataOwner], anchor: TrustAnchor, configs: dict[int, dict[str, Any]],
                          timeout: float, reply: Callable[[dict[str, Any]], None]) -> None:
    results = provision_all(owners, anchor, configs, timeout)
    try:
        reply({"ok": True, "results": {str(c): r for c, r in results.items()}})
    except OSError:
        pass  # the session stopped this process meanwhile


def data_owners_main(control: Connection, anchor_conn: Connection, specs: list[DataOwnerSpec],
                     conns: dict[int, Connection], policy: OwnerPolicy, options: dict[str, Any]) -> None:
    """Entry point of the data owners process: one endpoint per owner; provision on request; stop on request."""
    logging.basicConfig(level=options.get("log_level", "WARNING"),
                        format="%(asctime)s data-owners %(levelname)s %(message)s")
    owners = {s.client_id: DataOwner(s, Mailbox(conns[s.client_id], data_owner_name(s.client_id),
                                                shm_prefix=options.get("shm_prefix"),
                                                bulk_threshold=int(options.get("bulk_threshold", 0))), policy)
              for s in specs}
    lock = threading.Lock()

    def reply(answer: dict[str, Any]) -> None:
        with lock:
            control.send_bytes(json.dumps(answer).encode())

    try:
        anchor = TrustAnchor.receive(anchor_conn, float(options.get("start_timeout_s", 120.0)))
        reply({"ok": True, "keys": {str(c): o.verify_key.hex() for c, o in owners.items()}})
        while True:
            try:
                body = json.loads(control.recv_bytes())
            except (EOFError, OSError):
                break
            if body.get("op") == "provision":
                configs = {int(c): dict(conf) for c, conf in body["configs"].items()}
                threading.Thread(target=_provision_and_report, name="provision", daemon=True,
                                 args=(owners, anchor, configs, float(body["timeout"]), reply)).start()
            elif body.get("op") == "stop":
                break
    except (AttestationError, OSError) as exc:
        log.error("data owners: %s", exc)
    finally:
        for owner in owners.values():
            owner.mailbox.close()


def _stop(conn: Connection, process: Any) -> None:
    try:
        conn.send_bytes(json.dumps({"op": "stop"}).encode())
    except OSError:
        pass
    process.join(3.0)
    if process.is_alive():
        process.terminate()
        process.join(1.0)
    conn.close()


class DataOwnersProcess:
    """The launcher's handle on the data owners process: their public keys, the provisioning request, stop."""

    def __init__(self, ctx: BaseContext, specs: list[DataOwnerSpec], conns: dict[int, Connection],
                 anchor_conn: Connection, policy: OwnerPolicy, options: dict[str, Any]) -> None:
        self._conn, child_end = ctx.Pipe()
        self._process = ctx.Process(target=data_owners_main, name="citadel-data-owners", daemon=True,
                                    args=(child_end, anchor_conn, specs, conns, policy, options))
        self._process.start()
        child_end.close()
        self.keys: dict[int, bytes] = {}
        self.results: dict[int, str] = {}
        self._finalizer = util.Finalize(self, _stop, args=(self._conn, self._process), exitpriority=10)

    def __repr__(self) -> str:
        return f"DataOwnersProcess(pid={self.pid}, owners={sorted(self.keys)})"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _receive(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            if not self._conn.poll(timeout):
                raise PlatformError(f"the data owners process did not {what} within {timeout:g} s")
            return dict(json.loads(self._conn.recv_bytes()))
        except (EOFError, OSError) as exc:
            raise PlatformError(f"the data owners process is gone: {exc}") from None

    def wait_ready(self, timeout: float) -> dict[int, bytes]:
        """Each owner's verify key (drawn in that process), once the platform's signer has reached it."""
        if not self.keys:
            answer = self._receive(timeout, "start")
            self.keys = {int(c): bytes.fromhex(k) for c, k in answer["keys"].items()}
        return self.keys

    def provision(self, configs: dict[int, dict[str, Any]], timeout: float) -> None:
        """Ask every owner to attest the enclave proposed for it and provision it (answers come later)."""
        request = {"op": "provision", "configs": {str(c): conf for c, conf in configs.items()}, "timeout": timeout}
        try:
            self._conn.send_bytes(json.dumps(request).encode())
        except OSError as exc:
            raise PlatformError(f"the data owners process is gone: {exc}") from None

    def wait_results(self, timeout: float) -> dict[int, str]:
        """Client -> "ok" or why that owner sent no data."""
        if not self.results:
            answer = self._receive(timeout, "report on provisioning")
            self.results = {int(c): str(r) for c, r in answer["results"].items()}
        return self.results

    def close(self) -> None:
        self._finalizer()
