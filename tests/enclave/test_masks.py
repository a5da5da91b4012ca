"""Zero-sum masks: they cancel exactly, hide single updates and strict-subset sums, and are never reused."""

from __future__ import annotations

import numpy as np
import pytest

from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.errors import MaskReuseError
from siegecraft.enclave.masks import (
    MaskDomain,
    MaskGrant,
    MaskLedger,
    ZeroSumMaskIssuer,
    expand_mask,
    fresh_seed,
)

from .uniformity import UNIFORM_ALPHA, byte_uniformity_p, ks_uniform_p

LAYOUT = [3_000, 17, 2_000]
PARTIES = [f"te-{i}" for i in range(5)]


def masks_of(grants: dict[str, MaskGrant], bits: int) -> dict[str, np.ndarray]:
    return {p: g.materialize(LAYOUT, bits) for p, g in grants.items()}


@pytest.mark.parametrize("bits", [32, 64])
def test_masks_of_a_round_sum_to_zero(bits: int) -> None:
    grants = ZeroSumMaskIssuer(b"s" * 16, LAYOUT, bits).issue(1, 0, PARTIES)
    masks = masks_of(grants, bits)
    total = np.zeros(sum(LAYOUT), dtype=masks["te-0"].dtype)
    for m in masks.values():
        total += m
    assert not total.any()
    assert all(m.any() for m in masks.values())


@pytest.mark.parametrize("bits", [32, 64])
def test_masked_sum_equals_plain_sum_exactly(bits: int) -> None:
    codec = FixedPointCodec(clip=1.0, scale_bits=16, modulus_bits=bits)
    rng = np.random.default_rng(0)
    xs = {p: rng.uniform(-1, 1, sum(LAYOUT)) for p in PARTIES}
    masks = masks_of(ZeroSumMaskIssuer(b"s", LAYOUT, bits).issue(3, 0, PARTIES), bits)
    masked_total, plain_total = codec.zeros(sum(LAYOUT)), codec.zeros(sum(LAYOUT))
    for p in PARTIES:
        codec.add(masked_total, codec.encode(xs[p]) + masks[p])
        codec.add(plain_total, codec.encode(xs[p]))
    np.testing.assert_array_equal(masked_total, plain_total)


@pytest.mark.parametrize("bits", [32, 64])
def test_single_masked_update_is_uniform_and_unmasked_is_not(bits: int) -> None:
    codec = FixedPointCodec(clip=1.0, scale_bits=16, modulus_bits=bits)
    x = np.random.default_rng(1).normal(0, 0.05, sum(LAYOUT))
    encoded = codec.encode(x, weight=10)
    masks = masks_of(ZeroSumMaskIssuer(b"s", LAYOUT, bits).issue(1, 0, PARTIES), bits)
    for party in PARTIES:  # includes the last party, whose mask is the correction vector
        masked = encoded + masks[party]
        assert byte_uniformity_p(masked) > UNIFORM_ALPHA
        assert ks_uniform_p(masked, bits) > UNIFORM_ALPHA
    assert byte_uniformity_p(encoded) < 1e-12
    assert ks_uniform_p(encoded, bits) < 1e-12


def test_sum_of_a_strict_subset_of_masked_updates_is_uniform() -> None:
    codec = FixedPointCodec(clip=1.0, scale_bits=16, modulus_bits=64)
    rng = np.random.default_rng(2)
    encoded = {p: codec.encode(rng.normal(0.01, 0.05, sum(LAYOUT))) for p in PARTIES}
    masks = masks_of(ZeroSumMaskIssuer(b"s", LAYOUT, 64).issue(1, 0, PARTIES), 64)
    for left_out in PARTIES:
        partial, plain = codec.zeros(sum(LAYOUT)), codec.zeros(sum(LAYOUT))
        for p in PARTIES:
            if p != left_out:
                codec.add(partial, encoded[p] + masks[p])
                codec.add(plain, encoded[p])
        assert byte_uniformity_p(partial) > UNIFORM_ALPHA
        assert byte_uniformity_p(plain) < 1e-12


def test_issuer_refuses_to_reissue_a_round_attempt() -> None:
    issuer = ZeroSumMaskIssuer(b"s", LAYOUT, 64)
    issuer.issue(1, 0, PARTIES)
    with pytest.raises(MaskReuseError, match="already issued"):
        issuer.issue(1, 0, PARTIES[:2])
    issuer.issue(1, 1, PARTIES[:2])  # a remask attempt is a new domain
    issuer.issue(2, 0, PARTIES)


