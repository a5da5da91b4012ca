"""Fixed-point codec: round trips, the documented error bound, and refusal to wrap around."""

from __future__ import annotations

import numpy as np
import pytest

from siegecraft.enclave.codec import ENCODE_BLOCK, FixedPointCodec
from siegecraft.enclave.errors import CodecError


@pytest.mark.parametrize("modulus_bits", [32, 64])
def test_round_trip_within_half_step(modulus_bits: int) -> None:
    codec = FixedPointCodec(clip=4.0, scale_bits=16, modulus_bits=modulus_bits)
    x = np.random.default_rng(0).uniform(-4, 4, 10_000)
    decoded = codec.decode(codec.encode(x))
    assert np.abs(decoded - x).max() <= 0.5 / codec.scale
    assert codec.encode(x).dtype == codec.dtype


@pytest.mark.parametrize("modulus_bits", [32, 64])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_sum_of_n_encodings_decodes_within_bound(modulus_bits: int, rounding: str) -> None:
    codec = FixedPointCodec(clip=2.0, scale_bits=12, modulus_bits=modulus_bits, rounding=rounding)
    rng = np.random.default_rng(1)
    n = 50
    xs = rng.uniform(-2, 2, (n, 5_000))
    total = codec.zeros(5_000)
    for i, x in enumerate(xs):
        codec.add(total, codec.encode(x, rng=np.random.default_rng(i)))
    err = np.abs(codec.decode(total) - xs.sum(0)).max()
    assert err <= codec.error_bound(n)
    # the bound is not vacuous: errors of that order really occur
    assert err > codec.error_bound(n) / 50


def test_negative_sums_and_wraparound_of_intermediate_terms() -> None:
    codec = FixedPointCodec(clip=1.0, scale_bits=8, modulus_bits=32)
    a, b = codec.encode(np.array([-1.0, 0.5])), codec.encode(np.array([-0.25, -1.0]))
    total = codec.add(a.copy(), b)
    np.testing.assert_allclose(codec.decode(total), [-1.25, -0.5])


def test_clipping_applies_before_scaling() -> None:
    codec = FixedPointCodec(clip=1.0, scale_bits=10)
    np.testing.assert_allclose(codec.decode(codec.encode(np.array([5.0, -7.0, 0.25]))), [1.0, -1.0, 0.25])


def test_weighted_encoding_divides_back() -> None:
    codec = FixedPointCodec(clip=1.0, scale_bits=20)
    x = np.array([0.123456, -0.5])
    enc = codec.encode(x, weight=37)
    np.testing.assert_allclose(codec.decode(enc, weight=37), x, atol=0.5 / codec.scale / 37)


def test_capacity_is_validated() -> None:
    codec = FixedPointCodec(clip=8.0, scale_bits=20, modulus_bits=32)
    # n * clip * scale < M/2  <=>  n * 2^23 < 2^31  <=>  n < 256
    codec.check_capacity(255)
    with pytest.raises(CodecError, match="wrap around"):
        codec.check_capacity(256)
    with pytest.raises(CodecError, match="wrap around"):
        codec.encode(np.zeros(3), weight=300)


def test_capacity_counts_each_partys_rounding() -> None:
    codec = FixedPointCodec(clip=1.0, scale_bits=30, modulus_bits=32)  # clip * scale = 2^30 = M/4
    codec.check_capacity(1.0, parties=2**30 - 1)
    with pytest.raises(CodecError, match="over 1073741824 parties"):
        codec.check_capacity(1.0, parties=2**30)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_default_codec_holds_a_weighted_mean_of_many_parties_at_the_clip(rounding: str) -> None:
    """The protocol's weights n_i / N sum to one, so 2^32 never wraps: 1,000 parties at +-clip."""
    codec = FixedPointCodec(rounding=rounding)
    assert (codec.modulus_bits, codec.clip) == (32, 8.0)
    codec.check_capacity(1.0, parties=1000)
    samples = np.random.default_rng(3).integers(1, 500, 1000)
    weights = samples / samples.sum()
    for sign in (1.0, -1.0):
        total = codec.zeros(2)
        for i, w in enumerate(weights):
            codec.add(total, codec.encode(np.array([sign * 100.0, sign * 8.0]), weight=w,
                                          rng=np.random.default_rng(i)))
        np.testing.assert_allclose(codec.decode(total), [sign * 8.0, sign * 8.0], atol=codec.error_bound(1000))


