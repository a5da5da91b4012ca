"""Shared fixtures: a tiny, fast federated experiment on sklearn's digits."""

from __future__ import annotations

from typing import Any

import pytest
import torch

# One intra-op thread: the suite spawns worker processes (enclaves, Hogwild, functions) that would
# otherwise oversubscribe a 2-core machine, and single-threaded kernels make float sums reproducible.
torch.set_num_threads(1)


def tiny_raw(**overrides: Any) -> dict[str, Any]:
    """A raw config dict for a federated run that takes about a second."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 1.0, "min_partition_size": 20},
        "model": {"name": "cnn", "options": {"width": 16, "hidden": 64}},
        "train": {"lr": 0.05, "momentum": 0.9, "batch_size": 32, "epochs": 2},
        "fl": {"rounds": 3, "clients": 4},
        "output": {"report": False},
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


@pytest.fixture
def tiny() -> dict[str, Any]:
    return tiny_raw()
