"""Shared-memory transport and the round broadcast: round trips work; a host that alters, truncates,
replaces, replays or redirects segments, or a key holder that forges a broadcast, is refused."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305

from siegecraft.enclave import broadcast, shm
from siegecraft.enclave.channel import PeerIdentity, SecureChannel, public_bytes
from siegecraft.enclave.errors import ChannelError, ReplayError, TamperedMessageError
from siegecraft.enclave.transport import Mailbox
from siegecraft.enclave.wire import BodyRef, Envelope, frame_header, pack, ref_frame, unpack

from .host_segments import flip_byte, overwrite, truncate

pytestmark = pytest.mark.skipif(not shm.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")
SESSION = b"s" * 16


@pytest.fixture
def prefix() -> Iterator[str]:
    p = shm.new_prefix()
    yield p
    assert shm.sweep(p) == 0, "a test left shared-memory segments behind"


def test_segment_round_trip_and_unlink(prefix: str) -> None:
    data = os.urandom(100_000)
    name = shm.write(prefix, data)
    assert name.startswith(prefix) and shm.live(prefix) == [name]
    assert bytes(shm.read(name, len(data), prefix)) == data
    assert shm.unlink(name) and not shm.unlink(name)
    with pytest.raises(shm.SegmentMissingError):
        shm.read(name, len(data), prefix)


def test_segment_read_into_a_reused_buffer(prefix: str) -> None:
    into = bytearray(b"x" * 300)
    for data in (os.urandom(250), os.urandom(100)):
        name = shm.write(prefix, data)
        try:
            got = shm.read(name, len(data), prefix, into=into)
            assert bytes(got) == data and len(got) == len(data) and bytes(into[:len(data)]) == data
            with pytest.raises(ValueError, match="cannot hold"):
                shm.read(name, len(data), prefix, into=bytearray(len(data) - 1))
        finally:
            shm.unlink(name)


def test_segment_reads_refuse_wrong_sizes_and_foreign_names(prefix: str) -> None:
    name = shm.write(prefix, b"x" * 1000)
    try:
        with pytest.raises(shm.SegmentError, match="1000 bytes, 999 were announced"):
            shm.read(name, 999, prefix)
        truncate(name, 10)
        with pytest.raises(shm.SegmentError, match="truncated or altered"):
            shm.read(name, 1000, prefix)
        other = shm.new_prefix()
        with pytest.raises(shm.SegmentError, match="namespace"):
            shm.read(name, 10, other)
        for bad in ("../etc/passwd", prefix + "zz", prefix + "0" * 15, prefix + "0" * 16 + "/x"):
            with pytest.raises(shm.SegmentError):
                shm.check_name(bad, prefix)
    finally:
        shm.unlink(name)


def test_sweep_removes_every_segment_of_the_prefix_only(prefix: str) -> None:
    other = shm.new_prefix()
    mine = [shm.write(prefix, b"a"), shm.write(prefix, b"b")]
    theirs = shm.write(other, b"c")
    try:
        assert shm.sweep(prefix) == 2
        assert shm.live(prefix) == [] and shm.live(other) == [theirs]
        assert all(not shm.unlink(n) for n in mine)
    finally:
        shm.unlink(theirs)


# -- reference frames ----------------------------------------------------------------------------
def test_reference_frames_round_trip_and_malformed_ones_are_refused() -> None:
    env = Envelope("MASKED", "te-0", "agg-1-0", 7, b"")
    frame = ref_frame(env, BodyRef("ctdl00000000_" + "0" * 16, 1234))
    header, ref = frame_header(frame)
    assert header == env and ref == BodyRef("ctdl00000000_" + "0" * 16, 1234)
    assert frame_header(env.to_bytes()) == (env, None)
    plain = Envelope("STOP", "host", "te-0", -1, b"")
    for bad in (frame + b"x", frame[:-3], b"CTDLR" + frame[5:9] + b"[" + frame[10:],
                ref_frame(plain, BodyRef("n", 5)), ref_frame(env, BodyRef("n", 0))):
        with pytest.raises(ChannelError):
            frame_header(bad)


# -- the mailbox's bulk path -----------------------------------------------------------------------
def channel_pair() -> tuple[SecureChannel, SecureChannel]:
    ka, kb = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    a = PeerIdentity("te-0", public_bytes(ka), b"m" * 32)
    b = PeerIdentity("agg-1-0", public_bytes(kb), b"n" * 32)
    return SecureChannel(a, ka, b, b"ctx"), SecureChannel(b, kb, a, b"ctx")


class Wire:
    """Sender mailbox -> (raw frames the test can inspect and alter) -> receiver mailbox."""

    def __init__(self, prefix: str, threshold: int = 1024) -> None:
        out_mine, self.out_host = mp.Pipe()
        self.in_host, in_mine = mp.Pipe()
        self.sender = Mailbox(out_mine, "te-0", shm_prefix=prefix, bulk_threshold=threshold)
        self.receiver = Mailbox(in_mine, "agg-1-0", shm_prefix=prefix, bulk_threshold=threshold)

    def send(self, env: Envelope) -> bytes:
        self.sender.send(env)
        return self.out_host.recv_bytes()

    def deliver(self, frame: bytes) -> Envelope:
        self.in_host.send_bytes(frame)
        env = self.receiver.receive(5.0)
        assert env is not None
        return env

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()
        for conn in (self.out_host, self.in_host):
            conn.close()


@pytest.fixture
def wire(prefix: str) -> Iterator[Wire]:
    w = Wire(prefix)
    yield w
    w.close()


def test_large_sealed_bodies_cross_through_shared_memory(wire: Wire, prefix: str) -> None:
    tx, rx = channel_pair()
    vector = np.arange(50_000, dtype=np.uint64)
    frame = wire.send(tx.seal_message("MASKED", {"rnd": 1}, {"v": vector}))
    header, ref = frame_header(frame)
    assert ref is not None and len(frame) < 300 and header.kind == "MASKED"
    assert shm.live(prefix) == [ref.segment]
    meta, arrays = rx.open_message(wire.deliver(frame))
    assert meta == {"rnd": 1} and np.array_equal(arrays["v"], vector)
    assert shm.live(prefix) == []  # the receiver unlinked it after copying
    small = wire.send(tx.seal_message("READY", {"rnd": 1}))
    assert frame_header(small)[1] is None  # small bodies stay inline
    assert rx.open_message(wire.deliver(small))[0] == {"rnd": 1}


def test_send_sealed_encrypts_bulk_bodies_via_the_scratch_buffer(wire: Wire, prefix: str) -> None:
    tx, rx = channel_pair()
    frames = []
    for rnd, fill in ((1, 1), (2, 2)):  # the second message reuses (and overwrites) the sender's scratch
        wire.sender.send_sealed(tx, "MASKED", pack({"rnd": rnd}, {"v": np.full(20_000, fill, dtype=np.uint64)}))
        frames.append(wire.out_host.recv_bytes())
    for rnd, frame in enumerate(frames, start=1):
        header, ref = frame_header(frame)
        assert ref is not None and header.seq == rnd - 1
        meta, arrays = rx.open_message(wire.deliver(frame))
        assert meta == {"rnd": rnd} and (arrays["v"] == rnd).all()
    wire.sender.send_sealed(tx, "READY", pack({"rnd": 3}))
    small = wire.out_host.recv_bytes()
    assert frame_header(small)[1] is None  # small bodies stay inline
    assert rx.open_message(wire.deliver(small))[0] == {"rnd": 3}
    wire.sender.send_sealed(tx, "MASKED", pack({"rnd": 4}, {"v": np.ones(20_000, dtype=np.uint64)}))
    _, ref = frame_header(frame := wire.out_host.recv_bytes())
    assert ref is not None
    flip_byte(ref.segment, 1_000)  # the host alters the segment the scratch buffer was copied into
    with pytest.raises(TamperedMessageError):
        rx.open(wire.deliver(frame))
    assert shm.live(prefix) == []


def test_altered_truncated_or_missing_segments_fail_authentication(wire: Wire, prefix: str) -> None:
    tx, rx = channel_pair()
    payload = {"v": np.ones(10_000, dtype=np.uint64)}
    frame = wire.send(tx.seal_message("MASKED", {"rnd": 1}, payload))
    _, ref = frame_header(frame)
    assert ref is not None
    flip_byte(ref.segment, 5_000)
    with pytest.raises(TamperedMessageError, match="authentication failed"):
        rx.open(wire.deliver(frame))
    assert shm.live(prefix) == []  # consumed (and unlinked) even though it was refused

    tx, rx = channel_pair()
    frame = wire.send(tx.seal_message("MASKED", {"rnd": 1}, payload))
    _, ref = frame_header(frame)
    assert ref is not None
    truncate(ref.segment, ref.size // 2)
    with pytest.raises(TamperedMessageError):
        rx.open(wire.deliver(frame))

    tx, rx = channel_pair()
    frame = wire.send(tx.seal_message("MASKED", {"rnd": 1}, payload))
    _, ref = frame_header(frame)
    assert ref is not None
    shm.unlink(ref.segment)  # the host deletes it
    with pytest.raises(TamperedMessageError):
        rx.open(wire.deliver(frame))


def test_redirected_and_replayed_reference_frames_are_refused(wire: Wire, prefix: str) -> None:
    tx, rx = channel_pair()
    first = wire.send(tx.seal_message("MASKED", {"rnd": 1}, {"v": np.ones(10_000, dtype=np.uint64)}))
    second = wire.send(tx.seal_message("MASKED", {"rnd": 2}, {"v": np.zeros(10_000, dtype=np.uint64)}))
    (h1, r1), (_, r2) = frame_header(first), frame_header(second)
    assert r1 is not None and r2 is not None
    # the host points the first message at the second's segment: wrong nonce and header for that body
    with pytest.raises(TamperedMessageError):
        rx.open(wire.deliver(ref_frame(h1, r2)))
    tx, rx = channel_pair()
    frame = wire.send(tx.seal_message("MASKED", {"rnd": 1}, {"v": np.ones(10_000, dtype=np.uint64)}))
    assert rx.open_message(wire.deliver(frame))[0] == {"rnd": 1}
    with pytest.raises(ReplayError):  # the segment is gone, and the sequence number was already accepted
        rx.open(wire.deliver(frame))
    shm.unlink(r1.segment)
    assert shm.live(prefix) == []


def test_reference_to_a_foreign_segment_is_never_read_or_unlinked(wire: Wire, prefix: str) -> None:
    tx, rx = channel_pair()
    other = shm.new_prefix()
    foreign = shm.write(other, b"z" * 5000)
    try:
        env = tx.seal_message("MASKED", {"rnd": 1}, {"v": np.ones(10_000, dtype=np.uint64)})
        frame = ref_frame(Envelope(env.kind, env.src, env.dst, env.seq, b""), BodyRef(foreign, 5000))
        with pytest.raises(TamperedMessageError):
            rx.open(wire.deliver(frame))
        assert shm.live(other) == [foreign]
    finally:
        shm.unlink(foreign)


# -- the round broadcast -------------------------------------------------------------------------
def weights(seed: int) -> bytes:
    return pack({"rnd": seed}, {"weights": np.random.default_rng(seed).normal(size=5_000).astype(np.float32)})


def test_broadcast_round_trip_with_fresh_keys_every_round(prefix: str) -> None:
    b1 = broadcast.seal(weights(1), session=SESSION, rnd=1, sender="owner", prefix=prefix)
    t1, t2 = b1.ticket(), broadcast.seal(weights(2), session=SESSION, rnd=2, sender="owner", prefix=prefix).ticket()
    try:
        assert t1.key != t2.key and t1.nonce != t2.nonce and t1.segment != t2.segment
        tickets = [b1.ticket() for _ in range(3)]  # every recipient reads the same segment, with its own tag
        assert len({t.mac_key for t in tickets}) == 3 and len({t.tag for t in tickets}) == 3
        for ticket in tickets:
            payload = broadcast.open_ticket(ticket, session=SESSION, rnd=1, sender="owner", prefix=prefix)
            assert payload == weights(1)
        assert broadcast.Ticket.from_meta(t1.to_meta()) == t1
        assert unpack(payload)[0] == {"rnd": 1} and isinstance(payload, bytearray)
        assert repr(t1.key) not in repr(t1) and repr(t1.mac_key) not in repr(t1)  # secrets stay out of logs
        assert repr(b1.key) not in repr(b1) and len(repr(b1)) < 200
    finally:
        shm.unlink_all([t1.segment, t2.segment])


def test_tampered_or_truncated_broadcast_is_refused(prefix: str) -> None:
    ticket = broadcast.seal(weights(1), session=SESSION, rnd=1, sender="owner", prefix=prefix).ticket()
    try:
        flip_byte(ticket.segment, 100)
        with pytest.raises(broadcast.BroadcastError, match="tag does not match"):
            broadcast.open_ticket(ticket, session=SESSION, rnd=1, sender="owner", prefix=prefix)
        truncate(ticket.segment, ticket.size - 16)  # the tag cut off
        with pytest.raises(broadcast.BroadcastError, match="truncated or altered"):
            broadcast.open_ticket(ticket, session=SESSION, rnd=1, sender="owner", prefix=prefix)
        shm.unlink(ticket.segment)
        with pytest.raises(broadcast.BroadcastMissingError):
            broadcast.open_ticket(ticket, session=SESSION, rnd=1, sender="owner", prefix=prefix)
    finally:
        shm.unlink(ticket.segment)


def test_previous_round_broadcast_is_refused(prefix: str) -> None:
    old = broadcast.seal(weights(1), session=SESSION, rnd=1, sender="owner", prefix=prefix).ticket()
    new = broadcast.seal(weights(1), session=SESSION, rnd=2, sender="owner", prefix=prefix).ticket()
    try:
        # the host copies round 1's ciphertext over round 2's segment
        overwrite(new.segment, bytes(shm.read(old.segment, old.size, prefix)))
        with pytest.raises(broadcast.BroadcastError, match="tag does not match"):
            broadcast.open_ticket(new, session=SESSION, rnd=2, sender="owner", prefix=prefix)
        # a replayed round-1 ticket (with its own key and tag) presented in round 2: bound to round 1
        with pytest.raises(broadcast.BroadcastError, match="authentication failed"):
            broadcast.open_ticket(old, session=SESSION, rnd=2, sender="owner", prefix=prefix)
        with pytest.raises(broadcast.BroadcastError, match="authentication failed"):
            broadcast.open_ticket(old, session=b"t" * 16, rnd=1, sender="owner", prefix=prefix)
    finally:
        shm.unlink_all([old.segment, new.segment])


def test_broadcast_from_the_wrong_identity_is_refused(prefix: str) -> None:
    """A ticket that arrived on the aggregator's channel opens only a broadcast the aggregator sealed."""
    ticket = broadcast.seal(weights(1), session=SESSION, rnd=1, sender="agg-1-0", prefix=prefix).ticket()
    try:
        with pytest.raises(broadcast.BroadcastError, match="authentication failed"):
            broadcast.open_ticket(ticket, session=SESSION, rnd=1, sender="owner", prefix=prefix)
    finally:
        shm.unlink(ticket.segment)


