"""Malicious data owners: an update of amplitude 1e6 is bounded inside its enclave, and no bound is silent."""

from __future__ import annotations

import numpy as np
import pytest

from siegecraft.enclave import CitadelSession, SessionConfig
from siegecraft.enclave.synthetic_workload import synthetic_update

from .synthetic import BUNDLE, DIM, LAYOUT, global_weights, mean_error_bound, parties

HONEST = [0, 1, 2, 3, 4]
ATTACKER = 5
BOUND = 13.5  # honest updates here have L2 norms of 12.9-13.1: none of them is scaled


def deployment(max_update_norm: float | None) -> SessionConfig:
    owners = parties(6)
    owners[ATTACKER].data["amplitude"] = 1e6
    return SessionConfig(owners, BUNDLE, LAYOUT, fanout=3, round_timeout_s=10.0, start_timeout_s=60.0,
                         max_update_norm=max_update_norm)


def expected_mean(cfg: SessionConfig, rnd: int, clients: list[int]) -> np.ndarray:
    """What the enclaves should compute: each update L2-bounded, clipped per coordinate, sample-weighted."""
    total, count = np.zeros(DIM), 0
    for p in cfg.parties:
        if p.client_id in clients:
            delta = synthetic_update(p.data, rnd, global_weights(rnd))  # float32, as in the enclave
            norm = float(np.linalg.norm(delta.astype(np.float64)))
            if cfg.max_update_norm is not None and norm > cfg.max_update_norm:
                delta = delta * (cfg.max_update_norm / norm)
            n = p.data["num_samples"]
            total += n * np.clip(delta.astype(np.float64), -cfg.codec.clip, cfg.codec.clip)
            count += n
    return total / count


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("bound", [None, BOUND])
def test_a_huge_update_is_bounded_and_counted(bound: float | None) -> None:
    cfg = deployment(bound)
    honest = expected_mean(cfg, 1, HONEST)
    with CitadelSession(cfg) as session:
        result = session.run_round(1, global_weights(1), [*HONEST, ATTACKER])
    assert np.abs(result.mean - expected_mean(cfg, 1, [*HONEST, ATTACKER])).max() <= mean_error_bound(cfg.codec, 6)
    if bound is None:  # only the codec's per-coordinate clip acts: the attacker dominates, and it is reported
        assert result.clipped_updates == 0
        assert result.clipped_coordinates > 0.99 * DIM
        assert correlation(result.mean, honest) < 0.5
    else:  # the enclave scaled the attacker's update down to the bound: it weighs like one honest party
        assert result.clipped_updates == 1
        assert result.clipped_coordinates == 0
        reference = deployment(None)
        reference.parties[ATTACKER].data["amplitude"] = 0.5  # the same federation with a sixth honest owner
        baseline = correlation(expected_mean(reference, 1, [*HONEST, ATTACKER]), honest)  # 0.83
        assert correlation(result.mean, honest) > baseline - 0.05


def test_the_bound_is_validated() -> None:
    with pytest.raises(ValueError, match="max_update_norm"):
        deployment(-1.0)
