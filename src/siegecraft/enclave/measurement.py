"""Measurements: SHA-256 over a role's code and its configuration, like SGX's MRENCLAVE.

SIMULATION: the quoting authority (authority.py, the stand-in for the CPU) computes the measurement
from the source files of the modules a role runs and the canonical JSON of its configuration when it
launches the role, and quotes only that value for it. Verifiers (the model owner, the data owners)
compute the value they expect with the same function. Any change to the code or to the measured
configuration (its tree position, the model owner's and its data owner's keys, the verifier policy,
fault-injection hooks) changes the measurement. Data is not measured: it is provisioned by its data
owner after attestation (data_owner.py).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import struct
from collections.abc import Mapping
from typing import Any

from siegecraft.enclave.wire import canonical_json

#: security version (SVN) of this code base's enclaves: the platform reports it in every quote and
#: verifiers refuse anything below their policy's minimum; raise it with every security fix
SECURITY_VERSION = 1

_COMMON = (
    "siegecraft.enclave.errors", "siegecraft.enclave.wire", "siegecraft.enclave.channel",
    "siegecraft.enclave.attestation", "siegecraft.enclave.quoting", "siegecraft.enclave.transport",
    "siegecraft.enclave.roles.base", "siegecraft.enclave.roles.process", "siegecraft.enclave.shm",
)
ROLE_MODULES: dict[str, tuple[str, ...]] = {
    "admin": (*_COMMON, "siegecraft.enclave.masks", "siegecraft.enclave.tree", "siegecraft.enclave.provisioning",
              "siegecraft.enclave.roles.admin"),
    "training": (*_COMMON, "siegecraft.enclave.codec", "siegecraft.enclave.masks", "siegecraft.enclave.bundle",
                 "siegecraft.enclave.broadcast", "siegecraft.enclave.provisioning",
                 "siegecraft.enclave.roles.training"),
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


def measure(kind: str, config: Mapping[str, Any], extra_modules: tuple[str, ...] = ()) -> bytes:
    """Measurement of a role of `kind` ("admin", "training", "aggregator") launched with `config`.

    `extra_modules` is code loaded into the enclave beyond its role's own (the test hook for altered
    code): it is measured like the rest, so such an enclave never has the measurement of honest code."""
    try:
        modules = ROLE_MODULES[kind]
    except KeyError:
        raise ValueError(f"unknown role kind {kind!r}; known: {', '.join(sorted(ROLE_MODULES))}") from None
    h = hashlib.sha256(b"citadel/measurement/v1\0")
    h.update(kind.encode() + b"\0")
    h.update(code_digest((*modules, *extra_modules)))
    h.update(canonical_json(dict(config)))
    return h.digest()
