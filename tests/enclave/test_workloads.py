"""The synthetic trainer used by protocol tests and benchmarks: deterministic, float32, in range."""

from __future__ import annotations

import numpy as np

from siegecraft.enclave.synthetic_workload import synthetic_trainer, synthetic_update


def test_synthetic_update_is_deterministic_float32_and_bounded() -> None:
    weights = np.linspace(-1, 1, 10_000, dtype=np.float32)
    data = {"seed": 3, "amplitude": 0.5, "num_samples": 4}
    a, b = synthetic_update(data, 2, weights), synthetic_update(data, 2, weights)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, synthetic_update(data, 3, weights))  # each round draws afresh
    noise = a + np.float32(0.1) * weights
    assert noise.min() >= -0.5 - 1e-6 and noise.max() < 0.5 + 1e-6 and abs(float(noise.mean())) < 0.02
    trainer = synthetic_trainer(params={}, data=data, client_id=0)
    assert trainer.num_samples == 4 and np.array_equal(trainer.update(2, weights), a)
