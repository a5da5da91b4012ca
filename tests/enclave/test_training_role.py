"""A training enclave's masking step: it encodes with weight n_i / N (the admin's attempt total) into the
payload it seals, adds the mask in place, re-encodes for a remask, and refuses a total it cannot be part of."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.masks import MaskDomain, MaskGrant, MaskLedger, fresh_seed
from siegecraft.enclave.roles.base import ADMIN, Message
from siegecraft.enclave.roles.training import TrainingRole
from siegecraft.enclave.wire import unpack

SESSION = b"s" * 16
LAYOUT = [700, 300]


class FixedTrainer:
    num_samples = 30

    def update(self, rnd: int, weights: np.ndarray) -> np.ndarray:
        return np.random.default_rng(rnd).normal(0, 0.5, sum(LAYOUT)).astype(np.float32) - 0.01 * weights


def training_role(codec: FixedPointCodec, hint: Any = None) -> tuple[TrainingRole, list[tuple[str, str, Any]]]:
    """The role's training and masking logic without a process, channels or attestation (round 1 is
    trained with the owner's `hint`); `sent` records its sends."""
    role = TrainingRole.__new__(TrainingRole)
    role.id, role.session, role.codec, role.parent = "te-4", SESSION, codec, "agg-1-0"
    role.client_id, role.num_samples, role.rounding_seed, role.faults = 4, 30, 0, {}
    role.max_update_norm = None
    role.ledger, role.payload_scratch, role.trainer = MaskLedger(), bytearray(), FixedTrainer()
    sent: list[tuple[str, str, Any]] = []
    role.send = lambda dst, kind, meta, arrays=None: sent.append((dst, kind, meta))  # type: ignore[method-assign]
    # a payload is a view of the role's scratch buffer, valid until its next one: keep a copy
    role.send_payload = lambda dst, kind, payload, rnd: sent.append((dst, kind, bytes(payload)))  # type: ignore[method-assign]
    role.audit = lambda *a, **k: None  # type: ignore[method-assign]
    role._train(1, np.ones(sum(LAYOUT), np.float32), hint)
    sent.clear()  # READY
    return role, sent


def expected_encoding(codec: FixedPointCodec, total: int) -> np.ndarray:
    delta = FixedTrainer().update(1, np.ones(sum(LAYOUT), np.float32))
    return codec.encode(delta, weight=30 / total, rng=np.random.default_rng([0, 4, 1, total]))


def mask_message(seed: bytes, attempt: int, total: int) -> Message:
    meta = {"rnd": 1, "attempt": attempt, "layout": LAYOUT, "total_samples": total, "seed": seed.hex()}
    return Message("MASK", ADMIN, meta, {}, True)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("hint", [None, 120, 30])  # no hint, the admin's total, an owner's lie (weight 1)
def test_masked_payload_is_the_admins_weighting_plus_the_mask_and_a_remask_reencodes(bits: int, hint: Any) -> None:
    codec = FixedPointCodec(modulus_bits=bits, scale_bits=27 if bits == 32 else 40, rounding="stochastic")
    role, sent = training_role(codec, hint)
    assert (role.pending_update.encoded is not None) == (hint is not None)  # type: ignore[union-attr]
    delta = role.pending_update.delta.copy()  # type: ignore[union-attr]
    for attempt, total in ((0, 120), (1, 90)):  # attempt 1: a party dropped, the survivors hold 90 samples
        seed = fresh_seed()
        role.handle(mask_message(seed, attempt, total))
        (parent, kind, payload), (admin, submitted, _) = sent[-2:]
        assert (parent, kind, admin, submitted) == ("agg-1-0", "MASKED", ADMIN, "SUBMITTED")
        meta, arrays = unpack(payload)
        assert (meta["attempt"], meta["counts"]) == (attempt, {"4": 30})
        mask = MaskGrant(MaskDomain(SESSION, 1, attempt, "te-4"), seed=seed).materialize(LAYOUT, bits)
        np.testing.assert_array_equal(arrays["v"], expected_encoding(codec, total) + mask)
    np.testing.assert_array_equal(role.pending_update.delta, delta)  # type: ignore[union-attr]  # kept for a remask


def test_a_total_smaller_than_the_partys_own_samples_is_refused() -> None:
    role, sent = training_role(FixedPointCodec(), hint=29)  # an owner's hint below 30 is ignored too
    assert role.pending_update is not None and role.pending_update.encoded is None
    role.handle(mask_message(fresh_seed(), 0, 29))  # a weight above one could overflow the sum
    ((dst, kind, meta),) = sent
    assert (dst, kind) == (ADMIN, "ALERT") and "cannot include this party's 30" in meta["reason"]
