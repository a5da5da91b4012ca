"""Live deployments: the trust root is not the host's, data reaches only attested enclaves, counts come
from the provisioned data, and every mock run says it is a simulation.

"The host" is everything the launching process holds: the session, its relay (with a tamper hook),
its model owner and everything reachable from them.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import types
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave import AttestationError, CitadelSession, SessionConfig
from siegecraft.enclave.attestation import Quote
from siegecraft.enclave.authority import MockBackend, MockQuoteSigner
from siegecraft.enclave.channel import public_bytes
from siegecraft.enclave.measurement import SECURITY_VERSION
from siegecraft.enclave.relay import TranscriptEntry
from siegecraft.enclave.wire import Envelope, pack, unpack

from .synthetic import config, global_weights, mean_error_bound, plaintext_mean, swap_public_key

MARKER = "provisioned-only-9917"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class Deployment:
    cfg: SessionConfig
    session: CitadelSession
    transcript: list[TranscriptEntry]
    stderr: str
    logged: list[str]
    result: Any


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    cfg = config(3, record_transcript=True)
    cfg.parties = [replace(p, data={**p.data, "tag": f"{MARKER}-{p.client_id}"}) for p in cfg.parties]
    stderr, handler = io.StringIO(), Capture()
    logger = logging.getLogger("siegecraft.enclave")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    session = CitadelSession(cfg)
    try:
        with contextlib.redirect_stderr(stderr):
            session.start()
        logger.setLevel(level)
        result = session.run_round(1, global_weights(1), [0, 1, 2])
        yield Deployment(cfg, session, session.relay.transcript, stderr.getvalue(), handler.messages, result)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        session.close()


def reachable(root: object) -> Iterator[object]:
    """Every object reachable from `root` through instance attributes and containers (not through module
    globals or code: that would be the whole interpreter, the test's own keys included)."""
    opaque = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType, str, bytes)
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, opaque):
            continue
        if isinstance(obj, types.MethodType):
            stack.append(obj.__self__)
            continue
        stack.extend(gc.get_referents(obj))


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_the_host_holds_no_platform_or_data_owner_private_key(deployment: Deployment) -> None:
    session = deployment.session
    objects = list(reachable(session))
    private = [o for o in objects if isinstance(o, Ed25519PrivateKey)]
    assert session.signer is not None and len(session.data_owner_keys) == 3
    # the walk does reach keys: the model owner's own signing key lives with the host, as it should
    assert [raw(k) for k in private] == [raw(session.owner_key)]
    assert not [o for o in objects if isinstance(o, MockQuoteSigner)]
    assert session.platform is not None and session.platform.pid != os.getpid()
    assert "signer" in repr(session.platform) and "private" not in repr(session.platform).lower()


