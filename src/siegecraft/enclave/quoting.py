"""Platform side, as an enclave sees it: a private line to the quoting authority, and its trust anchor.

An enclave process receives an `EnclavePlatform` from whatever launched it (mock: the authority
process, authority.py). It names the backend, the measurement the platform computed when it loaded
the enclave, the signer verifiers must accept (the platform's trust anchor), the SVN and the debug
attribute. `quote(public_key, nonce)` asks the authority over the enclave's private pipe; the
request carries no measurement, because the authority alone decides what the quote says.

The pipe carries JSON (`send_bytes`), never pickle, in both directions.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from siegecraft.enclave.attestation import Quote
from siegecraft.enclave.errors import AttestationError

#: an enclave's X25519 key and a verifier's nonce: the only things an enclave may ask to have quoted
PUBLIC_KEY_BYTES = 32
MAX_NONCE_BYTES = 64
QUOTE_TIMEOUT_S = 60.0


class Quoter(Protocol):
    """Gets quotes over one fixed measurement (the enclave's own)."""

    def quote(self, public_key: bytes, nonce: bytes) -> Quote: ...


def encode_request(public_key: bytes, nonce: bytes) -> bytes:
    return json.dumps({"public_key": public_key.hex(), "nonce": nonce.hex()}).encode()


def decode_request(data: bytes) -> tuple[bytes, bytes]:
    """(public key, nonce) of a quote request, or ValueError for anything malformed or oversized."""
    try:
        body = json.loads(data)
        public_key, nonce = bytes.fromhex(body["public_key"]), bytes.fromhex(body["nonce"])
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed quote request: {exc}") from None
    if len(public_key) != PUBLIC_KEY_BYTES or not 0 < len(nonce) <= MAX_NONCE_BYTES:
        raise ValueError(f"quote request with a {len(public_key)}-byte key and a {len(nonce)}-byte nonce")
    return public_key, nonce


@dataclass
class PipeQuoter:
    """The enclave's end of its private pipe to the quoting authority."""

    conn: Connection = field(repr=False)
    timeout_s: float = QUOTE_TIMEOUT_S
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"conn": self.conn, "timeout_s": self.timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.conn, self.timeout_s, self._lock = state["conn"], state["timeout_s"], threading.Lock()

    def quote(self, public_key: bytes, nonce: bytes) -> Quote:
        with self._lock:
            try:
                self.conn.send_bytes(encode_request(public_key, nonce))
                if not self.conn.poll(self.timeout_s):
                    raise AttestationError(f"the quoting authority did not answer within {self.timeout_s:g} s")
                answer = json.loads(self.conn.recv_bytes())
            except (EOFError, OSError) as exc:
                raise AttestationError(f"the quoting authority is gone: {exc}") from None
        if "error" in answer:
            raise AttestationError(f"the quoting authority refused: {answer['error']}")
        return Quote.from_dict(answer)


@dataclass(frozen=True)
class EnclavePlatform:
    """What a launched enclave knows of its platform; it holds no key that can sign a quote."""

    backend: str
    measurement: bytes
    signer: bytes
    quoter: Quoter = field(repr=False)
    svn: int = 0
    debug: bool = False

    def quote(self, public_key: bytes, nonce: bytes) -> Quote:
        """A quote of this enclave's measurement, binding `public_key` to a verifier's `nonce`."""
        return self.quoter.quote(public_key, nonce)
