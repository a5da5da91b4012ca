"""The verifier's policy: every way a quote can be wrong is refused before any key is released."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from siegecraft.enclave.attestation import (
    MockQuoteChecker,
    Quote,
    QuoteVerifier,
    VerifierPolicy,
    quote_checker,
)
from siegecraft.enclave.authority import MockQuoteSigner
from siegecraft.enclave.errors import AttestationError
from siegecraft.enclave.measurement import measure
from siegecraft.enclave.quoting import decode_request, encode_request

GOOD = measure("training", {"role": "te-0", "client_id": 0})
KEY = bytes(range(32))
SVN = 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def signer() -> MockQuoteSigner:
    return MockQuoteSigner()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_verifier(signer: MockQuoteSigner, clock: FakeClock, **policy: object) -> QuoteVerifier:
    rules = VerifierPolicy.build({"te-0": GOOD, "te-1": GOOD}, signer.public_key, min_svn=SVN, **policy)  # type: ignore[arg-type]
    return QuoteVerifier(MockQuoteChecker(), rules, nonce_ttl_s=30, clock=clock)


@pytest.fixture
def verifier(signer: MockQuoteSigner, clock: FakeClock) -> QuoteVerifier:
    return make_verifier(signer, clock)


def quote(signer: MockQuoteSigner, nonce: bytes, measurement: bytes = GOOD, *, svn: int = SVN,
          debug: bool = False, key: bytes = KEY) -> Quote:
    return signer.sign(measurement, key, nonce, svn=svn, debug=debug)


def test_valid_quote_is_accepted(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    verifier.verify("te-0", quote(signer, verifier.challenge("te-0")), KEY)
    newer = quote(signer, verifier.challenge("te-0"), svn=SVN + 1)  # a later security version is fine
    verifier.verify("te-0", newer, KEY)


def test_quote_from_another_signer_is_refused(verifier: QuoteVerifier) -> None:
    """A host that runs its own "authority" signs quotes under its own key: wrong signer."""
    forged = quote(MockQuoteSigner(), verifier.challenge("te-0"))
    with pytest.raises(AttestationError, match="wrong signer"):
        verifier.verify("te-0", forged, KEY)


def test_forged_signature_under_the_trusted_signers_name_is_refused(signer: MockQuoteSigner,
                                                                    verifier: QuoteVerifier) -> None:
    """The host names the real signer but cannot sign for it."""
    own = quote(MockQuoteSigner(), verifier.challenge("te-0"))
    claimed = dataclasses.replace(own, signer=signer.public_key)
    with pytest.raises(AttestationError, match="signature is invalid"):
        verifier.verify("te-0", claimed, KEY)


@pytest.mark.parametrize("field,value", [("measurement", GOOD), ("svn", SVN + 5), ("debug", False),
                                         ("public_key", bytes(32)), ("nonce", None), ("signature", bytes(64))])
def test_altered_quote_field_breaks_the_signature(signer: MockQuoteSigner, verifier: QuoteVerifier,
                                                  field: str, value: object) -> None:
    """A real quote of a debug enclave with other code, svn 1 and another key, relabelled field by field."""
    old_nonce, nonce = verifier.challenge("te-0"), verifier.challenge("te-0")
    real = quote(signer, old_nonce, measure("training", {"role": "te-0", "evil": True}),
                 svn=1, debug=True, key=bytes(range(1, 33)))
    relabelled = dataclasses.replace(real, **{field: nonce if field == "nonce" else value})
    with pytest.raises(AttestationError, match="signature is invalid"):
        verifier.verify("te-0", relabelled, relabelled.public_key)


def test_security_version_below_the_minimum_is_refused(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    with pytest.raises(AttestationError, match="svn too low.*security version 2.*at least 3"):
        verifier.verify("te-0", quote(signer, verifier.challenge("te-0"), svn=SVN - 1), KEY)


def test_debug_enclave_is_refused_unless_the_policy_allows_it(signer: MockQuoteSigner, clock: FakeClock,
                                                              verifier: QuoteVerifier) -> None:
    with pytest.raises(AttestationError, match="debug enclave"):
        verifier.verify("te-0", quote(signer, verifier.challenge("te-0"), debug=True), KEY)
    lenient = make_verifier(signer, clock, allow_debug=True)
    lenient.verify("te-0", quote(signer, lenient.challenge("te-0"), debug=True), KEY)


def test_measurement_not_accepted_is_refused(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    other = measure("training", {"role": "te-0", "client_id": 0, "faults": {"x": 1}})
    with pytest.raises(AttestationError, match="not in the allow-list"):
        verifier.verify("te-0", quote(signer, verifier.challenge("te-0"), other), KEY)


def test_role_without_allow_listed_measurement_is_refused(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    with pytest.raises(AttestationError, match="no measurement is allow-listed"):
        verifier.verify("te-9", quote(signer, verifier.challenge("te-9")), KEY)


def test_quote_of_another_backend_is_refused(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    other = dataclasses.replace(quote(signer, verifier.challenge("te-0")), backend="sgx-dcap")
    with pytest.raises(AttestationError, match="backend 'sgx-dcap'"):
        verifier.verify("te-0", other, KEY)


def test_stale_nonce_is_refused(signer: MockQuoteSigner, verifier: QuoteVerifier, clock: FakeClock) -> None:
    nonce = verifier.challenge("te-0")
    clock.now += 31
    with pytest.raises(AttestationError, match="stale nonce"):
        verifier.verify("te-0", quote(signer, nonce), KEY)


def test_unknown_nonce_is_refused(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    with pytest.raises(AttestationError, match="stale or unknown nonce"):
        verifier.verify("te-0", quote(signer, b"\x00" * 32), KEY)


def test_replayed_quote_is_refused(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    q = quote(signer, verifier.challenge("te-0"))
    verifier.verify("te-0", q, KEY)
    with pytest.raises(AttestationError, match="already used"):
        verifier.verify("te-0", q, KEY)


def test_failed_check_consumes_the_nonce(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    nonce = verifier.challenge("te-0")
    with pytest.raises(AttestationError, match="svn too low"):
        verifier.verify("te-0", quote(signer, nonce, svn=0), KEY)
    with pytest.raises(AttestationError, match="already used"):
        verifier.verify("te-0", quote(signer, nonce), KEY)


def test_nonce_issued_to_another_role_is_refused(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    with pytest.raises(AttestationError, match="issued to 'te-1'"):
        verifier.verify("te-0", quote(signer, verifier.challenge("te-1")), KEY)


def test_swapped_key_is_refused(signer: MockQuoteSigner, verifier: QuoteVerifier) -> None:
    q = quote(signer, verifier.challenge("te-0"))
    with pytest.raises(AttestationError, match="key binding failed"):
        verifier.verify("te-0", q, bytes(32))  # the host offers its own key for the channel


def test_quote_survives_serialisation_and_malformed_ones_are_refused(signer: MockQuoteSigner) -> None:
    q = quote(signer, b"nonce", debug=True)
    assert Quote.from_dict(q.to_dict()) == q
    for broken in ({"measurement": "zz"}, {**q.to_dict(), "svn": "3"}, {**q.to_dict(), "debug": 1},
                   {**q.to_dict(), "signer": "not hex"}):
        with pytest.raises(AttestationError, match="malformed"):
            Quote.from_dict(broken)


def test_the_signing_key_cannot_leave_the_authority(signer: MockQuoteSigner) -> None:
    with pytest.raises(TypeError, match="never leaves"):
        pickle.dumps(signer)
    assert repr(signer) == f"MockQuoteSigner(public_key={signer.public_key.hex()[:12]}...)"


def test_quote_requests_carry_only_a_key_and_a_nonce() -> None:
    assert decode_request(encode_request(KEY, b"n" * 32)) == (KEY, b"n" * 32)
    for bad in (b"{}", b"not json", encode_request(KEY[:31], b"n"), encode_request(KEY, b"n" * 65),
                encode_request(KEY, b"")):
        with pytest.raises(ValueError):
            decode_request(bad)


def test_unknown_backend_has_no_checker() -> None:
    assert isinstance(quote_checker("mock"), MockQuoteChecker)
    with pytest.raises(AttestationError, match="no quote checker for backend 'sgx'"):
        quote_checker("sgx")


def test_measurement_depends_on_code_configuration_and_loaded_extras() -> None:
    cfg = {"role": "te-0", "client_id": 0}
    assert measure("training", cfg) == GOOD
    assert measure("training", {**cfg, "client_id": 1}) != GOOD
    assert measure("aggregator", cfg) != GOOD  # different code
    assert measure("training", cfg, ("siegecraft.enclave.synthetic_workload",)) != GOOD  # altered code loaded
    assert measure("training", cfg, ("siegecraft.enclave.codec",)) != GOOD  # even code it already has, again
    with pytest.raises(ValueError, match="unknown role kind"):
        measure("nope", cfg)
