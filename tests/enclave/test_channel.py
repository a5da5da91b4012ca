"""Secure channels: round trips work; tampering, replay, reordering, misrouting and reflection do not."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from siegecraft.enclave.channel import MAX_MISSING, PeerIdentity, SecureChannel, public_bytes, transcript_hash
from siegecraft.enclave.errors import ChannelError, ReplayError, TamperedMessageError
from siegecraft.enclave.wire import PLAINTEXT_SEQ, Envelope

CONTEXT = b"ctx"


def identity(role: str, key: X25519PrivateKey) -> PeerIdentity:
    return PeerIdentity(role, public_bytes(key), b"m-" + role.encode())


@pytest.fixture
def pair() -> tuple[SecureChannel, SecureChannel]:
    ka, kb = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    a, b = identity("te-0", ka), identity("agg-1-0", kb)
    return SecureChannel(a, ka, b, CONTEXT), SecureChannel(b, kb, a, CONTEXT)


def test_round_trip_both_directions(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, b = pair
    for i in range(3):
        assert b.open(a.seal("MASKED", b"payload %d" % i)) == b"payload %d" % i
        assert a.open(b.seal("ACK", b"back %d" % i)) == b"back %d" % i


def test_ciphertext_does_not_contain_the_plaintext(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, _ = pair
    secret = b"model weights " * 10
    env = a.seal("ROUND_START", secret)
    assert secret[:16] not in env.to_bytes()


def test_tampered_ciphertext_is_rejected(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, b = pair
    env = a.seal("MASKED", b"x" * 64)
    body = bytearray(env.body)
    body[5] ^= 1
    with pytest.raises(TamperedMessageError, match="authentication failed"):
        b.open(Envelope(env.kind, env.src, env.dst, env.seq, bytes(body)))


def test_tampered_header_is_rejected(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, b = pair
    env = a.seal("MASKED", b"x")
    with pytest.raises(TamperedMessageError):
        b.open(Envelope("RESULT", env.src, env.dst, env.seq, env.body))


def test_replayed_message_is_rejected(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, b = pair
    env = a.seal("MASKED", b"x")
    b.open(env)
    with pytest.raises(ReplayError, match="replayed"):
        b.open(env)


def test_reordered_and_dropped_messages_are_accepted_once(pair: tuple[SecureChannel, SecureChannel]) -> None:
    """A gap (a withheld message) does not stop the channel; the late copy is still accepted, once."""
    a, b = pair
    first, second, third = a.seal("M", b"1"), a.seal("M", b"2"), a.seal("M", b"3")
    assert b.open(third) == b"3"
    assert b.open(first) == b"1"
    with pytest.raises(ReplayError):
        b.open(first)
    with pytest.raises(ReplayError):
        b.open(third)
    assert b.open(second) == b"2"
    assert b.gaps == 0


def test_a_new_epoch_resynchronises_and_retires_the_old_one(pair: tuple[SecureChannel, SecureChannel]) -> None:
    """After losses in round 1's epoch, round 2's first message is accepted; round 1's can never be again."""
    a, b = pair
    lost = [a.seal("M", b"lost", epoch=2) for _ in range(3)]
    late = a.seal("M", b"late", epoch=2)
    assert b.open(late) == b"late"
    nxt = a.seal("M", b"next round", epoch=3)
    assert (nxt.epoch, nxt.seq) == (3, 0)
    assert b.open(nxt) == b"next round"
    assert b.gaps == 3  # the three withheld messages of epoch 2 never arrived
    for env in [*lost, late]:
        with pytest.raises(ReplayError, match="stale"):
            b.open(env)
    # the sender never moves back: asking for an older epoch seals in the current one
    assert a.seal("M", b"alert", epoch=1).epoch == 3