def test_ledger_refuses_reuse_and_past_rounds() -> None:
    ledger = MaskLedger()
    ledger.claim(1, 0)
    ledger.claim(1, 1)
    with pytest.raises(MaskReuseError, match="already used"):
        ledger.claim(1, 0)
    ledger.claim(2, 0)
    with pytest.raises(MaskReuseError, match="past round"):
        ledger.claim(1, 5)


def test_seeds_are_fresh_and_full_length() -> None:
    issuer = ZeroSumMaskIssuer(b"s", LAYOUT, 64)
    a, b = issuer.issue(1, 0, PARTIES), issuer.issue(2, 0, PARTIES)
    seeds = [g.seed for g in [*a.values(), *b.values()] if g.seed is not None]
    assert len(seeds) == 2 * (len(PARTIES) - 1)
    assert len(set(seeds)) == len(seeds) and all(len(s) == 32 for s in seeds)
    assert a["te-4"].correction is not None and a["te-4"].seed is None
    assert not np.array_equal(a["te-4"].correction, b["te-4"].correction)


def test_domain_separation_by_session_round_attempt_party_and_tensor() -> None:
    seed = fresh_seed()
    base = MaskDomain(b"s", 1, 0, "te-0")
    variants = [base, MaskDomain(b"t", 1, 0, "te-0"), MaskDomain(b"s", 2, 0, "te-0"),
                MaskDomain(b"s", 1, 1, "te-0"), MaskDomain(b"s", 1, 0, "te-1")]
    streams = [expand_mask(seed, d, [64, 64], 64) for d in variants]
    assert np.array_equal(streams[0], expand_mask(seed, base, [64, 64], 64))  # deterministic
    heads = {s[:64].tobytes() for s in streams} | {s[64:].tobytes() for s in streams}
    assert len(heads) == 2 * len(variants)  # every domain and every tensor gets its own keystream


def test_a_single_party_round_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        ZeroSumMaskIssuer(b"s", LAYOUT, 64).issue(1, 0, ["te-0"])


def test_bad_seed_length_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        expand_mask(b"short", MaskDomain(b"s", 1, 0, "p"), [4], 64)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("layout", [LAYOUT, [70_001, 3, 40_000]])  # the second spans several keystream chunks
def test_add_to_adds_the_same_mask_in_place(bits: int, layout: list[int]) -> None:
    codec = FixedPointCodec(8.0, 16, bits)
    encoded = codec.encode(np.random.default_rng(0).uniform(-1, 1, sum(layout)))
    grants = ZeroSumMaskIssuer(b"s" * 16, layout, bits).issue(1, 0, PARTIES[:3])
    for grant in grants.values():  # two seed grants and the last party's correction
        vector = encoded.copy()
        assert grant.add_to(vector, layout, bits) is vector
        np.testing.assert_array_equal(vector, encoded + grant.materialize(layout, bits))
    seed_grant, last = grants[PARTIES[0]], grants[PARTIES[2]]
    with pytest.raises(ValueError, match="does not fit"):
        seed_grant.add_to(encoded[:-1].copy(), layout, bits)
    with pytest.raises(ValueError, match="does not fit"):
        seed_grant.add_to(encoded[::2], [encoded[::2].size], bits)  # not contiguous
    short = MaskGrant(last.domain, correction=last.correction[:-1])  # type: ignore[index]
    with pytest.raises(ValueError, match="layout needs"):
        short.add_to(encoded.copy(), layout, bits)
    with pytest.raises(ValueError, match="writable contiguous"):
        expand_mask(fresh_seed(), seed_grant.domain, layout, bits, out=np.empty(sum(layout), np.float64))


def test_expand_mask_into_a_buffer_matches_and_spans_several_zero_blocks() -> None:
    domain = MaskDomain(b"s" * 16, 1, 0, "te-0")
    seed, layout = fresh_seed(), [70_000, 3, 1]  # 560 KB of keystream: more than one zero block
    out = np.zeros(sum(layout), np.uint64)
    expand_mask(seed, domain, layout, 64, out=out)
    np.testing.assert_array_equal(out, expand_mask(seed, domain, layout, 64))
    assert byte_uniformity_p(out) > UNIFORM_ALPHA  # every chunk is keystream: no zero block leaks through
