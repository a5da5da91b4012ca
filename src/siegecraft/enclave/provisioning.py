"""What a data owner and its training enclave agree on when the data is provisioned.

A data owner is not an enclave: its identity is an Ed25519 signing key whose public half is part of its
training enclave's measured configuration and of the admin's policy. It attests its enclave (its own
nonce, the expected measurement, the key binding), then sends the data over an authenticated channel
with a `SampleDeclaration`: its signature over (client id, sample count, the deployment's session id),
domain-separated, so the declaration is worthless in any other deployment or for any other client. The
admin compares the declared count with the count the enclave's trainer found in the provisioned data.

Messages: PROVISION_HELLO (owner -> enclave, plaintext, signed), PROVISION_EVIDENCE (enclave -> owner,
plaintext, a quote), PROVISION_SESSION (enclave -> owner, sealed), DATA (owner -> enclave, sealed),
PROVISION_REFUSED (owner -> enclave, plaintext: it did not accept the evidence; only ever a dropout).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from siegecraft.enclave.errors import AttestationError

_HELLO_DOMAIN = b"citadel/provision-hello/v1\0"
_DECLARATION_DOMAIN = b"citadel/sample-count/v1\0"
_CONTEXT = b"citadel/provision/"


def data_owner_name(client_id: int) -> str:
    """The relay name of a data owner's endpoint."""
    return f"do-{client_id}"


def hello_message(enclave: str, public_key: bytes, nonce: bytes) -> bytes:
    """What a data owner signs to vouch for its channel key towards one enclave."""
    return _HELLO_DOMAIN + enclave.encode() + b"\0" + public_key + nonce


def provision_context(nonce: bytes) -> bytes:
    """Channel context between a data owner and its enclave: the owner's attestation nonce."""
    return _CONTEXT + nonce


def declared_count(data: Mapping[str, Any]) -> int:
    """How many samples a data spec holds, as its owner counts them: its indices, or its stated size."""
    if "indices" in data:
        return len(data["indices"])
    if "num_samples" in data:
        return int(data["num_samples"])
    raise ValueError("cannot count the samples of a data spec with neither 'indices' nor 'num_samples'; "
                     "give PartySpec.num_samples")


@dataclass(frozen=True)
class SampleDeclaration:
    """A data owner's signed statement of how many samples it provisioned, for one deployment."""

    client_id: int
    num_samples: int
    session: bytes
    signature: bytes

    @staticmethod
    def message(client_id: int, num_samples: int, session: bytes) -> bytes:
        if not (0 <= client_id < 2**63 and 0 <= num_samples < 2**63):
            raise ValueError(f"client id {client_id} and sample count {num_samples} must be in [0, 2^63)")
        return _DECLARATION_DOMAIN + struct.pack(">QQ", client_id, num_samples) + session

    @classmethod
    def sign(cls, key: Ed25519PrivateKey, client_id: int, num_samples: int, session: bytes) -> SampleDeclaration:
        return cls(client_id, num_samples, session, key.sign(cls.message(client_id, num_samples, session)))

    def verify(self, verify_key: bytes, *, client_id: int, session: bytes) -> None:
        """Raise AttestationError unless this is `client_id`'s owner's declaration for `session`."""
        if self.client_id != client_id:
            raise AttestationError(f"the sample declaration is for client {self.client_id}, not {client_id}")
        if self.session != session:
            raise AttestationError(f"the sample declaration of client {client_id} is for another deployment "
                                   "(session id mismatch): a replay")
        try:
            Ed25519PublicKey.from_public_bytes(verify_key).verify(
                self.signature, self.message(self.client_id, self.num_samples, self.session))
        except (InvalidSignature, ValueError):
            raise AttestationError(f"the sample declaration of client {client_id} is not signed by its data "
                                   "owner (or was altered)") from None

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "num_samples": self.num_samples, "session": self.session.hex(),
                "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleDeclaration:
        try:
            client_id, num_samples = data["client_id"], data["num_samples"]
            if type(client_id) is not int or type(num_samples) is not int:
                raise TypeError("client_id and num_samples must be integers")
            return cls(client_id, num_samples, bytes.fromhex(data["session"]), bytes.fromhex(data["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise AttestationError(f"malformed sample declaration: {exc}") from None
