"""Citadel: attested enclave roles, zero-sum masking and hierarchical aggregation (SIMULATION).

There is no SGX here: each role is its own OS process, launched and quoted by a mock authority process
behind `AttestationBackend` (the launcher holds only its public key), data owners provision their data
over attested channels, and only encrypted messages cross between roles through an untrusted relay.
The protocol (attestation policy, channels, fixed-point codec, zero-sum masks, tree, dropouts) is
real. See docs/citadel.md.

The torch-facing deployment (`CitadelSpec`, `CitadelRuntime`, `RoundResult`) is in
`siegecraft.enclave.deployment`, and the federated engine's `zero_sum` aggregation in
`siegecraft.enclave.federated_bridge`; neither is imported here, so role processes that only add masked
integers never import torch.
"""

from __future__ import annotations

from siegecraft.enclave.attestation import Quote, QuoteChecker, QuoteVerifier, VerifierPolicy
from siegecraft.enclave.backends import get_backend
from siegecraft.enclave.bundle import CodeBundle, sign_bundle, verify_bundle
from siegecraft.enclave.channel import PeerIdentity, SecureChannel
from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.errors import (
    AttestationError,
    BundleError,
    ChannelError,
    CitadelError,
    CodecError,
    MaskReuseError,
    ReplayError,
    RoundAbortedError,
    TamperedMessageError,
)
from siegecraft.enclave.launcher import AttestationBackend, EnclaveLauncher, LaunchRequest, RoleHandle
from siegecraft.enclave.masks import MaskDomain, MaskGrant, MaskLedger, ZeroSumMaskIssuer, expand_mask
from siegecraft.enclave.measurement import measure
from siegecraft.enclave.provisioning import SampleDeclaration
from siegecraft.enclave.quoting import EnclavePlatform
from siegecraft.enclave.session import AggregateResult, CitadelSession, PartySpec, SessionConfig
from siegecraft.enclave.tree import AggregationTree

__all__ = [
    "AggregateResult",
    "AggregationTree",
    "AttestationBackend",
    "AttestationError",
    "BundleError",
    "ChannelError",
    "CitadelError",
    "CitadelSession",
    "CodeBundle",
    "CodecError",
    "EnclaveLauncher",
    "EnclavePlatform",
    "FixedPointCodec",
    "LaunchRequest",
    "MaskDomain",
    "MaskGrant",
    "MaskLedger",
    "MaskReuseError",
    "PartySpec",
    "PeerIdentity",
    "Quote",
    "QuoteChecker",
    "QuoteVerifier",
    "ReplayError",
    "RoleHandle",
    "RoundAbortedError",
    "SampleDeclaration",
    "SecureChannel",
    "SessionConfig",
    "TamperedMessageError",
    "VerifierPolicy",
    "ZeroSumMaskIssuer",
    "expand_mask",
    "get_backend",
    "measure",
    "sign_bundle",
    "verify_bundle",
]

