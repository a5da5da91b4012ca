"""Integration API for the federated engine: torch weights in, the zero-sum aggregated mean update out.

`CitadelRuntime(spec)` launches the admin, one training enclave per data owner, the aggregator tree
and the root through the attestation backend `spec.attestation` (SIMULATION with "mock", the only
built-in one: OS processes and a mock quoting authority, see docs/citadel.md); each data owner
provisions its partition (dataset name and indices) to its attested enclave.
`run_round` returns the sample-weighted mean of (local - global) over the surviving clients, which
only ever exists as the unmasked total at the root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from siegecraft.core.models import build_model
from siegecraft.enclave.backends import backend_names
from siegecraft.enclave.bundle import CodeBundle
from siegecraft.enclave.codec import FixedPointCodec
from siegecraft.enclave.session import DROPOUT_POLICIES, CitadelSession, PartySpec, SessionConfig
from siegecraft.enclave.torch_workload import DEFAULT_TRAIN_FN, TORCH_ENTRYPOINT, tensor_layout

if TYPE_CHECKING:
    from typing_extensions import Self


@dataclass
class CitadelSpec:
    """What to deploy: data owners' partitions, the model owner's model and training recipe, protocol knobs."""

    dataset: str
    data_options: dict[str, Any]
    data_dir: str | None
    partitions: list[np.ndarray]
    model: str
    model_options: dict[str, Any]
    train: dict[str, Any]
    seed: int
    fanout: int = 10
    on_dropout: str = "remask"
    clip: float = FixedPointCodec.clip
    scale_bits: int = FixedPointCodec.scale_bits
    modulus_bits: int = FixedPointCodec.modulus_bits
    max_update_norm: float | None = None
    round_timeout_s: float = 120.0
    start_timeout_s: float = 300.0
    train_fn: str = DEFAULT_TRAIN_FN
    attestation: str = "mock"
    session_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> FixedPointCodec:
        """Fail before launching anything: bad knobs, empty partitions, or a sum that could wrap around."""
        if self.attestation not in backend_names():
            raise ValueError(f"attestation must be one of {backend_names()}, got {self.attestation!r}")
        if self.on_dropout not in DROPOUT_POLICIES:
            raise ValueError(f"on_dropout must be one of {DROPOUT_POLICIES}, got {self.on_dropout!r}")
        if self.fanout < 2:
            raise ValueError(f"fanout must be >= 2, got {self.fanout}")
        if len(self.partitions) < 2:
            raise ValueError(f"zero-sum aggregation needs at least 2 data owners, got {len(self.partitions)}")
        empty = [i for i, p in enumerate(self.partitions) if len(p) == 0]
        if empty:
            raise ValueError(f"data owners {empty} have empty partitions")
        codec = FixedPointCodec(self.clip, self.scale_bits, self.modulus_bits)
        codec.check_capacity(1.0, parties=len(self.partitions))  # the weights n_i / N sum to one
        return codec


@dataclass
class RoundResult:
    """One round's outcome as the model owner sees it."""

    mean_update: torch.Tensor
    num_samples: int
    survivors: list[int]
    dropped: list[int]
    timings: dict[str, float]
    attempt: int = 0
    clipped_updates: int = 0
    clipped_coordinates: int = 0


class CitadelRuntime:
    """Context manager: starts all role processes on construction, stops them on `close()`."""

    def __init__(self, spec: CitadelSpec) -> None:
        codec = spec.validate()
        self.spec = spec
        self.layout = tensor_layout(build_model(spec.model, **spec.model_options))
        parties = [
            PartySpec(client, {"dataset": spec.dataset, "options": dict(spec.data_options),
                               "data_dir": spec.data_dir, "indices": [int(i) for i in part]})
            for client, part in enumerate(spec.partitions)
        ]
        bundle = CodeBundle(TORCH_ENTRYPOINT, {
            "model": spec.model, "model_options": dict(spec.model_options), "train": dict(spec.train),
            "seed": spec.seed, "train_fn": spec.train_fn})
        config = SessionConfig(parties, bundle, self.layout, fanout=spec.fanout, on_dropout=spec.on_dropout,
                               codec=codec, rounding_seed=spec.seed, round_timeout_s=spec.round_timeout_s,
                               max_update_norm=spec.max_update_norm,
                               start_timeout_s=spec.start_timeout_s, attestation=spec.attestation,
                               **spec.session_options)
        self.session = CitadelSession(config)
        self.session.start()

    def run_round(self, rnd: int, global_weights: torch.Tensor, clients: list[int]) -> RoundResult:
        """Train `clients` from `global_weights` in their enclaves and return the unmasked mean update."""
        weights = global_weights.detach().to("cpu", torch.float32).reshape(-1).numpy()
        result = self.session.run_round(rnd, weights, list(clients))
        mean = torch.from_numpy(result.mean.astype(np.float32)).to(global_weights.dtype)
        return RoundResult(mean, result.num_samples, result.survivors, result.dropped, result.timings,
                           result.attempt, result.clipped_updates, result.clipped_coordinates)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
