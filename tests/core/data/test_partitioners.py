"""Client partitioners: completeness, determinism, label skew, and parameter errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from siegecraft.core.data.partition import (
    PARTITIONERS,
    EmptyPartitionError,
    class_counts,
    format_class_counts,
    partition,
)

LABELS = np.repeat(np.arange(10), 200)  # 2,000 samples, 10 balanced classes
METHODS = [
    ("iid", {}),
    ("dirichlet", {"alpha": 0.5, "min_partition_size": 1}),
    ("shards", {"classes_per_client": 2}),
]


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    everything = np.concatenate(parts)
    assert len(everything) == n and np.array_equal(np.sort(everything), np.arange(n))


@pytest.mark.parametrize("method, params", METHODS)
def test_every_index_used_exactly_once(method: str, params: dict) -> None:
    parts = partition(LABELS, 10, method, seed=3, **params)
    assert len(parts) == 10 and all(p.dtype == np.int64 and len(p) > 0 for p in parts)
    assert_exact_cover(parts, len(LABELS))


@pytest.mark.parametrize("method, params", METHODS)
def test_deterministic_by_seed(method: str, params: dict) -> None:
    a = partition(LABELS, 10, method, seed=1, **params)
    b = partition(LABELS, 10, method, seed=1, **params)
    c = partition(LABELS, 10, method, seed=2, **params)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_equal_and_classes_mixed() -> None:
    parts = partition(torch.from_numpy(LABELS), 7, "iid")  # tensors are accepted too
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    counts = class_counts(LABELS, parts, 10)
    assert (counts > 0).all()


def mean_top_class_share(parts: list[np.ndarray]) -> float:
    counts = class_counts(LABELS, parts, 10)
    return float((counts.max(axis=1) / counts.sum(axis=1)).mean())


def test_dirichlet_small_alpha_skews_large_alpha_is_near_uniform() -> None:
    skewed = partition(LABELS, 10, "dirichlet", alpha=0.05, min_partition_size=1, seed=0)
    uniform = partition(LABELS, 10, "dirichlet", alpha=1000.0, seed=0)
    assert mean_top_class_share(skewed) > 0.6
    assert mean_top_class_share(uniform) < 0.2
    sizes = [len(p) for p in uniform]
    assert max(sizes) - min(sizes) < 60  # about 200 each


def test_dirichlet_min_partition_size_is_honoured() -> None:
    # with this seed the first draw leaves some client under 10 samples, so redraws are needed
    assert min(len(p) for p in partition(LABELS, 20, "dirichlet", alpha=0.1, seed=4)) < 10
    parts = partition(LABELS, 20, "dirichlet", alpha=0.1, min_partition_size=10, seed=4)
    assert min(len(p) for p in parts) >= 10
    assert_exact_cover(parts, len(LABELS))
    with pytest.raises(ValueError, match="min_partition_size"):
        partition(LABELS, 20, "dirichlet", alpha=0.1, min_partition_size=500)
    with pytest.raises(ValueError, match="no draw in 100"):
        partition(LABELS, 20, "dirichlet", alpha=0.01, min_partition_size=95, seed=0)


def test_empty_client_error_names_the_client() -> None:
    labels = np.repeat([0, 1], 50)
    with pytest.raises(EmptyPartitionError) as info:
        partition(labels, 40, "dirichlet", alpha=0.01, seed=0)
    message = str(info.value)
    match = re.search(r"client (\d+) received 0 samples", message)
    assert match is not None and 0 <= int(match.group(1)) < 40
    assert "min_partition_size" in message and isinstance(info.value, ValueError)


def test_shards_give_each_client_at_most_k_classes() -> None:
    for k in (1, 2, 4):  # shard size 200/k: shards never straddle two classes
        parts = partition(LABELS, 10, "shards", classes_per_client=k, seed=5)
        counts = class_counts(LABELS, parts, 10)
        assert ((counts > 0).sum(axis=1) <= k).all()
        assert all(len(p) == len(LABELS) // 10 for p in parts)
        assert_exact_cover(parts, len(LABELS))
    two = class_counts(LABELS, partition(LABELS, 10, "shards", classes_per_client=2, seed=5), 10)
    assert (two > 0).sum(axis=1).mean() > 1.5  # usually two distinct classes per client


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: partition(LABELS, 5, "dirichlet", alpha=0.0), "alpha=0.0"),
        (lambda: partition(LABELS, 5, "dirichlet", alpha=-1.0), "alpha=-1.0"),
        (lambda: partition(LABELS, 5, "dirichlet"), "alpha"),
        (lambda: partition(LABELS, 0), "num_clients=0"),
        (lambda: partition(LABELS[:5], 6), "num_clients=6"),
        (lambda: partition(LABELS, 5, "iid", alpha=1.0), "alpha"),
        (lambda: partition(LABELS, 5, "shards", classes_per_client=0), "classes_per_client"),
        (lambda: partition(LABELS, 5, "shards", classes_per_client=2, alpha=1), "alpha"),
        (lambda: partition(LABELS[:10], 6, "shards", classes_per_client=2), "12 shards"),
        (lambda: partition(LABELS, 5, "round_robin"), "known: dirichlet, iid, shards"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(call, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        call()


def test_class_counts_and_table() -> None:
    parts = partition(LABELS, 4, "shards", classes_per_client=1, seed=0)
    counts = class_counts(LABELS, parts, 10)
    assert counts.shape == (4, 10) and counts.sum() == len(LABELS)
    assert counts.sum(axis=1).tolist() == [len(p) for p in parts]
    table = format_class_counts(counts)
    lines = table.splitlines()
    assert lines[0].split() == ["client", *map(str, range(10)), "total"]
    assert lines[-1].split()[0] == "all" and lines[-1].split()[-1] == str(len(LABELS))
    assert len(lines) == 2 + 4 + 1
    assert format_class_counts(counts, [f"k{i}" for i in range(10)]).splitlines()[0].split()[1] == "k0"
    assert set(PARTITIONERS.names()) >= {"iid", "dirichlet", "shards"}
