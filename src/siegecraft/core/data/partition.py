"""Split a labelled dataset across federated clients: IID, Dirichlet label skew, or label shards.

A partitioner is `fn(labels, num_clients, rng, **params) -> list[index array]`, registered in
`PARTITIONERS`; `partition` validates the call and guarantees every index is used exactly once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from siegecraft.core.registry import Registry

if TYPE_CHECKING:  # torch stays unimported here so torch-free tools can import this package quickly
    import torch

Partitioner = Callable[..., list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partitioner")
MAX_DIRICHLET_DRAWS = 100


class EmptyPartitionError(ValueError):
    """A client received no samples."""


@PARTITIONERS.register("iid")
def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle all indices and cut them into `num_clients` near-equal parts."""
    return list(np.array_split(rng.permutation(len(labels)), num_clients))


def _dirichlet_draw(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One draw: each class's samples split over clients by Dirichlet(alpha) proportions."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = np.round(np.cumsum(proportions)[:-1] * len(idx)).astype(int)
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


@PARTITIONERS.register("dirichlet")
def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    alpha: float,
    min_partition_size: int = 0,
) -> list[np.ndarray]:
    """Label skew: small `alpha` gives each client few classes, large `alpha` approaches IID.

    Redraws (same generator, up to 100 times) until every client has `min_partition_size` samples.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"dirichlet: alpha must be a float > 0, got alpha={alpha!r}")
    if (
        isinstance(min_partition_size, bool)
        or not isinstance(min_partition_size, (int, np.integer))
        or min_partition_size < 0
    ):
        raise ValueError(f"dirichlet: min_partition_size must be an int >= 0, got {min_partition_size!r}")
    if min_partition_size * num_clients > len(labels):
        raise ValueError(
            f"dirichlet: min_partition_size={min_partition_size} x num_clients={num_clients} "
            f"exceeds the {len(labels)} samples"
        )
    if min_partition_size == 0:
        return _dirichlet_draw(labels, num_clients, float(alpha), rng)
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts = _dirichlet_draw(labels, num_clients, float(alpha), rng)
        smallest = min(len(p) for p in parts)
        if smallest >= min_partition_size:
            return parts
    raise ValueError(
        f"dirichlet: no draw in {MAX_DIRICHLET_DRAWS} gave every client >= "
        f"min_partition_size={min_partition_size} samples (alpha={alpha}); "
        "use a larger alpha, fewer clients or a smaller min_partition_size"
    )


@PARTITIONERS.register("shards")
def shards(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, *, classes_per_client: int
) -> list[np.ndarray]:
    """Pathological non-IID (McMahan et al.): sort by label, cut num_clients*k shards, deal k to each.

    Each client sees at most k classes when the shard size divides the class sizes; a shard that
    straddles a class boundary adds one more.
    """
    if (
        isinstance(classes_per_client, bool)
        or not isinstance(classes_per_client, (int, np.integer))
        or classes_per_client < 1
    ):
        raise ValueError(f"shards: classes_per_client must be an int >= 1, got {classes_per_client!r}")
    num_shards = num_clients * int(classes_per_client)
    if num_shards > len(labels):
        raise ValueError(
            f"shards: num_clients x classes_per_client = {num_shards} shards exceeds the "
            f"{len(labels)} samples"
        )
    shuffled = rng.permutation(len(labels))  # random order within a class, then a stable sort by label
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    pieces = np.array_split(by_label, num_shards)
    order = rng.permutation(num_shards).reshape(num_clients, int(classes_per_client))
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in order]


def _as_numpy(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Labels as a numpy array (tensors are detached and moved to the CPU)."""
    if hasattr(labels, "detach"):
        return labels.detach().cpu().numpy()
    return np.asarray(labels)


def _check_params(name: str, fn: Partitioner, params: dict[str, Any]) -> None:
    """Unknown or missing keyword parameters raise ValueError naming them."""
    signature = inspect.signature(fn)
    keyword = {n: p for n, p in signature.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(params) - set(keyword))
    if unknown:
        raise ValueError(
            f"partition method {name!r}: unknown parameter(s) {unknown}; "
            f"allowed: {sorted(keyword) or '(none)'}"
        )
    missing = sorted(
        n for n, p in keyword.items() if p.default is inspect.Parameter.empty and n not in params
    )
    if missing:
        raise ValueError(f"partition method {name!r}: missing required parameter(s) {missing}")


def partition(
    labels: np.ndarray | torch.Tensor, num_clients: int, method: str = "iid", *, seed: int = 0, **params: Any
) -> list[np.ndarray]:
    """Index arrays (int64, sorted), one per client, together using every sample exactly once."""
    fn = PARTITIONERS.get(method)
    y = _as_numpy(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be an int >= 1, got num_clients={num_clients!r}")
    if num_clients > len(y):
        raise ValueError(f"num_clients={num_clients} exceeds the number of samples ({len(y)})")
    _check_params(method, fn, params)
    parts = [
        np.asarray(p, dtype=np.int64) for p in fn(y, int(num_clients), np.random.default_rng(seed), **params)
    ]
    used = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if (
        len(parts) != num_clients
        or len(used) != len(y)
        or not np.array_equal(np.sort(used), np.arange(len(y)))
    ):
        raise RuntimeError(f"partitioner {method!r} did not use every index exactly once")
    for client, part in enumerate(parts):
        if len(part) == 0:
            hint = (
                "set min_partition_size >= 1 (or a larger alpha)"
                if method == "dirichlet"
                else "use fewer clients"
            )
            raise EmptyPartitionError(
                f"partition {method!r}: client {client} received 0 samples "
                f"({num_clients} clients, {len(y)} samples); {hint}"
            )
    return parts


def class_counts(
    labels: np.ndarray | torch.Tensor, parts: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
    """Samples of each class held by each client: an int array [clients, classes]."""
    y = _as_numpy(labels)
    return (
        np.stack(
            [
                np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=num_classes)[:num_classes]
                for p in parts
            ]
        )
        if len(parts)
        else np.zeros((0, num_classes), dtype=np.int64)
    )


def format_class_counts(counts: np.ndarray, class_names: Sequence[str] | None = None) -> str:
    """A plain-text table: one row per client, one column per class, plus totals."""
    counts = np.asarray(counts, dtype=np.int64)
    names = list(class_names) if class_names is not None else [str(k) for k in range(counts.shape[1])]
    header = ["client", *names, "total"]
    rows = [[str(i), *map(str, row), str(row.sum())] for i, row in enumerate(counts)]
    rows.append(["all", *map(str, counts.sum(axis=0)), str(counts.sum())])
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