def test_forged_epoch_neither_verifies_nor_moves_the_window(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, b = pair
    env = a.seal("M", b"1", epoch=1)
    for epoch in (2, 2**32 - 1):
        with pytest.raises(TamperedMessageError):
            b.open(Envelope(env.kind, env.src, env.dst, env.seq, env.body, epoch))
    with pytest.raises(TamperedMessageError, match="out of range"):
        b.open(Envelope(env.kind, env.src, env.dst, env.seq, env.body, 2**40))
    assert b.open(env) == b"1"  # the forgeries did not advance the receiver past epoch 1


def test_a_long_gap_is_remembered_only_so_far(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, b = pair
    envs = [a.seal("M", b"%d" % i) for i in range(MAX_MISSING + 10)]
    b.open(envs[-1])
    assert b.gaps == 9  # the oldest skipped numbers fall out of the window and count as lost
    with pytest.raises(ReplayError):
        b.open(envs[0])
    assert b.open(envs[-2]) == b"%d" % (MAX_MISSING + 8)


def test_forged_sequence_number_is_rejected(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, b = pair
    env = a.seal("M", b"1")
    with pytest.raises(TamperedMessageError):
        b.open(Envelope(env.kind, env.src, env.dst, env.seq + 1, env.body))


def test_misrouted_and_reflected_messages_are_rejected(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, b = pair
    env = a.seal("M", b"1")
    with pytest.raises(ChannelError, match="misrouted"):
        a.open(env)  # reflected back to its sender
    with pytest.raises(ChannelError, match="misrouted"):
        b.open(Envelope(env.kind, "root", env.dst, env.seq, env.body))
    relabelled = Envelope(env.kind, b.peer.role, b.local.role, env.seq, env.body)
    reflected_from_b = b.seal("M", b"2")
    with pytest.raises(TamperedMessageError):  # keys differ per direction, so a reflected body never verifies
        a.open(Envelope(reflected_from_b.kind, reflected_from_b.src, reflected_from_b.dst, 0, env.body))
    assert b.open(relabelled) == b"1"


def test_plaintext_is_refused_on_a_channel(pair: tuple[SecureChannel, SecureChannel]) -> None:
    _, b = pair
    with pytest.raises(ChannelError, match="plaintext"):
        b.open(Envelope("M", "te-0", "agg-1-0", PLAINTEXT_SEQ, b"hello"))


def test_keys_are_bound_to_the_transcript() -> None:
    ka, kb = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    a, b = identity("te-0", ka), identity("agg-1-0", kb)
    sender = SecureChannel(a, ka, b, CONTEXT)
    env = sender.seal("M", b"1")
    for receiver in (SecureChannel(b, kb, a, b"other context"),
                     SecureChannel(b, kb, PeerIdentity(a.role, a.public_key, b"other measurement"), CONTEXT)):
        with pytest.raises(TamperedMessageError):
            receiver.open(env)


def test_swapped_peer_key_cannot_read_the_channel() -> None:
    ka, kb, kx = (X25519PrivateKey.generate() for _ in range(3))
    a, b = identity("te-0", ka), identity("agg-1-0", kb)
    env = SecureChannel(a, ka, b, CONTEXT).seal("M", b"secret")
    impostor = PeerIdentity("agg-1-0", public_bytes(kx), b.measurement)
    with pytest.raises(TamperedMessageError):
        SecureChannel(impostor, kx, a, CONTEXT).open(env)


def test_transcript_hash_is_symmetric_and_sensitive() -> None:
    ka, kb = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    a, b = identity("x", ka), identity("y", kb)
    assert transcript_hash(a, b, CONTEXT) == transcript_hash(b, a, CONTEXT)
    assert transcript_hash(a, b, CONTEXT) != transcript_hash(a, b, b"ctx2")


def test_mismatched_private_key_is_refused() -> None:
    ka, kb = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    with pytest.raises(ChannelError, match="does not match"):
        SecureChannel(identity("a", ka), kb, identity("b", kb), CONTEXT)


def test_seal_into_a_buffer_opens_like_seal_and_keeps_the_sequence(pair: tuple[SecureChannel, SecureChannel]) -> None:
    a, b = pair
    payload = bytearray(b"update bytes" * 100)
    out = bytearray(a.sealed_size(len(payload)))
    env = a.seal_into("MASKED", payload, memoryview(out))
    assert env.body == b"" and env.seq == 0
    sealed = Envelope(env.kind, env.src, env.dst, env.seq, bytes(out))
    assert b.open(sealed) == payload
    with pytest.raises(ReplayError):
        b.open(sealed)
    assert b.open(a.seal("NEXT", b"x")) == b"x"  # seal_into consumed sequence number 0
    with pytest.raises(ValueError, match="needs"):
        a.seal_into("MASKED", payload, memoryview(bytearray(len(payload))))
    env2 = a.seal_into("MASKED", payload, memoryview(out))
    out[5] ^= 1  # the host flips one bit of the body it relays
    with pytest.raises(TamperedMessageError):
        b.open(Envelope(env2.kind, env2.src, env2.dst, env2.seq, bytes(out)))
    out[5] ^= 1
    assert b.open(Envelope(env2.kind, env2.src, env2.dst, env2.seq, bytes(out))) == payload
