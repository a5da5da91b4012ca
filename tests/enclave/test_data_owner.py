"""A data owner sends its data only to the enclave it attested, with a declaration bound to one deployment.

The data owner runs in this process against a fake training enclave played by the test over a raw pipe
(no relay, no processes); the test's `MockQuoteSigner` is the platform."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave.attestation import key_fingerprint
from siegecraft.enclave.authority import MockQuoteSigner
from siegecraft.enclave.channel import PeerIdentity, SecureChannel, public_bytes
from siegecraft.enclave.data_owner import DataOwner, DataOwnerSpec, OwnerPolicy, TrustAnchor
from siegecraft.enclave.errors import AttestationError
from siegecraft.enclave.measurement import SECURITY_VERSION, measure
from siegecraft.enclave.provisioning import (
    SampleDeclaration,
    declared_count,
    hello_message,
    provision_context,
)
from siegecraft.enclave.transport import Mailbox
from siegecraft.enclave.wire import PLAINTEXT_SEQ, Envelope, pack, unpack

SESSION = bytes(range(16))
DATA = {"seed": 7, "num_samples": 12, "amplitude": 0.5, "tag": "owner-secret-3391"}
MODEL_OWNER = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def raw_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# -- declarations ---------------------------------------------------------------------------------
def test_declaration_binds_client_count_and_deployment() -> None:
    key = Ed25519PrivateKey.generate()
    declaration = SampleDeclaration.sign(key, 3, 41, SESSION)
    declaration.verify(raw_key(key), client_id=3, session=SESSION)
    assert SampleDeclaration.from_dict(declaration.to_dict()) == declaration
    with pytest.raises(AttestationError, match="not signed by its data owner"):
        dataclasses.replace(declaration, num_samples=10**9).verify(raw_key(key), client_id=3, session=SESSION)
    with pytest.raises(AttestationError, match="another deployment"):
        declaration.verify(raw_key(key), client_id=3, session=bytes(16))  # replayed into another deployment
    with pytest.raises(AttestationError, match="for client 3, not 4"):
        declaration.verify(raw_key(key), client_id=4, session=SESSION)
    with pytest.raises(AttestationError, match="not signed by its data owner"):
        declaration.verify(raw_key(Ed25519PrivateKey.generate()), client_id=3, session=SESSION)
    forged = SampleDeclaration.sign(Ed25519PrivateKey.generate(), 3, 41, SESSION)  # signed by someone else
    with pytest.raises(AttestationError, match="not signed"):
        forged.verify(raw_key(key), client_id=3, session=SESSION)
    for broken in ({}, {**declaration.to_dict(), "num_samples": "41"}, {**declaration.to_dict(), "session": "x"}):
        with pytest.raises(AttestationError, match="malformed"):
            SampleDeclaration.from_dict(broken)


def test_an_owner_counts_its_data() -> None:
    assert declared_count({"indices": [4, 8, 15]}) == 3
    assert declared_count(DATA) == 12
    with pytest.raises(ValueError, match="neither"):
        declared_count({"seed": 1})


# -- provisioning against a fake enclave ------------------------------------------------------------
@dataclass
class Setup:
    owner: DataOwner
    enclave: Connection
    signer: MockQuoteSigner
    config: dict[str, Any]


@pytest.fixture
def setup() -> Iterator[Setup]:
    owner_end, enclave_end = mp.Pipe()
    owner = DataOwner(DataOwnerSpec(0, DATA, 12), Mailbox(owner_end, "do-0"), OwnerPolicy(MODEL_OWNER, 1))
    config = {"role": "te-0", "client_id": 0, "parent": "root", "owner_verify_key": MODEL_OWNER.hex(),
              "data_owner_key": owner.verify_key.hex(), "attestation": {"backend": "mock", "min_svn": 1}}
    yield Setup(owner, enclave_end, MockQuoteSigner(), config)
    owner.mailbox.close()
    enclave_end.close()


def receive(conn: Connection) -> Envelope:
    assert conn.poll(10.0), "the data owner sent nothing"
    return Envelope.from_bytes(conn.recv_bytes())


def send_plain(conn: Connection, kind: str, meta: dict[str, Any]) -> None:
    conn.send_bytes(Envelope(kind, "te-0", "do-0", PLAINTEXT_SEQ, pack(meta)).to_bytes())


def run_finish(s: Setup, verifier: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            s.owner.finish(verifier, 10.0)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    return thread, errors


def test_the_owner_provisions_the_enclave_it_attested(setup: Setup) -> None:
    s = setup
    verifier = s.owner.start(TrustAnchor("mock", s.signer.public_key), s.config, 10.0)
    hello = receive(s.enclave)
    meta, _ = unpack(hello.body)
    their_key, nonce = bytes.fromhex(meta["public_key"]), bytes.fromhex(meta["nonce"])
    Ed25519PublicKey.from_public_bytes(s.owner.verify_key).verify(bytes.fromhex(meta["signature"]),
                                                                  hello_message("te-0", their_key, nonce))
    enclave_key = X25519PrivateKey.generate()
    measurement = measure("training", s.config)
    quote = s.signer.sign(measurement, public_bytes(enclave_key), nonce, svn=SECURITY_VERSION, debug=False)
    thread, errors = run_finish(s, verifier)
    send_plain(s.enclave, "PROVISION_EVIDENCE", {"quote": quote.to_dict(), "public_key": public_bytes(enclave_key).hex()})
    me = PeerIdentity("te-0", public_bytes(enclave_key), measurement)
    channel = SecureChannel(me, enclave_key, PeerIdentity("do-0", their_key, key_fingerprint(s.owner.verify_key)),
                            provision_context(nonce))
    s.enclave.send_bytes(channel.seal_message("PROVISION_SESSION", {"session": SESSION.hex()}).to_bytes())
    data_env = receive(s.enclave)
    thread.join(10.0)
    assert not errors and data_env.kind == "DATA" and data_env.sealed
    assert b"owner-secret-3391" not in data_env.to_bytes()  # what the host sees is ciphertext
    body, _ = channel.open_message(data_env)
    assert body["data"] == DATA
    declaration = SampleDeclaration.from_dict(body["declaration"])
    declaration.verify(s.owner.verify_key, client_id=0, session=SESSION)
    assert declaration.num_samples == 12


WRONG = {
    "altered code": ({"measurement": measure("training", {"role": "te-0", "evil": 1})}, "not in the allow-list"),
    "host's own signer": ({"signer": "host"}, "wrong signer"),
    "debug enclave": ({"debug": True}, "debug enclave"),
    "old security version": ({"svn": 0}, "svn too low"),
    "swapped key": ({"claimed_key": "other"}, "key binding failed"),
    "quote for another nonce": ({"nonce": bytes(32)}, "stale or unknown nonce"),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_the_owner_sends_nothing_to_an_enclave_it_does_not_accept(setup: Setup, case: str) -> None:
    s = setup
    change, error = WRONG[case]
    verifier = s.owner.start(TrustAnchor("mock", s.signer.public_key), s.config, 10.0)
    meta, _ = unpack(receive(s.enclave).body)
    nonce = change.get("nonce", bytes.fromhex(meta["nonce"]))
    enclave_key = public_bytes(X25519PrivateKey.generate())
    signer = MockQuoteSigner() if change.get("signer") == "host" else s.signer
    quote = signer.sign(change.get("measurement", measure("training", s.config)), enclave_key, nonce,
                        svn=change.get("svn", SECURITY_VERSION), debug=change.get("debug", False))
    claimed = public_bytes(X25519PrivateKey.generate()) if "claimed_key" in change else enclave_key
    thread, errors = run_finish(s, verifier)
    send_plain(s.enclave, "PROVISION_EVIDENCE", {"quote": quote.to_dict(), "public_key": claimed.hex()})
    thread.join(10.0)
    assert len(errors) == 1 and isinstance(errors[0], AttestationError)
    assert "do-0 refused te-0" in str(errors[0]) and error in str(errors[0])
    refusal = receive(s.enclave)
    assert refusal.kind == "PROVISION_REFUSED" and not refusal.sealed
    assert not s.enclave.poll(0.2)  # and nothing else, no data


@pytest.mark.parametrize("field,value", [("data_owner_key", "00" * 32), ("client_id", 1),
                                         ("owner_verify_key", "11" * 32), ("data", DATA)])
def test_the_owner_refuses_a_configuration_it_cannot_vouch_for(setup: Setup, field: str, value: Any) -> None:
    """The host proposes an enclave configuration; the owner computes its measurement only after checking
    that it names this client, this owner's key and the model owner, and carries no data."""
    with pytest.raises(AttestationError, match=f"wrong \\['{field}'\\]|carries data"):
        setup.owner.start(TrustAnchor("mock", setup.signer.public_key), {**setup.config, field: value}, 10.0)
    assert not setup.enclave.poll(0.2)
    assert "owner-secret" not in repr(setup.owner) and "signing_key" not in repr(setup.owner)
