"""Where dataset files live: the data directory and the system Fashion-MNIST copy.

Kept free of torch so `python -m siegecraft.core.data.setup_system` starts in well under a second.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DATA_ENV_VAR = "SIEGECRAFT_DATA"
# Debian package `dataset-fashion-mnist` installs the four standard IDX .gz files here.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_APT_PACKAGE = "dataset-fashion-mnist"

# Standard IDX file stems shared by MNIST and Fashion-MNIST, per split: (images, labels).
IDX_STEMS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the loader looks; the message says where and how to fetch them."""

    def __init__(self, name: str, expected: list[Path], extra_hint: str = "") -> None:
        self.name = name
        self.expected = expected
        where = "\n".join(f"  {p}" for p in expected)
        hint = f"run: siegecraft data fetch {name}" + (f"\n  or: {extra_hint}" if extra_hint else "")
        self.extra_hint = extra_hint
        super().__init__(f"dataset {name!r} not found; expected files at:\n{where}\n{hint}")

    def __reduce__(self) -> tuple[type[DatasetNotFoundError], tuple[str, list[Path], str]]:
        """Rebuild from the constructor's arguments, so the error crosses process boundaries."""
        return type(self), (self.name, self.expected, self.extra_hint)


def default_data_dir() -> Path:
    """The data directory: `$SIEGECRAFT_DATA` if set, else `~/.cache/siegecraft`."""
    env = os.environ.get(DATA_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "siegecraft"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """An absolute data directory from an explicit value or the default."""
    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return base.resolve()


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """The IDX file `stem` in `directory`, gzipped or not, or None when absent."""
    for name in (stem + ".gz", stem):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def has_idx_files(directory: Path, stems: Sequence[str] | None = None) -> bool:
    """True when every IDX file of both splits (or of the given stems) is in `directory`."""
    wanted = stems if stems is not None else [s for pair in IDX_STEMS.values() for s in pair]
    return all(find_idx_file(directory, stem) is not None for stem in wanted)


def fashion_mnist_candidates(data_dir: str | Path | None = None) -> list[Path]:
    """Directories searched for Fashion-MNIST, in order: `<data_dir>/fashion_mnist`, then the system copy."""
    return [resolve_data_dir(data_dir) / "fashion_mnist", FASHION_MNIST_SYSTEM_DIR]


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path | None:
    """The first directory holding all Fashion-MNIST IDX files, or None."""
    for directory in fashion_mnist_candidates(data_dir):
        if has_idx_files(directory):
            return directory
    return None
