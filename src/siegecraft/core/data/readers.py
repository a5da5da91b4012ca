"""Decoders for the standard on-disk dataset formats: IDX (MNIST family), CIFAR pickles, SVHN .mat.

Each returns numpy arrays exactly as stored (uint8 images in [N, C, H, W]); scaling to [0, 1]
happens once, in the loader, so cached arrays stay small.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# IDX type codes (third magic byte) -> big-endian numpy dtypes.
IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (gzipped if its name ends in .gz) into an array of the stored shape."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header says {dims} ({expected} bytes) but {len(raw) - header} follow")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=False)


def read_cifar_batches(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate CIFAR python pickle batches into uint8 images [N, 3, 32, 32] and int64 labels."""
    images, labels = [], []
    for path in paths:
        with path.open("rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        images.append(data.reshape(len(data), 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_cifar_label_names(meta_path: Path) -> list[str] | None:
    """Class names from CIFAR's `batches.meta`, or None when the file is absent."""
    if not meta_path.is_file():
        return None
    with meta_path.open("rb") as fh:
        meta = pickle.load(fh, encoding="bytes")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped-digit .mat (X: [32, 32, 3, N], y: [N, 1], 10 for digit 0) -> [N, 3, 32, 32], labels."""
    from scipy.io import loadmat  # imported lazily: scipy.io adds noticeable start-up time

    mat = loadmat(str(path))
    images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1))).astype(np.uint8, copy=False)
    labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    labels[labels == 10] = 0
    return images, labels
