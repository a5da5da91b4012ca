"""Loaders: synthetic files in the standard formats round-trip through the real code; real bundled sets."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from siegecraft.core.data import paths as data_paths
from siegecraft.core.data.datasets import DATASETS, load_dataset, stratified_split
from siegecraft.core.data.paths import DatasetNotFoundError

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """Encode a uint8 array as IDX: magic 0x0000 08 ndim, big-endian dims, raw bytes."""
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_idx_dataset(directory: Path, n: dict[str, int], gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, (img_name, lbl_name) in IDX_NAMES.items():
        images = rng.integers(0, 256, size=(n[split], 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = rng.integers(0, 10, size=n[split], dtype=np.uint8)
        write_idx(directory / img_name, images, gz)
        write_idx(directory / lbl_name, labels, gz)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_dataset(tmp_path / "mnist", {"train": 30, "test": 12}, gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("mnist", split, data_dir=tmp_path)
        images, labels = arrays[split]
        assert ds.shape == (1, 28, 28) and len(ds) == len(labels) and ds.x.dtype == torch.float32
        assert ds.y.dtype == torch.int64 and ds.y.tolist() == labels.tolist()
        assert torch.equal(ds.x[:, 0], torch.from_numpy(images).float() / 255)
        assert ds.x.min() == 0.0 and ds.x.max() == 1.0 and ds.name == "mnist" and ds.num_classes == 10


def test_fashion_mnist_prefers_data_dir_copy(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "fashion_mnist", {"train": 7, "test": 5}, seed=3)
    ds = load_dataset("fashion_mnist", "test", data_dir=tmp_path)
    assert len(ds) == 5 and ds.classes is not None and ds.classes[9] == "Ankle boot"


def test_repeated_loads_are_cached_but_share_no_tensor(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "mnist", {"train": 10, "test": 4})
    a = load_dataset("mnist", data_dir=tmp_path)
    b = load_dataset("mnist", data_dir=tmp_path)
    assert a is not b and torch.equal(a.x, b.x)
    a.x.zero_()
    a.y.zero_()
    assert b.x.max() > 0 and b.y.sum() > 0
    assert load_dataset("mnist", data_dir=tmp_path).x.max() > 0


def test_options_and_bad_arguments(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "mnist", {"train": 6, "test": 4})
    ds = load_dataset("mnist", "test", data_dir=tmp_path, channels=3, size=32)
    assert ds.shape == (3, 32, 32) and 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist", "validation", data_dir=tmp_path)
    with pytest.raises(ValueError, match="colour"):
        load_dataset("mnist", data_dir=tmp_path, colour=True)
    with pytest.raises(ValueError, match=r"known: .*cifar10"):
        load_dataset("imagenet")


def test_cifar10_pickle_round_trip(tmp_path: Path) -> None:
    base = tmp_path / "cifar10" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=4).tolist()
        with (base / name).open("wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
        batches[name] = (data, labels)
    train = load_dataset("cifar10", data_dir=tmp_path)
    test = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert len(train) == 20 and len(test) == 4 and train.shape == (3, 32, 32)
    data, labels = batches["test_batch"]
    assert test.y.tolist() == labels
    # row layout is 1024 red, then green, then blue values, each row-major 32x32
    assert torch.equal(test.x[1, 2], torch.from_numpy(data[1, 2048:].reshape(32, 32)).float() / 255)
    assert train.y[4:8].tolist() == batches["data_batch_2"][1]
    assert train.classes is not None and train.classes[0] == "airplane"


def test_svhn_mat_round_trip_maps_label_10_to_0(tmp_path: Path) -> None:
    from scipy.io import savemat

    (tmp_path / "svhn").mkdir()
    rng = np.random.default_rng(0)
    stored = {}
    for split, n in (("train", 6), ("test", 3)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [9], [10], [5], [2]][:n], dtype=np.uint8)
        savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})
        stored[split] = (x, y)
    ds = load_dataset("svhn", data_dir=tmp_path)
    x, _ = stored["train"]
    assert ds.shape == (3, 32, 32) and len(ds) == 6
    assert ds.y.tolist() == [0, 1, 9, 0, 5, 2]
    # pixel (row 3, col 7, green) of image 4
    assert ds.x[4, 1, 3, 7].item() == pytest.approx(x[3, 7, 1, 4] / 255)
    assert load_dataset("svhn", "test", data_dir=tmp_path).y.tolist() == [0, 1, 9]


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("mnist", "mnist/train-images-idx3-ubyte.gz"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("svhn", "svhn/train_32x32.mat"),
    ],
)
def test_missing_files_error_names_path_and_fetch_command(tmp_path: Path, name: str, fragment: str) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, data_dir=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / name) in message and fragment in message
    assert f"run: siegecraft data fetch {name}" in message


def test_missing_fashion_mnist_mentions_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_paths, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path / "data")
    message = str(info.value)
    assert "run: siegecraft data fetch fashion_mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "data" / "fashion_mnist") in message


def test_default_data_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from siegecraft.core.data.paths import default_data_dir

    monkeypatch.setenv("SIEGECRAFT_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    write_idx_dataset(tmp_path / "mnist", {"train": 3, "test": 2})
    assert len(load_dataset("mnist", "test")) == 2
    monkeypatch.delenv("SIEGECRAFT_DATA")
    assert default_data_dir() == Path.home() / ".cache" / "siegecraft"


def test_stratified_split_is_disjoint_complete_and_seeded() -> None:
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    train, test = stratified_split(labels, test_fraction=0.2)
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    assert np.bincount(labels[test]).tolist() == [2, 4, 6, 8, 10]
    np.random.seed(123)  # the split must not depend on global random state
    again = stratified_split(labels, test_fraction=0.2)
    assert np.array_equal(again[1], test)


def test_mnist5k_split_sizes_and_disjoint(tmp_path: Path) -> None:
    train = load_dataset("mnist5k", "train")
    test = load_dataset("mnist5k", "test")
    assert (len(train), len(test)) == (4000, 1000) and train.shape == (1, 28, 28)
    assert torch.bincount(test.y).tolist() == [100] * 10
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0 and train.x.max() > 0.9
    train_rows = {bytes(r) for r in (train.x.flatten(1) * 255).round().to(torch.uint8).numpy()}
    test_rows = {bytes(r) for r in (test.x.flatten(1) * 255).round().to(torch.uint8).numpy()}
    assert not train_rows & test_rows
    np.random.seed(7)
    torch.manual_seed(7)
    fresh = DATASETS.get("mnist5k").decode("test", tmp_path)  # bypasses the in-process cache
    assert np.array_equal(fresh.labels, test.y.numpy())


def test_digits_split_scaling_and_upscale(tmp_path: Path) -> None:
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and abs(len(test) - 0.2 * 1797) < 10
    assert train.shape == (1, 8, 8) and train.x.max() == 1.0 and train.x.min() == 0.0
    big = load_dataset("digits", "test", size=28)
    assert big.shape == (1, 28, 28) and torch.equal(big.y, test.y) and big.x.max() <= 1.0
    np.random.seed(99)
    fresh = DATASETS.get("digits").decode("test", tmp_path)
    assert np.array_equal(fresh.labels, test.y.numpy())


def test_fashion_mnist_real_files_if_present() -> None:
    if data_paths.find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    train = load_dataset("fashion_mnist", "train")
    test = load_dataset("fashion_mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.shape == (1, 28, 28) and train.x.dtype == torch.float32
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert torch.bincount(train.y).tolist() == [6000] * 10
    assert torch.bincount(test.y).tolist() == [1000] * 10
