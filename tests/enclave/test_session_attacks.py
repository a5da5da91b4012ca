"""A hostile host against a live deployment: wrong code, swapped keys, tampered and replayed messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from siegecraft.enclave import AttestationError, CitadelSession, RoundAbortedError
from siegecraft.enclave.channel import public_bytes
from siegecraft.enclave.measurement import measure
from siegecraft.enclave.wire import Envelope

from .synthetic import config, global_weights, mean_error_bound, plaintext_mean, read_audit, swap_public_key
from .transports import ray_instance, transport  # noqa: F401 - fixtures: every test runs over shm, tcp and ray


def test_enclave_with_altered_code_gets_no_keys(transport: str) -> None:  # noqa: F811
    """The host loads extra code into te-1: the platform measures what it loads, so te-1's quote carries
    a measurement nobody allow-listed (the host cannot choose the measurement a quote says)."""
    cfg = config(2, code_overrides={"te-1": ["siegecraft.enclave.synthetic_workload"]}, start_timeout_s=20.0,
                 transport=transport)
    session = CitadelSession(cfg)
    with pytest.raises(AttestationError, match="te-1.*not in the allow-list"):
        session.start()
    assert not session.processes  # everything was stopped
    honest = session.measurements["te-1"]
    assert measure("training", session.role_configs()["te-1"][1]) == honest
    assert measure("training", session.role_configs()["te-1"][1], ("siegecraft.enclave.synthetic_workload",)) != honest


def test_swapped_key_in_the_hello_is_caught_by_key_binding(transport: str) -> None:  # noqa: F811
    swap_key = swap_public_key("HELLO", "te-0", public_bytes(X25519PrivateKey.generate()))
    session = CitadelSession(config(2, start_timeout_s=20.0, transport=transport), tamper=swap_key)
    with pytest.raises(AttestationError, match="key binding failed for 'te-0'"):
        session.start()


def test_replayed_messages_are_dropped_and_tampering_aborts_the_round(tmp_path: Path, transport: str) -> None:  # noqa: F811
    """Rounds 1-2: the host replays messages (dropped, rounds stay correct); round 3: it flips one bit."""
    replayed: list[str] = []
    tampered: list[str] = []

    def hostile(env: Envelope, data: bytes) -> list[bytes]:
        if env.kind in ("MASKED", "ROUND_START", "MASK") and env.src in ("te-0", "owner", "admin") \
                and env.dst in ("te-1", "agg-1-0") and env.kind not in replayed:
            replayed.append(env.kind)
            return [data, data]
        if env.kind == "PARTIAL" and env.dst == "root" and attack_round[0] == 3 and not tampered:
            tampered.append(env.src)
            raw = bytearray(data)
            raw[-20] ^= 0x01
            return [bytes(raw)]
        return [data]

    attack_round = [0]
    cfg = config(3, audit_dir=str(tmp_path), round_timeout_s=5.0, transport=transport)
    with CitadelSession(cfg, tamper=hostile) as s:
        for rnd in (1, 2):
            attack_round[0] = rnd
            result = s.run_round(rnd, global_weights(rnd), [0, 1, 2])
            expected, count = plaintext_mean(cfg, [0, 1, 2], rnd, global_weights(rnd))
            assert result.num_samples == count
            assert np.abs(result.mean - expected).max() <= mean_error_bound(cfg.codec, 3)
        attack_round[0] = 3
        with pytest.raises(RoundAbortedError, match="authentication failed"):
            s.run_round(3, global_weights(3), [0, 1, 2])
    assert sorted(replayed) == ["MASK", "MASKED", "ROUND_START"]
    assert tampered
    rejections = [r for r in read_audit(tmp_path) if r["event"] == "rejected"]
    replays = [r for r in read_audit(tmp_path) if r["event"] == "dropped_replay"]
    assert sorted(r["kind"] for r in replays) == ["MASK", "MASKED", "ROUND_START"]
    assert len(rejections) == 1 and "authentication failed" in rejections[0]["error"]
    assert sum("authentication failed" in r["error"] for r in rejections) == 1
