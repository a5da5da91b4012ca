"""The model owner's code bundle: what to train and how, signed by the model owner.

The bundle names a trainer factory ("package.module:function") and its parameters (model name and
options, training configuration, seed). It is signed with the model owner's Ed25519 key, bound to
one recipient enclave, and travels only inside that enclave's attested channel, so the host sees
neither the code reference nor the model. SIMULATION: the factory is imported from the installed
package; a real deployment ships the code itself in the bundle and measures it before running it.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from siegecraft.enclave.errors import BundleError
from siegecraft.enclave.wire import canonical_json

_DOMAIN = b"citadel/bundle/v1\0"


class Trainer(Protocol):
    """What a bundle's factory returns: local training on one data owner's data."""

    num_samples: int

    def update(self, rnd: int, global_weights: np.ndarray) -> np.ndarray:
        """The local model minus `global_weights` after this round's local training (float array)."""
        ...


@dataclass(frozen=True)
class CodeBundle:
    """A trainer factory reference and its parameters (JSON-able)."""

    entrypoint: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return canonical_json({"entrypoint": self.entrypoint, "params": self.params})


def _message(bundle_bytes: bytes, recipient: str) -> bytes:
    return _DOMAIN + recipient.encode() + b"\0" + bundle_bytes


def sign_bundle(bundle: CodeBundle, key: Ed25519PrivateKey, recipient: str) -> dict[str, str]:
    """The signed form sent to `recipient`: bundle bytes and the model owner's signature."""
    data = bundle.to_bytes()
    return {"bundle": data.hex(), "signature": key.sign(_message(data, recipient)).hex()}


def verify_bundle(signed: dict[str, Any], verify_key: bytes, recipient: str) -> CodeBundle:
    """Check the model owner's signature for this recipient and decode the bundle, or raise BundleError."""
    try:
        data, signature = bytes.fromhex(signed["bundle"]), bytes.fromhex(signed["signature"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"malformed signed bundle: {exc}") from None
    try:
        Ed25519PublicKey.from_public_bytes(verify_key).verify(signature, _message(data, recipient))
    except (InvalidSignature, ValueError):
        raise BundleError(f"bundle signature is not the model owner's (or the bundle was meant for another "
                          f"enclave than {recipient!r})") from None
    body = json.loads(data)
    return CodeBundle(str(body["entrypoint"]), dict(body["params"]))


def load_trainer(bundle: CodeBundle, data: dict[str, Any], client_id: int) -> Trainer:
    """Resolve the bundle's factory and build the trainer for this data owner's data."""
    module_name, _, attr = bundle.entrypoint.partition(":")
    if not module_name or not attr:
        raise BundleError(f"entrypoint must look like 'package.module:function', got {bundle.entrypoint!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BundleError(f"cannot load trainer factory {bundle.entrypoint!r}: {exc}") from None
    return factory(params=bundle.params, data=data, client_id=client_id)
