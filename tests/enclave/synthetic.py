"""Synthetic deployments for the process-level tests: parties whose updates the test can recompute."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from siegecraft.enclave import CodeBundle, FixedPointCodec, PartySpec, SessionConfig
from siegecraft.enclave.synthetic_workload import SYNTHETIC_ENTRYPOINT, synthetic_update
from siegecraft.enclave.wire import Envelope, pack, unpack

LAYOUT = [1_200, 300, 500]
DIM = sum(LAYOUT)
BUNDLE = CodeBundle(SYNTHETIC_ENTRYPOINT, {"model": "synthetic", "secret_hyperparameter": "kappa-7731"})


def parties(n: int, faults: dict[int, dict[str, Any]] | None = None) -> list[PartySpec]:
    faults = faults or {}
    return [PartySpec(i, {"seed": 1000 + i, "num_samples": 20 + 7 * i, "amplitude": 0.5}, faults.get(i, {}))
            for i in range(n)]


def config(n: int, **kwargs: Any) -> SessionConfig:
    faults = kwargs.pop("faults", None)
    base: dict[str, Any] = {"fanout": 2, "round_timeout_s": 10.0, "start_timeout_s": 60.0}
    return SessionConfig(parties(n, faults), BUNDLE, LAYOUT, **{**base, **kwargs})


def global_weights(rnd: int) -> np.ndarray:
    return np.random.default_rng(rnd).normal(0, 0.3, DIM).astype(np.float32)


def encoded_update(cfg: SessionConfig, client: int, rnd: int, weights: np.ndarray, clients: list[int]) -> np.ndarray:
    """Exactly what the training enclave of `client` encodes in an attempt whose survivors are `clients`:
    its update weighted by its share of their samples (nearest rounding needs no generator)."""
    party = next(p for p in cfg.parties if p.client_id == client)
    total = sum(p.data["num_samples"] for p in cfg.parties if p.client_id in clients)
    delta = synthetic_update(party.data, rnd, weights)
    return cfg.codec.encode(delta, weight=party.data["num_samples"] / total)


def plaintext_mean(cfg: SessionConfig, clients: list[int], rnd: int, weights: np.ndarray) -> tuple[np.ndarray, int]:
    """The sample-weighted mean update computed in the clear, in float64."""
    total, count = np.zeros(DIM), 0
    for p in cfg.parties:
        if p.client_id in clients:
            n = p.data["num_samples"]
            total += n * synthetic_update(p.data, rnd, weights).astype(np.float64)
            count += n
    return total / count, count


def mean_error_bound(codec: FixedPointCodec, n_parties: int) -> float:
    """Documented bound on the decoded mean (the weights sum to one, so the sum is the mean): n * 0.5/scale."""
    return codec.error_bound(n_parties) + 1e-12


def swap_public_key(kind: str, src: str, key: bytes) -> Callable[[Envelope, bytes], list[bytes]]:
    """A host hook that replaces the public key in `src`'s plaintext `kind` handshake message with `key`."""

    def swap(env: Envelope, data: bytes) -> list[bytes]:
        if env.kind == kind and env.src == src:
            meta, _ = unpack(Envelope.from_bytes(data).body)
            meta["public_key"] = key.hex()
            return [Envelope(env.kind, env.src, env.dst, env.seq, pack(meta)).to_bytes()]
        return [data]

    return swap


def read_audit(audit_dir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(audit_dir.glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records
