"""Registry of attestation backends (`[secure] attestation = "<name>"`).

Only "mock" is built in (authority.py: a simulation with no hardware protection). A real backend, e.g.
SGX DCAP through Gramine, implements `launcher.AttestationBackend` (its platform side starts enclaves
through the loader and reads quotes from /dev/attestation; its verifier side checks the PCK chain up to
Intel's root) and registers its quote checker in `attestation.QUOTE_CHECKERS`.
"""

from __future__ import annotations

from siegecraft.core.registry import Registry
from siegecraft.enclave.authority import MockBackend
from siegecraft.enclave.launcher import AttestationBackend

ATTESTATION_BACKENDS: Registry[type[AttestationBackend]] = Registry("attestation backend")
ATTESTATION_BACKENDS.register(MockBackend.name)(MockBackend)


def backend_names() -> tuple[str, ...]:
    return tuple(ATTESTATION_BACKENDS.names())


def get_backend(name: str) -> AttestationBackend:
    """The backend called `name`; ValueError naming the allowed names otherwise."""
    if not isinstance(name, str) or name not in ATTESTATION_BACKENDS:
        raise ValueError(f"unknown attestation backend {name!r}; allowed: "
                         f"{', '.join(repr(n) for n in backend_names())}")
    return ATTESTATION_BACKENDS.get(name)()
