"""Mock attestation: every way a quote can be wrong is rejected before any key is released."""

from __future__ import annotations

import pickle

import pytest

from siegecraft.enclave.attestation import EnclavePlatform, MockAttestationAuthority, Quote, QuoteVerifier
from siegecraft.enclave.errors import AttestationError
from siegecraft.enclave.measurement import measure

GOOD = measure("training", {"role": "te-0", "data": {"seed": 1}})
KEY = bytes(range(32))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def authority() -> MockAttestationAuthority:
    return MockAttestationAuthority.generate()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(authority: MockAttestationAuthority, clock: FakeClock) -> QuoteVerifier:
    return QuoteVerifier(authority.verifier(), {"te-0": GOOD, "te-1": GOOD}, nonce_ttl_s=30, clock=clock)


def test_valid_quote_is_accepted(authority: MockAttestationAuthority, verifier: QuoteVerifier) -> None:
    nonce = verifier.challenge("te-0")
    verifier.verify("te-0", EnclavePlatform(authority, GOOD).quote(KEY, nonce), KEY)


def test_forged_signature_is_rejected(verifier: QuoteVerifier) -> None:
    nonce = verifier.challenge("te-0")
    forged = MockAttestationAuthority.generate().quote(GOOD, KEY, nonce)  # another "authority"
    with pytest.raises(AttestationError, match="signature is invalid"):
        verifier.verify("te-0", forged, KEY)


def test_altered_quote_field_breaks_the_signature(authority: MockAttestationAuthority,
                                                  verifier: QuoteVerifier) -> None:
    nonce = verifier.challenge("te-0")
    real = authority.quote(measure("training", {"role": "te-0", "evil": True}), KEY, nonce)
    relabelled = Quote(GOOD, real.public_key, real.nonce, real.signature)
    with pytest.raises(AttestationError, match="signature is invalid"):
        verifier.verify("te-0", relabelled, KEY)


def test_wrong_measurement_is_rejected(authority: MockAttestationAuthority, verifier: QuoteVerifier) -> None:
    nonce = verifier.challenge("te-0")
    other = measure("training", {"role": "te-0", "data": {"seed": 2}})
    with pytest.raises(AttestationError, match="not in the allow-list"):
        verifier.verify("te-0", authority.quote(other, KEY, nonce), KEY)


def test_stale_nonce_is_rejected(authority: MockAttestationAuthority, verifier: QuoteVerifier,
                                 clock: FakeClock) -> None:
    nonce = verifier.challenge("te-0")
    clock.now += 31
    with pytest.raises(AttestationError, match="stale nonce"):
        verifier.verify("te-0", authority.quote(GOOD, KEY, nonce), KEY)


def test_unknown_nonce_is_rejected(authority: MockAttestationAuthority, verifier: QuoteVerifier) -> None:
    with pytest.raises(AttestationError, match="stale or unknown nonce"):
        verifier.verify("te-0", authority.quote(GOOD, KEY, b"\x00" * 32), KEY)


def test_replayed_quote_is_rejected(authority: MockAttestationAuthority, verifier: QuoteVerifier) -> None:
    quote = authority.quote(GOOD, KEY, verifier.challenge("te-0"))
    verifier.verify("te-0", quote, KEY)
    with pytest.raises(AttestationError, match="already used"):
        verifier.verify("te-0", quote, KEY)


def test_nonce_issued_to_another_role_is_rejected(authority: MockAttestationAuthority,
                                                  verifier: QuoteVerifier) -> None:
    nonce = verifier.challenge("te-1")
    with pytest.raises(AttestationError, match="issued to 'te-1'"):
        verifier.verify("te-0", authority.quote(GOOD, KEY, nonce), KEY)


def test_swapped_key_is_rejected(authority: MockAttestationAuthority, verifier: QuoteVerifier) -> None:
    nonce = verifier.challenge("te-0")
    quote = authority.quote(GOOD, KEY, nonce)
    with pytest.raises(AttestationError, match="key binding failed"):
        verifier.verify("te-0", quote, bytes(32))  # the host offers its own key for the channel


def test_role_without_allow_listed_measurement_is_rejected(authority: MockAttestationAuthority,
                                                           verifier: QuoteVerifier) -> None:
    nonce = verifier.challenge("te-9")
    with pytest.raises(AttestationError, match="no measurement is allow-listed"):
        verifier.verify("te-9", authority.quote(GOOD, KEY, nonce), KEY)


def test_verify_only_copy_cannot_sign_and_pickles_without_the_key(authority: MockAttestationAuthority) -> None:
    view = authority.verifier()
    with pytest.raises(AttestationError, match="only verify"):
        view.quote(GOOD, KEY, b"n")
    assert pickle.loads(pickle.dumps(view))._private is None
    clone = pickle.loads(pickle.dumps(authority))
    view.check(clone.quote(GOOD, KEY, b"n"))


def test_quote_survives_serialisation(authority: MockAttestationAuthority) -> None:
    quote = authority.quote(GOOD, KEY, b"nonce")
    assert Quote.from_dict(quote.to_dict()) == quote
    with pytest.raises(AttestationError, match="malformed"):
        Quote.from_dict({"measurement": "zz"})


def test_measurement_depends_on_code_and_configuration() -> None:
    cfg = {"role": "te-0", "data": {"seed": 1}}
    assert measure("training", cfg) == GOOD
    assert measure("training", {**cfg, "data": {"seed": 2}}) != GOOD
    assert measure("aggregator", cfg) != GOOD  # different code
    with pytest.raises(ValueError, match="unknown role kind"):
        measure("nope", cfg)
