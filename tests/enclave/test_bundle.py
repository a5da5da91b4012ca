"""Model owner's bundle: only the model owner's signature for this very enclave is accepted."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave.bundle import CodeBundle, load_trainer, sign_bundle, verify_bundle
from siegecraft.enclave.errors import BundleError
from siegecraft.enclave.synthetic_workload import SYNTHETIC_ENTRYPOINT

BUNDLE = CodeBundle(SYNTHETIC_ENTRYPOINT, {"model": "cnn", "train": {"lr": 0.1}})


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_signed_bundle_verifies_and_loads() -> None:
    key = Ed25519PrivateKey.generate()
    bundle = verify_bundle(sign_bundle(BUNDLE, key, "te-0"), raw(key), "te-0")
    assert bundle == BUNDLE
    assert load_trainer(bundle, {"seed": 1, "num_samples": 9}, 0).num_samples == 9


def test_bundle_signed_by_someone_else_is_refused() -> None:
    with pytest.raises(BundleError, match="not the model owner's"):
        verify_bundle(sign_bundle(BUNDLE, Ed25519PrivateKey.generate(), "te-0"),
                      raw(Ed25519PrivateKey.generate()), "te-0")


def test_bundle_for_another_enclave_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(BundleError, match="another enclave"):
        verify_bundle(sign_bundle(BUNDLE, key, "te-1"), raw(key), "te-0")


def test_modified_bundle_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    signed = sign_bundle(BUNDLE, key, "te-0")
    evil = CodeBundle("os:system", BUNDLE.params).to_bytes().hex()
    with pytest.raises(BundleError):
        verify_bundle({**signed, "bundle": evil}, raw(key), "te-0")


@pytest.mark.parametrize("entrypoint", ["no_colon", "siegecraft.enclave.synthetic_workload:missing", "nope.nope:f"])
def test_bad_entrypoints_are_refused(entrypoint: str) -> None:
    with pytest.raises(BundleError):
        load_trainer(CodeBundle(entrypoint), {}, 0)