def test_a_key_holder_cannot_forge_the_broadcast_for_the_others(prefix: str) -> None:
    """Every recipient learns the round key; the one-time tag on each one's own channel stops forgeries."""
    sealed = broadcast.seal(weights(1), session=SESSION, rnd=1, sender="owner", prefix=prefix)
    forger, victim = sealed.ticket(), sealed.ticket()
    try:
        ad = broadcast.associated_data(SESSION, 1, "owner")
        forged = AESGCM(forger.key).encrypt(forger.nonce, weights(7), ad)  # valid GCM under the round key
        assert len(forged) == forger.size
        overwrite(forger.segment, forged)
        # the forger can tag its ciphertext under its own one-time key, which the victim never uses
        assert Poly1305.generate_tag(forger.mac_key, forged) != victim.tag
        with pytest.raises(broadcast.BroadcastError, match="tag does not match"):
            broadcast.open_ticket(victim, session=SESSION, rnd=1, sender="owner", prefix=prefix)
        overwrite(forger.segment, sealed.ciphertext)  # the owner's bytes again: the victim accepts them
        assert broadcast.open_ticket(victim, session=SESSION, rnd=1, sender="owner", prefix=prefix) == weights(1)
    finally:
        shm.unlink(forger.segment)


@pytest.mark.parametrize("field,value", [("key", "00" * 16), ("nonce", "zz"), ("tag", "00"), ("mac_key", "11" * 16), ("size", "x")])
def test_malformed_tickets_are_refused(prefix: str, field: str, value: str) -> None:
    ticket = broadcast.seal(b"payload", session=SESSION, rnd=1, sender="owner", prefix=prefix).ticket()
    try:
        with pytest.raises(broadcast.BroadcastError, match="malformed"):
            broadcast.Ticket.from_meta({**ticket.to_meta(), field: value})
    finally:
        shm.unlink(ticket.segment)