def test_encode_writes_into_a_given_vector() -> None:
    codec = FixedPointCodec(clip=1.0, scale_bits=10, modulus_bits=32)
    x = np.array([[0.5, -0.25], [1.5, 0.0]], dtype=np.float32)
    out = np.full(4, 7, dtype=np.uint32)
    got = codec.encode(x, out=out)
    assert got.shape == x.shape and np.shares_memory(got, out)
    np.testing.assert_array_equal(out, codec.encode(x).reshape(-1))
    for bad in (np.empty(4, np.uint64), np.empty(3, np.uint32), np.empty(8, np.uint32)[::2]):
        with pytest.raises(CodecError, match="writable contiguous"):
            codec.encode(x, out=bad)


def test_exceeding_capacity_really_wraps() -> None:
    """What the capacity check prevents: 2 values at +clip overflow a too-small modulus."""
    codec = FixedPointCodec(clip=1.0, scale_bits=30, modulus_bits=32)  # capacity: 2^31 / 2^30 = 2
    with pytest.raises(CodecError):
        codec.check_capacity(2)
    one = codec.encode(np.array([1.0]))
    total = codec.add(one.copy(), one)
    assert codec.decode(total)[0] == -2.0  # wrapped: the true sum 2.0 is lost


def test_stochastic_rounding_is_seeded_and_unbiased() -> None:
    codec = FixedPointCodec(clip=1.0, scale_bits=2, rounding="stochastic")
    x = np.full(200_000, 0.1)  # 0.4 steps: nearest would always give 0
    a = codec.encode(x, rng=np.random.default_rng(7))
    b = codec.encode(x, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert abs(codec.decode(a).mean() - 0.1) < 0.005
    assert codec.decode(FixedPointCodec(clip=1.0, scale_bits=2).encode(x)).mean() == 0.0
    with pytest.raises(CodecError, match="seeded"):
        codec.encode(x)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(CodecError, match="NaN"):
        FixedPointCodec().encode(np.array([0.0, bad]))


@pytest.mark.parametrize("kwargs", [{"modulus_bits": 16}, {"scale_bits": 63}, {"clip": 0.0},
                                    {"rounding": "floor"}, {"clip": 2.0**40, "scale_bits": 30}])
def test_invalid_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises((ValueError, CodecError)):
        FixedPointCodec(**kwargs)


def test_dtype_mismatch_is_refused() -> None:
    codec = FixedPointCodec(modulus_bits=64)
    with pytest.raises(CodecError):
        codec.decode(np.zeros(3, dtype=np.uint32))
    with pytest.raises(CodecError):
        codec.add(codec.zeros(3), np.zeros(3, dtype=np.uint32))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("size", [1, ENCODE_BLOCK - 1, ENCODE_BLOCK + 1, 3 * ENCODE_BLOCK + 5])
def test_blockwise_encoding_equals_the_plain_formula(rounding: str, size: int) -> None:
    codec = FixedPointCodec(clip=2.0, scale_bits=20, modulus_bits=64, rounding=rounding)
    x = np.random.default_rng(size).normal(0, 2, size).astype(np.float32)
    scaled = np.clip(x.astype(np.float64), -2.0, 2.0) * (7.0 * codec.scale)  # clip, weight, scale
    if rounding == "nearest":
        expected = np.rint(scaled)
    else:
        floor = np.floor(scaled)
        expected = floor + (np.random.default_rng(5).random(size) < scaled - floor)
    got = codec.encode(x, weight=7.0, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(got.view(np.int64), expected.astype(np.int64))
