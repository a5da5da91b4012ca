"""Remote attestation behind a small interface, with a mock authority standing in for SGX.

SIMULATION: there is no SGX here. `MockAttestationAuthority` plays the part of the CPU's quoting
enclave and Intel's attestation service: it signs (measurement, enclave public key, verifier nonce)
with an Ed25519 key. The launcher (the simulated platform) computes each role's measurement before
starting it, and the role can only ask for quotes over that measurement. A real backend (Gramine's
/dev/attestation, SGX DCAP) implements the same `AttestationBackend` methods; nothing else changes.

`QuoteVerifier` holds the verifier's policy: a measurement allow-list per role, single-use nonces
with a time-to-live, and the key binding between the quote and the channel being opened.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from siegecraft.enclave.errors import AttestationError

NONCE_BYTES = 32
_QUOTE_DOMAIN = b"citadel/quote/v1\0"


def _fields(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


@dataclass(frozen=True)
class Quote:
    """Evidence that an enclave with `measurement` holds the private half of `public_key`, now."""

    measurement: bytes
    public_key: bytes
    nonce: bytes
    signature: bytes
    backend: str = "mock"

    def signed_bytes(self) -> bytes:
        """The exact bytes the authority signs: domain, backend name and the three bound values."""
        return _QUOTE_DOMAIN + _fields(self.backend.encode(), self.measurement, self.public_key, self.nonce)

    def to_dict(self) -> dict[str, str]:
        return {"measurement": self.measurement.hex(), "public_key": self.public_key.hex(),
                "nonce": self.nonce.hex(), "signature": self.signature.hex(), "backend": self.backend}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quote:
        try:
            return cls(bytes.fromhex(data["measurement"]), bytes.fromhex(data["public_key"]),
                       bytes.fromhex(data["nonce"]), bytes.fromhex(data["signature"]), str(data["backend"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise AttestationError(f"malformed quote: {exc}") from None


class AttestationBackend(ABC):
    """Produces quotes for enclaves and checks that a quote really comes from the platform authority."""

    name: str

    @abstractmethod
    def quote(self, measurement: bytes, public_key: bytes, nonce: bytes) -> Quote:
        """Platform side: a quote binding the enclave's measurement to its key and the verifier's nonce."""

    @abstractmethod
    def check(self, quote: Quote) -> None:
        """Verifier side: raise AttestationError unless the authority genuinely produced `quote`."""

    @abstractmethod
    def verifier(self) -> AttestationBackend:
        """A copy that can only check quotes (what verifiers are given)."""


class MockAttestationAuthority(AttestationBackend):
    """SIMULATION of an attestation authority: an Ed25519 key signs quotes for launched roles.

    Its private key travels to each role process at launch (a real platform keeps it in hardware), so
    this models honest hardware, not a secure one.
    """

    name = "mock"

    def __init__(self, private_key: Ed25519PrivateKey | None = None, *, public_key: bytes | None = None) -> None:
        self._private = private_key
        if private_key is not None:
            public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        if public_key is None:
            raise ValueError("give the authority's private key, or its public key for a verify-only copy")
        self.public_key = public_key

    @classmethod
    def generate(cls) -> MockAttestationAuthority:
        return cls(Ed25519PrivateKey.generate())

    def __getstate__(self) -> dict[str, bytes | None]:
        raw = None if self._private is None else self._private.private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return {"private": raw, "public": self.public_key}

    def __setstate__(self, state: dict[str, bytes | None]) -> None:
        raw = state["private"]
        self._private = None if raw is None else Ed25519PrivateKey.from_private_bytes(raw)
        self.public_key = state["public"]  # type: ignore[assignment]

    def quote(self, measurement: bytes, public_key: bytes, nonce: bytes) -> Quote:
        if self._private is None:
            raise AttestationError("this copy of the mock authority can only verify quotes")
        unsigned = Quote(measurement, public_key, nonce, b"", self.name)
        return Quote(measurement, public_key, nonce, self._private.sign(unsigned.signed_bytes()), self.name)

    def check(self, quote: Quote) -> None:
        if quote.backend != self.name:
            raise AttestationError(f"quote from backend {quote.backend!r}, expected {self.name!r}")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(quote.signature, quote.signed_bytes())
        except (InvalidSignature, ValueError):
            raise AttestationError("quote signature is invalid: not signed by the attestation authority "
                                   "(or a quoted field was altered)") from None

    def verifier(self) -> MockAttestationAuthority:
        return MockAttestationAuthority(public_key=self.public_key)


@dataclass(frozen=True)
class EnclavePlatform:
    """What a launched role sees of the platform: it can get quotes, but only for its own measurement."""

    backend: AttestationBackend
    measurement: bytes

    def quote(self, public_key: bytes, nonce: bytes) -> Quote:
        return self.backend.quote(self.measurement, public_key, nonce)


def short(digest: bytes) -> str:
    """First 12 hex digits, for error messages."""
    return digest.hex()[:12]


class QuoteVerifier:
    """Policy of one verifier: allow-listed measurements per role, fresh single-use nonces, key binding."""

    def __init__(self, backend: AttestationBackend, allowed: Mapping[str, bytes | set[bytes]], *,
                 nonce_ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.allowed = {role: ({m} if isinstance(m, bytes) else set(m)) for role, m in allowed.items()}
        self.nonce_ttl_s = nonce_ttl_s
        self.clock = clock
        self._outstanding: dict[bytes, tuple[str, float]] = {}

    def challenge(self, role: str) -> bytes:
        """A fresh random nonce that `role` must include in its next quote."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        self._outstanding[nonce] = (role, self.clock())
        return nonce

    def verify(self, role: str, quote: Quote, channel_key: bytes) -> None:
        """Accept `quote` from `role` for a channel keyed by `channel_key`, or raise AttestationError.

        Checks, in order: the authority's signature, the nonce (issued by us, to this role, unused,
        younger than the TTL - consumed either way), the measurement allow-list and the key binding.
        """
        issued = self._outstanding.pop(quote.nonce, None)
        self.backend.check(quote)
        if issued is None:
            raise AttestationError(f"stale or unknown nonce in the quote of {role!r}: it was never issued "
                                   "by this verifier or was already used (replayed quote)")
        issued_to, issued_at = issued
        if issued_to != role:
            raise AttestationError(f"nonce was issued to {issued_to!r}, not {role!r}")
        age = self.clock() - issued_at
        if age > self.nonce_ttl_s:
            raise AttestationError(f"stale nonce: issued {age:.1f} s ago, TTL {self.nonce_ttl_s:.1f} s")
        expected = self.allowed.get(role)
        if expected is None:
            raise AttestationError(f"no measurement is allow-listed for role {role!r}")
        if quote.measurement not in expected:
            raise AttestationError(f"measurement {short(quote.measurement)} of {role!r} is not in the allow-list "
                                   f"(expected {', '.join(sorted(short(m) for m in expected))})")
        if quote.public_key != channel_key:
            raise AttestationError(f"key binding failed for {role!r}: the quoted key {short(quote.public_key)} "
                                   f"is not the channel key {short(channel_key)} (swapped key)")


def key_fingerprint(public_key: bytes) -> bytes:
    """SHA-256 of a public key: stands in for a measurement for parties that are not enclaves."""
    return hashlib.sha256(b"citadel/key/v1\0" + public_key).digest()
