"""Wire formats: payloads round-trip; malformed or disallowed bytes are refused, never unpickled."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from siegecraft.enclave.errors import ChannelError
from siegecraft.enclave.wire import Envelope, pack, payload_buffer, payload_size, unpack


def test_payload_round_trip() -> None:
    arrays = {"v": np.arange(5, dtype=np.uint64), "w": np.linspace(0, 1, 3, dtype=np.float32)}
    meta, out = unpack(pack({"rnd": 3, "counts": {"1": 4}}, arrays))
    assert meta == {"rnd": 3, "counts": {"1": 4}}
    for name, arr in arrays.items():
        np.testing.assert_array_equal(out[name], arr)
        assert out[name].dtype == arr.dtype


def test_envelope_round_trip_and_canonical_header() -> None:
    env = Envelope("MASKED", "te-1", "agg-1-0", 7, b"\x00body")
    assert Envelope.from_bytes(env.to_bytes()) == env
    raw = env.to_bytes().replace(b'"seq":7', b'"seq": 7')
    with pytest.raises(ChannelError):
        Envelope.from_bytes(raw)


@pytest.mark.parametrize("data", [b"", b"CTDL1", b"XXXXX\x00\x00\x00\x02{}", b"CTDL1\x00\x00\x00\x02{}"])
def test_malformed_envelopes_are_refused(data: bytes) -> None:
    with pytest.raises(ChannelError):
        Envelope.from_bytes(data)


def test_malformed_payloads_are_refused() -> None:
    good = pack({"a": 1}, {"v": np.zeros(4, dtype=np.uint64)})
    for bad in (good[:-1], good + b"x", pickle.dumps({"a": 1}), b"\x00\x00\x00\x05[1,2]"):
        with pytest.raises(ChannelError):
            unpack(bad)


def test_object_arrays_are_refused() -> None:
    with pytest.raises(TypeError, match="dtype"):
        pack({}, {"v": np.array([object()])})


def test_payload_buffer_filled_in_place_equals_pack() -> None:
    meta = {"rnd": 2, "attempt": 0}
    v, w = np.arange(7, dtype=np.uint64), np.linspace(-1, 1, 4, dtype=np.float32)
    buf, views = payload_buffer(meta, {"v": ("uint64", v.size), "w": ("float32", w.size)})
    views["v"][:] = v
    views["w"][:] = w
    assert bytes(buf) == pack(meta, {"v": v, "w": w})  # the same format as pack's
    got_meta, out = unpack(buf)
    assert got_meta == meta and out["v"].flags.writeable  # a bytearray payload unpacks to writable views
    np.testing.assert_array_equal(out["v"], v)
    np.testing.assert_array_equal(out["w"], w)
    assert out["v"].dtype == np.uint64 and out["w"].dtype == np.float32
    with pytest.raises(TypeError, match="dtype"):
        payload_buffer(meta, {"o": ("object", 3)})


def test_payload_buffer_in_a_scratch_buffer_reuses_it_and_equals_pack() -> None:
    spec = {"v": ("uint32", 5)}
    scratch = bytearray(b"\xee" * 200)  # stale bytes from an earlier payload
    for rnd, fill in ((1, 3), (12345, 9)):  # a longer header the second time
        meta = {"rnd": rnd}
        buf, views = payload_buffer(meta, spec, scratch=scratch)
        views["v"][:] = fill
        assert len(buf) == payload_size(meta, spec) and np.shares_memory(views["v"], np.frombuffer(scratch, np.uint8))
        assert bytes(buf) == pack(meta, {"v": np.full(5, fill, np.uint32)})
    with pytest.raises(ValueError, match="scratch holds 10 bytes"):
        payload_buffer({"rnd": 1}, spec, scratch=bytearray(10))
