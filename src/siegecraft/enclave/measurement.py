"""Measurements: SHA-256 over a role's code and its configuration, like SGX's MRENCLAVE.

SIMULATION: the launcher computes the measurement from the source files of the modules a role runs
and the canonical JSON of its configuration, then starts the role with a platform that can only
quote that value. Any change to the code or to the measured configuration (its data partition, its
tree position, the model owner's key, fault-injection hooks) changes the measurement.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import struct
from collections.abc import Mapping
from typing import Any

from siegecraft.enclave.wire import canonical_json

_COMMON = (
    "siegecraft.enclave.errors", "siegecraft.enclave.wire", "siegecraft.enclave.channel",
    "siegecraft.enclave.attestation", "siegecraft.enclave.transport", "siegecraft.enclave.roles.base",
    "siegecraft.enclave.roles.process", "siegecraft.enclave.shm",
)
ROLE_MODULES: dict[str, tuple[str, ...]] = {
    "admin": (*_COMMON, "siegecraft.enclave.masks", "siegecraft.enclave.tree", "siegecraft.enclave.roles.admin"),
    "training": (*_COMMON, "siegecraft.enclave.codec", "siegecraft.enclave.masks", "siegecraft.enclave.bundle",
                 "siegecraft.enclave.broadcast", "siegecraft.enclave.roles.training"),
    "aggregator": (*_COMMON, "siegecraft.enclave.codec", "siegecraft.enclave.roles.aggregator"),
}


@functools.cache
def code_digest(modules: tuple[str, ...]) -> bytes:
    """SHA-256 over (name, source bytes) of each module, in the given order."""
    h = hashlib.sha256(b"citadel/code/v1\0")
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"cannot measure module {name!r}: no source file found")
        with open(spec.origin, "rb") as fh:
            source = fh.read()
        for part in (name.encode(), source):
            h.update(struct.pack(">Q", len(part)) + part)
    return h.digest()


def measure(kind: str, config: Mapping[str, Any]) -> bytes:
    """Measurement of a role of `kind` ("admin", "training", "aggregator") launched with `config`."""
    try:
        modules = ROLE_MODULES[kind]
    except KeyError:
        raise ValueError(f"unknown role kind {kind!r}; known: {', '.join(sorted(ROLE_MODULES))}") from None
    h = hashlib.sha256(b"citadel/measurement/v1\0")
    h.update(kind.encode() + b"\0")
    h.update(code_digest(modules))
    h.update(canonical_json(dict(config)))
    return h.digest()
