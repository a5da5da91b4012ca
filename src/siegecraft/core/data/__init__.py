"""Datasets (images in [0, 1] as `ImageDataset`), their loaders and downloads, and client partitioners.

Note: `siegecraft.core.data.partition` and `siegecraft.core.data.fetch` as attributes are the functions; use
`from siegecraft.core.data.partition import ...` (or importlib) to reach those modules.
"""

from __future__ import annotations

from siegecraft.core.data.fetch import FetchError, dataset_status, fetch
from siegecraft.core.data.partition import (
    PARTITIONERS,
    EmptyPartitionError,
    class_counts,
    format_class_counts,
    partition,
)
from siegecraft.core.data.paths import DatasetNotFoundError, default_data_dir

from siegecraft.core.data.datasets import DATASETS, load_dataset
from siegecraft.core.data.image_dataset import ImageDataset

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

