"""Verifier side of remote attestation: quotes, the verifier's policy and the checks it runs.

A quote is the platform's signed statement that an enclave with some measurement, security version
(SVN) and debug attribute holds the private half of a key, bound to a verifier's fresh nonce. This
module only *checks* quotes; producing them is the platform side (quoting.py inside an enclave,
authority.py for the mock platform, launcher.py for the interface a real backend implements).

- `QuoteChecker` checks a quote's signature chain up to the signer the quote names (mock: one
  Ed25519 signature by the authority; SGX DCAP: the PCK certificate chain up to Intel's root).
- `VerifierPolicy` says what a verifier accepts: measurements per role, the signer (the trust
  anchor), a minimum SVN, and whether debug enclaves are acceptable (refused by default).
- `QuoteVerifier` applies a policy with single-use nonces (time-to-live) and checks the key binding
  between the quote and the channel being opened.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from siegecraft.core.registry import Registry
from siegecraft.enclave.errors import AttestationError

NONCE_BYTES = 32
_QUOTE_DOMAIN = b"citadel/quote/v2\0"


def _fields(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def short(digest: bytes) -> str:
    """First 12 hex digits, for error messages."""
    return digest.hex()[:12]


@dataclass(frozen=True)
class Quote:
    """Evidence that an enclave with `measurement` (at security version `svn`, debug or not) holds
    the private half of `public_key`, produced for the verifier's `nonce` and signed by `signer`."""

    measurement: bytes
    public_key: bytes
    nonce: bytes
    svn: int
    debug: bool
    signer: bytes
    signature: bytes
    backend: str = "mock"

    def signed_bytes(self) -> bytes:
        """The exact bytes the platform signs: domain, backend, signer and every quoted field."""
        if not 0 <= self.svn < 2**32:
            raise AttestationError(f"quote svn {self.svn} is out of range")
        return _QUOTE_DOMAIN + _fields(self.backend.encode(), self.signer, self.measurement, self.public_key,
                                       self.nonce, struct.pack(">I?", self.svn, self.debug))

    def to_dict(self) -> dict[str, Any]:
        return {"measurement": self.measurement.hex(), "public_key": self.public_key.hex(),
                "nonce": self.nonce.hex(), "svn": self.svn, "debug": self.debug, "signer": self.signer.hex(),
                "signature": self.signature.hex(), "backend": self.backend}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quote:
        try:
            svn, debug = data["svn"], data["debug"]
            if type(svn) is not int or type(debug) is not bool:
                raise TypeError("svn must be an integer and debug a boolean")
            return cls(bytes.fromhex(data["measurement"]), bytes.fromhex(data["public_key"]),
                       bytes.fromhex(data["nonce"]), svn, debug, bytes.fromhex(data["signer"]),
                       bytes.fromhex(data["signature"]), str(data["backend"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise AttestationError(f"malformed quote: {exc}") from None


class QuoteChecker(ABC):
    """Verifier side of an attestation backend: is this quote's signature chain genuine?"""

    name: ClassVar[str]

    @abstractmethod
    def check(self, quote: Quote) -> None:
        """Raise AttestationError unless `quote` is signed, through the backend's chain, by `quote.signer`.

        Whether that signer is trusted is the policy's question (`VerifierPolicy.signer`), not this one."""


#: backend name -> checker class; a real backend registers its checker (it is part of every enclave's code)
QUOTE_CHECKERS: Registry[type[QuoteChecker]] = Registry("quote checker")


@QUOTE_CHECKERS.register("mock")
class MockQuoteChecker(QuoteChecker):
    """SIMULATION: the mock authority signs quotes with one Ed25519 key; its public key is the signer."""

    name = "mock"

    def check(self, quote: Quote) -> None:
        if quote.backend != self.name:
            raise AttestationError(f"quote from backend {quote.backend!r}, expected {self.name!r}")
        try:
            Ed25519PublicKey.from_public_bytes(quote.signer).verify(quote.signature, quote.signed_bytes())
        except (InvalidSignature, ValueError):
            raise AttestationError("quote signature is invalid: not signed by the attestation authority "
                                   "(or a quoted field was altered)") from None


def quote_checker(backend: str) -> QuoteChecker:
    """The checker for quotes of `backend`."""
    if backend not in QUOTE_CHECKERS:
        raise AttestationError(f"no quote checker for backend {backend!r}; known: "
                               f"{', '.join(QUOTE_CHECKERS.names())}")
    return QUOTE_CHECKERS.get(backend)()


@dataclass(frozen=True)
class VerifierPolicy:
    """What one verifier accepts. `signer` is its trust anchor (mock: the authority's public key)."""

    measurements: Mapping[str, frozenset[bytes]]
    signer: bytes
    min_svn: int = 0
    allow_debug: bool = False
    backend: str = "mock"

    @classmethod
    def build(cls, measurements: Mapping[str, bytes | Iterable[bytes]], signer: bytes, *, min_svn: int = 0,
              allow_debug: bool = False, backend: str = "mock") -> VerifierPolicy:
        """A policy from role -> one accepted measurement (or several)."""
        accepted = {role: frozenset([m] if isinstance(m, bytes) else m) for role, m in measurements.items()}
        return cls(accepted, signer, min_svn, allow_debug, backend)

    def check(self, role: str, quote: Quote, checker: QuoteChecker) -> None:
        """Every check of the policy: where the quote comes from, then what it says about the enclave."""
        self.check_origin(role, quote, checker)
        self.check_enclave(role, quote)

    def check_origin(self, role: str, quote: Quote, checker: QuoteChecker) -> None:
        """The backend, the accepted signer, and the signature chain up to it."""
        if quote.backend != self.backend:
            raise AttestationError(f"quote of {role!r} comes from backend {quote.backend!r}; the policy "
                                   f"accepts {self.backend!r}")
        if quote.signer != self.signer:
            raise AttestationError(f"wrong signer: the quote of {role!r} names signer {short(quote.signer)}, the "
                                   f"policy accepts only {short(self.signer)}")
        checker.check(quote)

    def check_enclave(self, role: str, quote: Quote) -> None:
        """The security version, the debug attribute and the measurement of an authentic quote."""
        if quote.svn < self.min_svn:
            raise AttestationError(f"svn too low: {role!r} runs security version {quote.svn}, the policy "
                                   f"requires at least {self.min_svn}")
        if quote.debug and not self.allow_debug:
            raise AttestationError(f"{role!r} is a debug enclave (its memory is open to the host); the policy "
                                   "refuses debug enclaves")
        expected = self.measurements.get(role)
        if not expected:
            raise AttestationError(f"no measurement is allow-listed for role {role!r}")
        if quote.measurement not in expected:
            raise AttestationError(f"measurement {short(quote.measurement)} of {role!r} is not in the allow-list "
                                   f"(expected {', '.join(sorted(short(m) for m in expected))})")


@dataclass
class QuoteVerifier:
    """One verifier: a policy, single-use nonces with a time-to-live, and the key binding."""

    checker: QuoteChecker
    policy: VerifierPolicy
    nonce_ttl_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _outstanding: dict[bytes, tuple[str, float]] = field(default_factory=dict, repr=False)

    def challenge(self, role: str) -> bytes:
        """A fresh random nonce that `role` must include in its next quote."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        self._outstanding[nonce] = (role, self.clock())
        return nonce

    def verify(self, role: str, quote: Quote, channel_key: bytes) -> None:
        """Accept `quote` from `role` for a channel keyed by `channel_key`, or raise AttestationError.

        The nonce is consumed whatever the outcome. Checks, in order: the policy's signer and the
        signature chain, the nonce (issued by us, to this role, unused, younger than the TTL), the
        security version, the debug attribute, the measurement, and the key binding."""
        issued = self._outstanding.pop(quote.nonce, None)
        self.policy.check_origin(role, quote, self.checker)  # a forged quote is named as such first
        if issued is None:
            raise AttestationError(f"stale or unknown nonce in the quote of {role!r}: it was never issued "
                                   "by this verifier or was already used (replayed quote)")
        issued_to, issued_at = issued
        if issued_to != role:
            raise AttestationError(f"nonce was issued to {issued_to!r}, not {role!r}")
        age = self.clock() - issued_at
        if age > self.nonce_ttl_s:
            raise AttestationError(f"stale nonce: issued {age:.1f} s ago, TTL {self.nonce_ttl_s:.1f} s")
        self.policy.check_enclave(role, quote)
        if quote.public_key != channel_key:
            raise AttestationError(f"key binding failed for {role!r}: the quoted key {short(quote.public_key)} "
                                   f"is not the channel key {short(channel_key)} (swapped key)")


def key_fingerprint(public_key: bytes) -> bytes:
    """SHA-256 of a public key: stands in for a measurement for parties that are not enclaves."""
    return hashlib.sha256(b"citadel/key/v1\0" + public_key).digest()
