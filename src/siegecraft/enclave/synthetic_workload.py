"""Torch-free trainers for protocol tests and benchmarks: deterministic synthetic updates.

`synthetic_trainer` is a bundle entrypoint whose "data" is a seed; `synthetic_update` recomputes the
same update in-process, so tests can compare what the enclaves aggregate with the plaintext truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SYNTHETIC_ENTRYPOINT = "siegecraft.enclave.synthetic_workload:synthetic_trainer"


def synthetic_update(data: dict[str, Any], rnd: int, global_weights: np.ndarray) -> np.ndarray:
    """The update of a synthetic data owner: uniform noise in [-amplitude, amplitude) plus a pull to zero.

    Computed in float32 (a model update's precision) with one random draw and in-place arithmetic, so a
    benchmark's per-party cost is the protocol's, not the stand-in trainer's."""
    rng = np.random.default_rng([int(data["seed"]), int(rnd)])
    amplitude = float(data.get("amplitude", 1.0))
    update = rng.random(global_weights.shape, dtype=np.float32)
    update *= np.float32(2.0 * amplitude)
    update -= np.float32(amplitude)
    update -= np.float32(0.1) * np.asarray(global_weights, dtype=np.float32)
    return update


class SyntheticTrainer:
    """Returns `synthetic_update` for its data; `num_samples` is part of the synthetic data."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.num_samples = int(data.get("num_samples", 1))

    def update(self, rnd: int, global_weights: np.ndarray) -> np.ndarray:
        return synthetic_update(self.data, rnd, global_weights)


def synthetic_trainer(*, params: dict[str, Any], data: dict[str, Any], client_id: int) -> SyntheticTrainer:
    """Bundle entrypoint for synthetic data owners (`params` and `client_id` are unused)."""
    del params, client_id
    return SyntheticTrainer(data)
