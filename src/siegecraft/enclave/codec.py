"""Fixed-point codec: real-valued updates to integers modulo M = 2^32 or 2^64, and back.

Masking only hides anything in a finite group, so updates are clipped to [-clip, clip], multiplied by
a public weight, scaled by 2^scale_bits and rounded. Integers add modulo M; a sum decodes correctly as
long as its true value stays inside (-M/2, M/2), which `check_capacity` enforces before any work is done.

The protocol weights each party by its share of the attempt's samples (n_i / N, so the weights sum to
one): the total is then the weighted mean itself, bounded by `clip` whatever the number of parties or
samples. That is why 2^32 is the default: clip 8 with 27 scale bits uses 2^30 of the 2^31 signed range,
and the unused half absorbs the rounding of any realistic number of parties. 2^64 buys 32 more bits of
precision at twice the bytes on the wire.

Error bound (tested): each party's rounding error is at most 0.5/scale with nearest rounding and below
1/scale with stochastic rounding (which is unbiased), so a sum of n encodings decodes within
n * 0.5/scale (nearest) or n/scale (stochastic) of the sum of the clipped, weighted inputs. Decoding
converts to float64, which is exact while the integer total stays below 2^53.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from siegecraft.enclave.errors import CodecError

Rounding = Literal["nearest", "stochastic"]
_UNSIGNED = {32: np.uint32, 64: np.uint64}
_SIGNED = {32: np.int32, 64: np.int64}
#: elements encoded per block (the float64 scratch, 512 KiB, stays in cache)
ENCODE_BLOCK = 1 << 16


@dataclass(frozen=True)
class FixedPointCodec:
    """Encode floats as integers mod 2^modulus_bits with 2^scale_bits steps per unit."""

    clip: float = 8.0
    scale_bits: int = 27
    modulus_bits: int = 32
    rounding: Rounding = "nearest"

    def __post_init__(self) -> None:
        if self.modulus_bits not in _UNSIGNED:
            raise ValueError(f"modulus_bits must be 32 or 64, got {self.modulus_bits!r}")
        if not 0 <= self.scale_bits <= self.modulus_bits - 2:
            raise ValueError(f"scale_bits must be in 0..{self.modulus_bits - 2}, got {self.scale_bits!r}")
        if not self.clip > 0 or not np.isfinite(self.clip):
            raise ValueError(f"clip must be a positive finite number, got {self.clip!r}")
        if self.rounding not in ("nearest", "stochastic"):
            raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {self.rounding!r}")
        self.check_capacity(1.0)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FixedPointCodec:
        return cls(float(config["clip"]), int(config["scale_bits"]), int(config["modulus_bits"]),
                   config.get("rounding", "nearest"))

    def to_config(self) -> dict[str, Any]:
        return {"clip": self.clip, "scale_bits": self.scale_bits, "modulus_bits": self.modulus_bits,
                "rounding": self.rounding}

    @property
    def scale(self) -> int:
        return 1 << self.scale_bits

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        """The unsigned integer type whose natural wraparound is addition mod M."""
        return _UNSIGNED[self.modulus_bits]

    def capacity(self) -> float:
        """The largest total weight a sum can hold without wrapping (the protocol's weights sum to 1)."""
        return (self.modulus / 2) / (self.clip * self.scale)

    def check_capacity(self, total_weight: float, parties: int = 0) -> None:
        """Raise CodecError unless total_weight * clip * scale + parties < M/2: no sum of `parties`
        encodings whose weights add up to `total_weight` can wrap around (each rounding adds < 1 unit)."""
        if not total_weight * self.clip * self.scale + parties < self.modulus / 2:
            raise CodecError(
                f"a sum of total weight {total_weight:g} over {parties} parties could wrap around: need "
                f"total_weight * clip * scale + parties < M/2, but {total_weight:g} * {self.clip:g} * "
                f"2^{self.scale_bits} + {parties} >= 2^{self.modulus_bits - 1}; lower clip or scale_bits, or use "
                f"modulus_bits=64 (capacity {self.capacity():.6g})"
            )

    def error_bound(self, n: int) -> float:
        """Largest decode error of a sum of n encodings (in value units, before any division)."""
        per_party = 0.5 if self.rounding == "nearest" else 1.0
        return n * per_party / self.scale

    def encode(self, x: np.ndarray, *, weight: float = 1.0, rng: np.random.Generator | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
        """Clip `x` to [-clip, clip], multiply by `weight`, scale and round; returns dtype() integers
        shaped like `x` (written into `out` when given: a writable contiguous dtype() vector of x.size)."""
        if weight <= 0 or not np.isfinite(weight):
            raise CodecError(f"weight must be positive and finite, got {weight!r}")
        self.check_capacity(weight)
        if self.rounding == "stochastic" and rng is None:
            raise CodecError("stochastic rounding needs a seeded numpy Generator (rng=...)")
        x = np.asarray(x)
        if not np.isfinite(x).all():  # checked in the input's own dtype (half the bytes for float32)
            raise CodecError("cannot encode NaN or infinite values")
        # Scaling first and clipping to the scaled bound gives the same float64 values as clipping first
        # (multiplying by a positive constant is monotone under rounding). Working block by block keeps
        # the float64 intermediate in cache: only the input is read and the integers written.
        factor = float(weight) * self.scale
        bound = self.clip * factor
        flat = x.reshape(-1)
        if out is None:
            out = np.empty(flat.size, dtype=self.dtype)
        elif (out.dtype != self.dtype or out.shape != (flat.size,) or not out.flags.c_contiguous
              or not out.flags.writeable):
            raise CodecError(f"encode output must be a writable contiguous {np.dtype(self.dtype).name}[{flat.size}], "
                             f"got {out.dtype}{out.shape}")
        signed = out.view(_SIGNED[self.modulus_bits])
        scratch = np.empty(min(ENCODE_BLOCK, flat.size), dtype=np.float64)
        for start in range(0, flat.size, ENCODE_BLOCK):
            block = flat[start:start + ENCODE_BLOCK]
            scaled = scratch[:block.size]
            np.multiply(block, factor, out=scaled, dtype=np.float64)
            np.clip(scaled, -bound, bound, out=scaled)
            target = signed[start:start + block.size]
            if self.rounding == "nearest":
                np.rint(scaled, out=target, casting="unsafe")  # round and convert in one pass
            else:
                assert rng is not None  # draws continue the same stream block by block
                floor = np.floor(scaled)
                np.add(floor, rng.random(block.size) < (scaled - floor), out=target, casting="unsafe")
        return out.reshape(x.shape)

    def decode(self, y: np.ndarray, *, weight: float = 1.0) -> np.ndarray:
        """Signed value of each integer (centred mod M), divided by scale and `weight`; float64."""
        y = np.asarray(y)
        if y.dtype != self.dtype:
            raise CodecError(f"expected {np.dtype(self.dtype).name} integers, got {y.dtype}")
        return y.view(_SIGNED[self.modulus_bits]).astype(np.float64) / (self.scale * float(weight))

    def zeros(self, size: int) -> np.ndarray:
        return np.zeros(size, dtype=self.dtype)

    def add(self, total: np.ndarray, term: np.ndarray) -> np.ndarray:
        """total += term modulo M, in place; returns total."""
        if total.dtype != self.dtype or term.dtype != self.dtype or total.shape != term.shape:
            raise CodecError(f"cannot add {term.dtype}{term.shape} to {total.dtype}{total.shape}")
        np.add(total, term, out=total)
        return total
