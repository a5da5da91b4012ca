"""Zero-sum masks: per-round random masks that hide each update and cancel in the total.

Construction (admin-drawn, not pairwise): for the parties p_1..p_n of a round attempt the admin draws
fresh 256-bit seeds s_1..s_{n-1} from the OS generator; party p_i's mask is PRG(s_i) expanded with
AES-256-CTR under a key bound to (session, round, attempt, party, tensor). The last party gets no seed
but the correction vector -(sum of the other masks) mod M, so the n masks sum to zero.

Blinded attempts (what the protocol uses): the correction is B - (sum of the other masks), where B is
one more seeded mask, bound to the root. The n masks then sum to B, so the root's total of an attempt
stays masked until the admin sends it B's seed, which it does for one attempt per round at most (its
commit). A party's masked input can therefore be unmasked in at most one sum, whatever the host does.

Why not pairwise seeds (SecAgg): pairwise masks cost every party O(n * d) and need secret sharing to
survive dropouts. Citadel already trusts its attested admin, so here each party only ever learns its
own mask: unmasking one party needs the admin or all n-1 other parties, dropouts are handled by simply
re-drawing masks for the survivors, and a party's cost is O(d) whatever n is. The admin pays O(n * d)
to expand the seeds once; it does so while the training enclaves train, off the critical path.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from siegecraft.enclave.errors import MaskReuseError

SEED_BYTES = 32
_ZERO_IV = bytes(16)
#: keystream = AES-CTR over zeros; the zeros come from this one cache-sized block, chunk by chunk
_ZEROS = memoryview(bytes(1 << 18))


def fresh_seed() -> bytes:
    """A 256-bit seed from the operating system's cryptographic generator."""
    return os.urandom(SEED_BYTES)


@dataclass(frozen=True)
class MaskDomain:
    """Everything a mask is bound to; two different domains never share keystream."""

    session: bytes
    rnd: int
    attempt: int
    party: str

    def tensor_label(self, tensor: int, modulus_bits: int) -> bytes:
        party = self.party.encode()
        return b"".join([
            b"citadel/mask/v1\0", struct.pack(">H", len(self.session)), self.session,
            struct.pack(">QIH", self.rnd, self.attempt, len(party)), party,
            struct.pack(">IB", tensor, modulus_bits),
        ])


def _keystream(seed: bytes, domain: MaskDomain, tensor: int, modulus_bits: int) -> CipherContext:
    """AES-256-CTR keyed by HMAC-SHA256(seed, domain label of the tensor): a PRF keyed by the secret seed,
    so keystreams of different rounds, attempts, parties and tensors are independent."""
    key = hmac.new(seed, domain.tensor_label(tensor, modulus_bits), hashlib.sha256).digest()
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()


def _combine(seed: bytes, domain: MaskDomain, layout: Sequence[int], modulus_bits: int, vector: np.ndarray,
             out: np.ndarray, op: np.ufunc) -> np.ndarray:
    """out = op(vector, mask) with the mask of (seed, domain) generated one cache-sized chunk at a time."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"mask seeds must be {SEED_BYTES} bytes, got {len(seed)}")
    chunk = np.empty(len(_ZEROS) // out.itemsize, dtype=out.dtype)
    chunk_bytes = memoryview(chunk.view(np.uint8))
    offset = 0
    for tensor, size in enumerate(layout):
        stream = _keystream(seed, domain, tensor, modulus_bits)
        for start in range(offset, offset + size, chunk.size):
            n = min(chunk.size, offset + size - start)
            stream.update_into(_ZEROS[:n * out.itemsize], chunk_bytes[:n * out.itemsize])
            op(vector[start:start + n], chunk[:n], out=out[start:start + n])
        offset += size
    return out


def expand_mask(seed: bytes, domain: MaskDomain, layout: Sequence[int], modulus_bits: int,
                out: np.ndarray | None = None) -> np.ndarray:
    """Deterministic uniform integers mod 2^modulus_bits for every tensor in `layout`, concatenated
    (written into `out` when given: a contiguous vector of the modulus's dtype and the layout's size).

    Tensor t's keystream is `_keystream(seed, domain, t)`.
    """
    if len(seed) != SEED_BYTES:
        raise ValueError(f"mask seeds must be {SEED_BYTES} bytes, got {len(seed)}")
    dtype = np.dtype(np.uint64 if modulus_bits == 64 else np.uint32)
    total = int(sum(layout))
    if out is None:
        out = np.empty(total, dtype=dtype)
    elif out.dtype != dtype or out.shape != (total,) or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"mask output must be a writable contiguous {dtype.name}[{total}], got {out.dtype}{out.shape}")
    offset = 0
    for tensor, size in enumerate(layout):
        # keystream = AES-CTR encryption of zeros, written straight into the output
        window = memoryview(out[offset:offset + size].view(np.uint8))
        stream = _keystream(seed, domain, tensor, modulus_bits)
        for start in range(0, window.nbytes, len(_ZEROS)):
            chunk = window[start:start + len(_ZEROS)]
            stream.update_into(_ZEROS[:chunk.nbytes], chunk)
        offset += size
    return out


@dataclass(frozen=True)
class MaskGrant:
    """What the admin sends one party: a seed, or (for the last party) the correction vector."""

    domain: MaskDomain
    seed: bytes | None = field(default=None, repr=False)
    correction: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.seed is None) == (self.correction is None):
            raise ValueError("a mask grant carries exactly one of seed or correction")

    def materialize(self, layout: Sequence[int], modulus_bits: int) -> np.ndarray:
        """The party's mask vector."""
        if self.seed is not None:
            return expand_mask(self.seed, self.domain, layout, modulus_bits)
        assert self.correction is not None
        if self.correction.size != sum(layout):
            raise ValueError(f"correction has {self.correction.size} entries, layout needs {sum(layout)}")
        return self.correction

    def add_to(self, vector: np.ndarray, layout: Sequence[int], modulus_bits: int,
               out: np.ndarray | None = None) -> np.ndarray:
        """out = vector + this mask (mod M); `out` defaults to `vector` itself (in place). Returns `out`.
        The keystream is generated one cache-sized chunk at a time and added straight away, so the mask
        never exists as a whole.

        Raises ValueError when the mask cannot fit `vector` (a malformed correction or layout)."""
        dtype = np.dtype(np.uint64 if modulus_bits == 64 else np.uint32)
        total = int(sum(layout))
        out = vector if out is None else out
        for arr in (vector, out):
            if arr.dtype != dtype or arr.shape != (total,) or not arr.flags.c_contiguous:
                raise ValueError(f"mask {dtype.name}[{total}] does not fit the update {arr.dtype}{arr.shape}")
        if not out.flags.writeable:
            raise ValueError("the masked output is not writable")
        if self.seed is None:
            correction = self.materialize(layout, modulus_bits)  # checks the correction's size
            if correction.dtype != dtype or correction.shape != vector.shape:
                raise ValueError(f"correction {correction.dtype}{correction.shape} does not fit the update "
                                 f"{vector.dtype}{vector.shape}")
            return np.add(vector, correction, out=out)
        return _combine(self.seed, self.domain, layout, modulus_bits, vector, out, np.add)

    def remove_from(self, vector: np.ndarray, layout: Sequence[int], modulus_bits: int) -> np.ndarray:
        """vector -= this (seeded) mask (mod M), in place: how the root lifts an attempt's blinding."""
        if self.seed is None:
            raise ValueError("only a seeded mask can be removed")
        dtype = np.dtype(np.uint64 if modulus_bits == 64 else np.uint32)
        if vector.dtype != dtype or vector.shape != (int(sum(layout)),) or not vector.flags.writeable:
            raise ValueError(f"mask {dtype.name}[{int(sum(layout))}] does not fit {vector.dtype}{vector.shape}")
        return _combine(self.seed, self.domain, layout, modulus_bits, vector, vector, np.subtract)


