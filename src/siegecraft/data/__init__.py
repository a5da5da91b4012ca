"""Datasets (images in [0, 1] as `ImageDataset`), their loaders and downloads, and client partitioners.

The torch-dependent names (`ImageDataset`, `load_dataset`, `DATASETS`) load on first use, so torch-free
tools such as `python -m siegecraft.data.setup_system` start fast. Note: `siegecraft.data.partition` and
`siegecraft.data.fetch` as attributes are the functions; use `from siegecraft.data.partition import ...`
(or importlib) to reach those modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from siegecraft.data.fetch import FetchError, dataset_status, fetch
from siegecraft.data.partition import (
    PARTITIONERS,
    EmptyPartitionError,
    class_counts,
    format_class_counts,
    partition,
)
from siegecraft.data.paths import DatasetNotFoundError, default_data_dir

if TYPE_CHECKING:
    from siegecraft.data.datasets import DATASETS, load_dataset
    from siegecraft.data.image_dataset import ImageDataset

_LAZY: dict[str, str] = {"ImageDataset": "image_dataset", "load_dataset": "datasets", "DATASETS": "datasets"}

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "DatasetNotFoundError",
    "EmptyPartitionError",
    "FetchError",
    "ImageDataset",
    "class_counts",
    "dataset_status",
    "default_data_dir",
    "fetch",
    "format_class_counts",
    "load_dataset",
    "partition",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'siegecraft.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"siegecraft.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