def test_enclaves_are_children_of_the_platform_not_of_the_host(deployment: Deployment) -> None:
    session = deployment.session
    assert session.platform is not None
    for role, handle in session.processes.items():
        stat = Path(f"/proc/{handle.pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[1]) == session.platform.pid, role


def test_measured_configurations_carry_keys_but_no_data(deployment: Deployment) -> None:
    session = deployment.session
    for role, (kind, conf) in session.role_configs().items():
        assert "data" not in conf and MARKER not in json.dumps(conf), role
        if kind == "training":
            assert conf["data_owner_key"] == session.data_owner_keys[conf["client_id"]].hex()


def test_data_specs_cross_the_relay_only_as_ciphertext(deployment: Deployment) -> None:
    data_messages = [e for e in deployment.transcript if e.kind == "DATA"]
    assert len(data_messages) == 3 and all(e.seq >= 0 and e.src.startswith("do-") for e in data_messages)
    for entry in deployment.transcript:
        assert MARKER.encode() not in entry.data, f"{entry.kind} {entry.src}->{entry.dst}"


def test_sample_counts_come_from_the_provisioned_data(deployment: Deployment) -> None:
    cfg, result = deployment.cfg, deployment.result
    assert deployment.session.num_samples == {p.client_id: p.data["num_samples"] for p in cfg.parties}
    expected, count = plaintext_mean(cfg, [0, 1, 2], 1, global_weights(1))
    assert result.num_samples == count
    assert np.abs(result.mean - expected).max() <= mean_error_bound(cfg.codec, 3)


def test_a_mock_session_says_once_that_it_is_a_simulation(deployment: Deployment) -> None:
    lines = [line for line in deployment.stderr.splitlines() if "SIMULATION" in line]
    assert lines == [MockBackend.notice] and "no hardware protection" in lines[0]
    assert deployment.logged.count(MockBackend.notice) == 1


def test_a_host_forged_quote_over_an_honest_measurement_is_refused(capsys: pytest.CaptureFixture[str],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The host answers the admin's challenge for te-0 itself: its own key, the admin's nonce, te-0's honest
    measurement and the platform's signer named in the quote, signed with a key the host drew."""
    host_x25519, host_signing = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    admin_nonce: list[bytes] = []
    session: CitadelSession

    def forge(env: Envelope, data: bytes) -> list[bytes]:
        if env.src == "te-0" and env.kind in ("HELLO", "EVIDENCE") or env.kind == "CHALLENGE" and env.dst == "te-0":
            meta, _ = unpack(Envelope.from_bytes(data).body)
            if env.kind == "HELLO":
                meta["public_key"] = public_bytes(host_x25519).hex()
            elif env.kind == "CHALLENGE":
                admin_nonce.append(bytes.fromhex(meta["nonce"]))
            else:
                assert session.signer is not None
                unsigned = Quote(session.measurements["te-0"], public_bytes(host_x25519), admin_nonce[0],
                                 SECURITY_VERSION, False, session.signer, b"")
                meta["quote"] = replace(unsigned, signature=host_signing.sign(unsigned.signed_bytes())).to_dict()
            return [Envelope(env.kind, env.src, env.dst, env.seq, pack(meta)).to_bytes()]
        return [data]

    caplog.set_level(logging.INFO, logger="siegecraft.enclave")
    session = CitadelSession(config(2, start_timeout_s=20.0), tamper=forge)
    with pytest.raises(AttestationError, match="te-0.*signature is invalid"):
        session.start()
    assert admin_nonce and not session.processes
    assert capsys.readouterr().err.count("SIMULATION") == 1  # also when the start fails
    assert [r.getMessage() for r in caplog.records].count(MockBackend.notice) == 1


def test_a_data_owner_declaring_more_samples_than_it_holds_refuses_the_deployment() -> None:
    cfg = config(2, start_timeout_s=20.0)
    cfg.parties[1] = replace(cfg.parties[1], num_samples=10**9)
    session = CitadelSession(cfg)
    with pytest.raises(AttestationError, match="te-1: data owner 1 declared 1000000000 samples, but the data "
                                               "provisioned to te-1 holds 27"):
        session.start()
    assert not session.processes


def test_a_data_owner_refuses_evidence_the_host_altered() -> None:
    """The host swaps the key in te-1's evidence for its own: the data owner's key binding fails, it sends
    no data, and the deployment fails naming the owner and the reason."""
    swap = swap_public_key("PROVISION_EVIDENCE", "te-1", public_bytes(X25519PrivateKey.generate()))
    session = CitadelSession(config(2, start_timeout_s=20.0, record_transcript=True), tamper=swap)
    with pytest.raises(AttestationError, match="refused the deployment: te-1: provisioning by do-1 failed: do-1 "
                                               "refused this enclave's evidence: key binding failed for 'te-1'"):
        session.start()
    assert not [e for e in session.relay.transcript if e.kind == "DATA" and e.src == "do-1"]


def test_debug_enclaves_are_refused_by_default() -> None:
    session = CitadelSession(config(2, start_timeout_s=20.0, debug_enclaves=True))
    with pytest.raises(AttestationError, match="'admin' is a debug enclave"):
        session.start()
    assert not session.processes