class ZeroSumMaskIssuer:
    """The admin's side: draws the masks of one round attempt and refuses to ever re-issue them."""

    def __init__(self, session: bytes, layout: Sequence[int], modulus_bits: int) -> None:
        self.session = session
        self.layout = [int(s) for s in layout]
        self.modulus_bits = modulus_bits
        self._issued: set[tuple[int, int, str]] = set()

    def issue(self, rnd: int, attempt: int, parties: Sequence[str]) -> dict[str, MaskGrant]:
        """Fresh masks for `parties` (at least two) in (rnd, attempt), summing to zero mod M."""
        return self._issue(rnd, attempt, parties, None)

    def issue_blinded(self, rnd: int, attempt: int, parties: Sequence[str],
                      holder: str) -> tuple[dict[str, MaskGrant], MaskGrant]:
        """Fresh masks for `parties` that sum to a blinding mask B (not to zero), and B's grant for `holder`.

        The sum of every party's masked input is then still masked by B: whoever adds them up (the
        root) learns nothing until it is given B's seed, and the admin gives it for at most one attempt
        of a round. So no schedule of the host can make two attempts' totals readable."""
        blinding = MaskGrant(MaskDomain(self.session, rnd, attempt, holder), seed=fresh_seed())
        return self._issue(rnd, attempt, parties, blinding), blinding

    def _issue(self, rnd: int, attempt: int, parties: Sequence[str],
               blinding: MaskGrant | None) -> dict[str, MaskGrant]:
        if len(parties) < 2:
            raise ValueError(f"zero-sum masking needs at least 2 parties, got {len(parties)}: a single "
                             "party's 'sum' is its own update")
        if len(set(parties)) != len(parties):
            raise ValueError(f"duplicate parties in {list(parties)}")
        reused = sorted(p for p in parties if (rnd, attempt, p) in self._issued)
        if reused:
            raise MaskReuseError(f"masks for round {rnd} attempt {attempt} were already issued to {reused}; "
                                 "a mask is never issued twice")
        self._issued.update((rnd, attempt, p) for p in parties)
        grants: dict[str, MaskGrant] = {}
        dtype = np.uint64 if self.modulus_bits == 64 else np.uint32
        correction = np.zeros(sum(self.layout), dtype=dtype)
        if blinding is not None:  # the masks sum to B instead of zero
            blinding.add_to(correction, self.layout, self.modulus_bits)
        for party in parties[:-1]:  # each mask is subtracted chunk by chunk as its keystream is generated
            domain = MaskDomain(self.session, rnd, attempt, party)
            seed = fresh_seed()
            _combine(seed, domain, self.layout, self.modulus_bits, correction, correction, np.subtract)
            grants[party] = MaskGrant(domain, seed=seed)
        last = parties[-1]
        grants[last] = MaskGrant(MaskDomain(self.session, rnd, attempt, last), correction=correction)
        return grants


class MaskLedger:
    """A party's side: each (round, attempt) mask is applied at most once, and rounds only move forward."""

    def __init__(self) -> None:
        self._used: set[tuple[int, int]] = set()
        self._latest_round = -1

    def claim(self, rnd: int, attempt: int) -> None:
        """Record that the mask of (rnd, attempt) is being used; raise MaskReuseError if it was before."""
        if (rnd, attempt) in self._used:
            raise MaskReuseError(f"the mask of round {rnd} attempt {attempt} was already used; refusing reuse")
        if rnd < self._latest_round:
            raise MaskReuseError(f"mask for past round {rnd} refused (current round {self._latest_round})")
        self._used.add((rnd, attempt))
        self._latest_round = rnd
