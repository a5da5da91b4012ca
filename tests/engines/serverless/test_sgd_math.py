"""Shard layout, batch slicing and the sharded SGD update agree with torch."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from siegecraft.engines.serverless.layout import shard_bounds, split
from siegecraft.engines.serverless.specs import Config, JobSpec, PlanSpec
from siegecraft.engines.serverless.store import StoreSpec
from siegecraft.engines.serverless.worker import batch_indices, sgd_step


def test_shards_cover_the_vector_contiguously() -> None:
    for length, n in [(10, 3), (7, 7), (5, 8), (1000, 16)]:
        bounds = shard_bounds(length, n)
        assert len(bounds) == n and bounds[0][0] == 0 and bounds[-1][1] == length
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        assert max(e - s for s, e in bounds) - min(e - s for s, e in bounds) <= 1
    v = np.arange(11, dtype=np.float32)
    assert np.array_equal(np.concatenate(split(v, 4)), v)


def test_sharded_momentum_sgd_equals_torch_sgd() -> None:
    torch.manual_seed(0)
    w = torch.randn(50, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    w_np, m_np = w.detach().numpy().copy(), np.zeros(50, dtype=np.float32)
    for _ in range(4):
        g = torch.randn(50)
        w.grad = g.clone()
        opt.step()
        parts = [sgd_step(ws, ms, gs, lr=0.1, momentum=0.9, weight_decay=0.01)
                 for ws, ms, gs in zip(split(w_np, 3), split(m_np, 3), split(g.numpy(), 3))]  # fmt: skip
        w_np = np.concatenate([p[0] for p in parts])
        m_np = np.concatenate([p[1] for p in parts])
    np.testing.assert_allclose(w_np, w.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_worker_batches_partition_each_epoch_without_overlap() -> None:
    job = JobSpec("j", StoreSpec("memory", "127.0.0.1", 1), "cnn", 1, 4, 12, 100, 10, seed=3)
    plan = PlanSpec(0, epoch=1, config=Config(3, 1024, 4), start_it=5, end_it=13, epoch_offset=4)
    seen = np.concatenate([batch_indices(job, plan, it, w) for it in range(5, 13) for w in range(3)])
    assert len(seen) == 8 * 3 * 4 and len(set(seen.tolist())) == len(seen)
    other_epoch = PlanSpec(1, epoch=2, config=Config(3, 1024, 4), start_it=5, end_it=13, epoch_offset=4)
    assert not np.array_equal(batch_indices(job, plan, 5, 0), batch_indices(job, other_epoch, 5, 0))
