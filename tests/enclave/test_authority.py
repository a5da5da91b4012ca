"""The mock quoting authority process: it measures what it launches, quotes only that, and the host's
control line can launch and signal enclaves but never obtain a quote."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave.attestation import MockQuoteChecker, Quote
from siegecraft.enclave.authority import AuthorityClient
from siegecraft.enclave.channel import public_bytes
from siegecraft.enclave.launcher import LaunchRequest, PlatformError, RoleHandle
from siegecraft.enclave.measurement import SECURITY_VERSION, measure
from siegecraft.enclave.roles.admin import OWNER_HELLO_DOMAIN
from siegecraft.enclave.wire import PLAINTEXT_SEQ, Envelope, pack, unpack

OWNER_KEY = Ed25519PrivateKey.generate()
ALTERED = ("siegecraft.enclave.synthetic_workload",)


def admin_config(role: str) -> dict[str, Any]:
    verify_key = OWNER_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return {"role": role, "owner_verify_key": verify_key, "on_dropout": "remask", "round_timeout_s": 10.0,
            "modulus_bits": 32, "attestation": {"backend": "mock", "min_svn": 0, "allow_debug": True}}


@pytest.fixture(scope="module")
def authority() -> Iterator[AuthorityClient]:
    client = AuthorityClient(mp.get_context("spawn"), [])
    try:
        client.wait_ready(60.0)
        yield client
    finally:
        client.close()


def admin_quote(relay_end: Connection, role: str) -> tuple[Quote, bytes]:
    """Play the model owner towards a freshly launched admin: its first act is to quote our nonce."""
    key, nonce = public_bytes(X25519PrivateKey.generate()), os.urandom(32)
    signature = OWNER_KEY.sign(OWNER_HELLO_DOMAIN + key + nonce)
    hello = {"public_key": key.hex(), "nonce": nonce.hex(), "signature": signature.hex()}
    relay_end.send_bytes(Envelope("OWNER_HELLO", "owner", role, PLAINTEXT_SEQ, pack(hello)).to_bytes())
    assert relay_end.poll(60.0), "the admin did not answer"
    env = Envelope.from_bytes(relay_end.recv_bytes())
    meta, _ = unpack(env.body)
    assert (env.kind, env.dst) == ("ADMIN_EVIDENCE", "owner")
    return Quote.from_dict(meta["quote"]), nonce


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def stop(handle: RoleHandle) -> None:
    handle.kill()
    handle.join(10.0)
    assert not handle.is_alive() and handle.exitcode == -signal.SIGKILL


@pytest.mark.parametrize("extra,debug", [((), False), (ALTERED, True)])
def test_the_authority_quotes_exactly_what_it_measured_at_launch(authority: AuthorityClient,
                                                                 extra: tuple[str, ...], debug: bool) -> None:
    role = f"admin-{len(extra)}"
    config = admin_config(role)
    handle, relay_end = authority.launch(LaunchRequest("admin", role, config, {"start_timeout_s": 30.0},
                                                       extra, debug))
    try:
        quote, nonce = admin_quote(relay_end, role)
        assert quote.measurement == measure("admin", config, extra)
        assert (quote.measurement == measure("admin", config)) == (not extra)  # altered code: another value
        assert quote.nonce == nonce and quote.signer == authority.signer
        assert (quote.svn, quote.debug, quote.backend) == (SECURITY_VERSION, debug, "mock")
        MockQuoteChecker().check(quote)
        assert parent_pid(handle.pid) == authority.pid != os.getpid()  # the enclave is not the host's child
    finally:
        stop(handle)
        relay_end.close()


def test_the_control_line_launches_and_signals_but_never_quotes(authority: AuthorityClient) -> None:
    with pytest.raises(PlatformError, match="unknown operation 'quote'"):
        authority._request("quote", 10.0, measurement="00" * 32, public_key="00" * 32, nonce="00" * 32)
    with pytest.raises(PlatformError, match="unknown role kind 'admin2'"):
        authority.launch(LaunchRequest("admin2", "x", {"role": "x"}, {}))
    with pytest.raises(PlatformError, match="launch of 'te-0' with a configuration for 'admin'"):
        authority.launch(LaunchRequest("admin", "te-0", admin_config("admin"), {}))  # a copy under another name
    with pytest.raises(PlatformError, match="no enclave 'nobody'"):
        authority.signal("nobody", signal.SIGKILL)
    handle, relay_end = authority.launch(LaunchRequest("admin", "admin-s", admin_config("admin-s"),
                                                       {"start_timeout_s": 30.0}))
    try:
        with pytest.raises(PlatformError, match="already launched"):
            authority.launch(LaunchRequest("admin", "admin-s", admin_config("admin-s"), {}))
        assert handle.send_signal(signal.SIGSTOP) and handle.is_alive()
        assert handle.send_signal(signal.SIGCONT)
        assert authority.wait(["admin-s"], 0.0) == ["admin-s"]
    finally:
        stop(handle)
        relay_end.close()
    assert not handle.send_signal(signal.SIGKILL)  # nothing left to signal


def test_closing_the_authority_stops_its_enclaves() -> None:
    client = AuthorityClient(mp.get_context("spawn"), [])
    client.wait_ready(60.0)
    handle, relay_end = client.launch(LaunchRequest("admin", "admin", admin_config("admin"),
                                                    {"start_timeout_s": 30.0}))
    relay_end.close()
    authority_pid = client.pid
    client.close()
    client.close()  # twice is fine
    assert not Path(f"/proc/{authority_pid}").exists()
    assert not Path(f"/proc/{handle.pid}").exists()
    assert not handle.is_alive() and handle.exitcode is None  # the authority that knew it is gone
    with pytest.raises(PlatformError, match="gone"):
        client.launch(LaunchRequest("admin", "admin-2", admin_config("admin-2"), {}))
