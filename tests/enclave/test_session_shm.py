"""A live deployment whose bulk traffic and weights broadcast cross shared memory, against a hostile host
that reads, alters, truncates, replays and forges segments and tickets. Nothing may be left in /dev/shm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from siegecraft.enclave import CitadelSession, RoundAbortedError, shm
from siegecraft.enclave.channel import PeerIdentity, SecureChannel, public_bytes
from siegecraft.enclave.wire import Envelope, frame_header

from .host_segments import overwrite, segment_bytes
from .synthetic import DIM, config, global_weights, mean_error_bound, plaintext_mean, read_audit

pytestmark = pytest.mark.skipif(not shm.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")
ALL = [0, 1, 2, 3]


class Host:
    """A tamper hook with access to the deployment's /dev/shm namespace (set once the session exists)."""

    def __init__(self, attack: Callable[[Host, Envelope, bytes], list[bytes]] | None = None) -> None:
        self.attack = attack
        self.prefix = ""
        self.round = 0
        self.refs: list[tuple[str, str]] = []
        self.saved: dict[str, bytes] = {}
        self.done: list[str] = []
        self.held: list[str] = []  # senders whose message the host is holding back

    def __call__(self, env: Envelope, data: bytes) -> list[bytes]:
        _, ref = frame_header(data)
        if ref is not None:
            self.refs.append((env.kind, ref.segment))
        return self.attack(self, env, data) if self.attack else [data]

    def flip_broadcast_once(self, env: Envelope, rnd: int) -> None:
        """At the first ROUND_START of round `rnd`, flip one byte in the middle of the broadcast ciphertext."""
        if env.kind == "ROUND_START" and self.round == rnd and not self.done:
            name = self.broadcast_segment()
            raw = bytearray(segment_bytes(name))
            raw[len(raw) // 2] ^= 0x01
            overwrite(name, bytes(raw))
            self.done.append(name)

    def broadcast_segment(self) -> str:
        """While ROUND_STARTs are in flight, the only segment of the deployment is the broadcast."""
        live = shm.live(self.prefix)
        assert len(live) == 1, live
        return live[0]


def run(host: Host, rounds: list[int], tmp_path: Path | None = None, **kwargs: Any) -> list[Any]:
    extra = {"audit_dir": str(tmp_path)} if tmp_path is not None else {}
    cfg = config(4, bulk_threshold=1024, round_timeout_s=5.0, **extra, **kwargs)
    session = CitadelSession(cfg, tamper=host)
    host.prefix = session.shm_prefix
    outcomes: list[Any] = []
    with session:
        for rnd in rounds:
            host.round = rnd
            try:
                result = session.run_round(rnd, global_weights(rnd), ALL)
            except RoundAbortedError as exc:
                outcomes.append(exc)
                continue
            expected, count = plaintext_mean(cfg, ALL, rnd, global_weights(rnd))
            assert result.num_samples == count
            assert np.abs(result.mean - expected).max() <= mean_error_bound(cfg.codec, 4)
            outcomes.append(result)
    assert shm.live(session.shm_prefix) == [], "segments left behind after close"
    return outcomes


def test_bulk_traffic_through_shared_memory_is_correct_and_is_ciphertext_only() -> None:
    host = Host()
    cfg = config(4, bulk_threshold=1024, record_transcript=True)
    session = CitadelSession(cfg, tamper=host)
    host.prefix = session.shm_prefix
    with session:
        for rnd in (1, 2):
            result = session.run_round(rnd, global_weights(rnd), ALL)
            expected, count = plaintext_mean(cfg, ALL, rnd, global_weights(rnd))
            assert result.num_samples == count
            assert np.abs(result.mean - expected).max() <= mean_error_bound(cfg.codec, 4)
        transcript = session.relay.transcript
    assert shm.live(session.shm_prefix) == []
    kinds = {kind for kind, _ in host.refs}
    assert {"MASKED", "PARTIAL", "RESULT", "MASK"} <= kinds  # MASK: the last party's correction vector
    # the recorded transcript includes what the host read from the segments: still no plaintext
    needles = [global_weights(r)[100:108].tobytes() for r in (1, 2)]
    bulk = [e for e in transcript if e.kind == "MASKED"]
    assert bulk and all(e.size > cfg.codec.dtype().itemsize * DIM for e in bulk)
    for entry in transcript:
        assert not any(n in entry.data for n in needles), f"weights visible in {entry.kind}"


def test_the_weights_broadcast_in_shared_memory_is_ciphertext() -> None:
    def look(host: Host, env: Envelope, data: bytes) -> list[bytes]:
        if env.kind == "ROUND_START" and env.dst == "te-0":
            host.saved[f"r{host.round}"] = segment_bytes(host.broadcast_segment())
        return [data]

    host = Host(look)
    run(host, [1, 2])
    for rnd in (1, 2):
        seen = host.saved[f"r{rnd}"]
        assert len(seen) > 4 * DIM
        w = global_weights(rnd)
        assert w[100:108].tobytes() not in seen and w[1500:1508].tobytes() not in seen


def test_tampered_broadcast_aborts_the_round(tmp_path: Path) -> None:
    def flip(host: Host, env: Envelope, data: bytes) -> list[bytes]:
        host.flip_broadcast_once(env, rnd=2)
        return [data]

    host = Host(flip)
    first, second, third = run(host, [1, 2, 3], tmp_path)
    assert isinstance(second, RoundAbortedError) and "tag does not match" in second.reason
    assert not isinstance(first, Exception) and not isinstance(third, Exception)  # next round is clean
    assert any(r["event"] == "rejected" and r["kind"] == "ROUND_START" for r in read_audit(tmp_path))


def test_a_late_alert_about_an_aborted_round_does_not_abort_the_next(tmp_path: Path) -> None:
    """Every party refuses a tampered broadcast; the host delays one party's alert into the next round."""
    def delay(host: Host, env: Envelope, data: bytes) -> list[bytes]:
        host.flip_broadcast_once(env, rnd=2)
        if env.kind == "ALERT" and host.round == 2 and not host.held:
            host.held.append(env.src)  # hold the first alert; the others still abort round 2
            host.saved["alert"] = data
            return []
        if env.kind == "READY" and host.round == 3 and "alert" in host.saved and env.src == host.held[0]:
            return [host.saved.pop("alert"), data]  # the round-2 alert lands in round 3, in sequence order
        return [data]

    host = Host(delay)
    first, second, third = run(host, [1, 2, 3], tmp_path)
    assert host.held and "alert" not in host.saved  # the delayed alert was delivered in round 3
    assert isinstance(second, RoundAbortedError)
    assert not isinstance(first, Exception) and not isinstance(third, Exception), third
    assert any(r["event"] == "stale_alert" and r.get("rnd") == 2 for r in read_audit(tmp_path))


def test_truncated_broadcast_aborts_the_round() -> None:
    def cut(host: Host, env: Envelope, data: bytes) -> list[bytes]:
        if env.kind == "ROUND_START" and not host.done:
            name = host.broadcast_segment()
            overwrite(name, segment_bytes(name)[:-100])
            host.done.append(name)
        return [data]

    (outcome,) = run(Host(cut), [1])
    assert isinstance(outcome, RoundAbortedError) and "truncated or altered" in outcome.reason


def test_replayed_previous_round_broadcast_aborts_the_round() -> None:
    def replay(host: Host, env: Envelope, data: bytes) -> list[bytes]:
        if env.kind == "ROUND_START" and env.dst == "te-0":
            name = host.broadcast_segment()
            if host.round == 1:
                host.saved["old"] = segment_bytes(name)
            elif not host.done:
                overwrite(name, host.saved["old"])  # same size: the round-1 ciphertext in round 2's segment
                host.done.append(name)
        return [data]

    first, second = run(Host(replay), [1, 2])
    assert not isinstance(first, Exception)
    assert isinstance(second, RoundAbortedError) and "tag does not match" in second.reason


def test_broadcast_ticket_from_the_wrong_identity_aborts_the_round() -> None:
    """The host sends te-1 a ROUND_START of its own (valid ticket, own key) in the owner's name."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from siegecraft.enclave import broadcast
    from siegecraft.enclave.wire import pack

    def forge(host: Host, env: Envelope, data: bytes) -> list[bytes]:
        if env.kind == "ROUND_START" and env.dst == "te-1" and not host.done:
            fake = broadcast.seal(pack({"rnd": host.round}, {"weights": np.zeros(DIM, np.float32)}),
                                  session=b"unknown-session", rnd=host.round, sender="owner", prefix=host.prefix).ticket()
            key = X25519PrivateKey.generate()
            me = PeerIdentity("owner", public_bytes(key), b"h" * 32)
            them = PeerIdentity("te-1", public_bytes(X25519PrivateKey.generate()), b"t" * 32)
            channel = SecureChannel(me, key, them, b"host")
            channel._send_seq = env.seq
            host.done.append(fake.segment)
            meta = {"rnd": host.round, "broadcast": fake.to_meta()}
            return [channel.seal_message("ROUND_START", meta, epoch=env.epoch).to_bytes()]
        return [data]

    (outcome,) = run(Host(forge), [1])
    assert isinstance(outcome, RoundAbortedError) and "authentication failed" in outcome.reason


@pytest.mark.parametrize("kind,how", [("MASKED", "flip"), ("PARTIAL", "truncate"), ("RESULT", "delete")])
def test_altered_bulk_segments_abort_the_round(kind: str, how: str) -> None:
    def attack(host: Host, env: Envelope, data: bytes) -> list[bytes]:
        _, ref = frame_header(data)
        if ref is not None and env.kind == kind and not host.done:
            if how == "flip":
                raw = bytearray(segment_bytes(ref.segment))
                raw[-40] ^= 0x80
                overwrite(ref.segment, bytes(raw))
            elif how == "truncate":
                overwrite(ref.segment, segment_bytes(ref.segment)[: ref.size // 2])
            else:
                shm.unlink(ref.segment)
            host.done.append(ref.segment)
        return [data]

    host = Host(attack)
    (outcome,) = run(host, [1])
    assert host.done and isinstance(outcome, RoundAbortedError), outcome
    assert "authentication failed" in outcome.reason
