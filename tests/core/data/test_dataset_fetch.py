"""fetch/dataset_status without any network: urllib is replaced by fakes in every test."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from siegecraft.core.data import paths as data_paths
from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.data.fetch import REMOTES, FetchError, Remote, _idx_remotes, dataset_status, fetch

# `siegecraft.core.data.fetch` the attribute is the function; the module itself comes from importlib
fetch_mod = importlib.import_module("siegecraft.core.data.fetch")


def refuse_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


@pytest.fixture
def no_system_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_paths, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")


def test_unreachable_network_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", refuse_network)
    with pytest.raises(FetchError) as info:
        fetch("svhn", data_dir=tmp_path)
    message = str(info.value)
    assert "ufldl.stanford.edu" in message and "name resolution" in message
    assert "internet" in message and str(tmp_path / "svhn" / "train_32x32.mat") in message
    assert not list((tmp_path / "svhn").glob("*.part"))


def test_fashion_mnist_fetch_error_mentions_apt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_system_fashion: None
) -> None:
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", refuse_network)
    with pytest.raises(FetchError, match="apt-get install dataset-fashion-mnist"):
        fetch("fashion_mnist", data_dir=tmp_path)


def test_present_or_bundled_datasets_need_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", refuse_network)
    system = data_paths.FASHION_MNIST_SYSTEM_DIR
    if data_paths.has_idx_files(system):
        assert fetch("fashion_mnist", data_dir=tmp_path) == system
    with pytest.raises(ValueError, match="needs no download"):
        fetch("digits", data_dir=tmp_path)
    with pytest.raises(ValueError, match="known"):
        fetch("imagenet", data_dir=tmp_path)


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_fetch_downloads_verifies_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (8, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_bytes(rng.integers(0, 10, 8)),
        "t10k-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (3, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(rng.integers(0, 10, 3)),
    }
    md5s = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    hosts = ("http://dead.invalid/", "http://mirror.invalid/")
    monkeypatch.setitem(REMOTES, "mnist", _idx_remotes(hosts, md5s))
    requested: list[str] = []

    def fake_urlopen(request, timeout: float):
        requested.append(request.full_url)
        if request.full_url.startswith(hosts[0]):
            raise urllib.error.HTTPError(request.full_url, 403, "Forbidden", {}, None)
        return io.BytesIO(files[request.full_url.rsplit("/", 1)[1]])

    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", fake_urlopen)
    directory = fetch("mnist", data_dir=tmp_path)
    assert directory == tmp_path / "mnist" and len(requested) == 8  # first host refused, mirror served
    assert len(load_dataset("mnist", "test", data_dir=tmp_path)) == 3
    requested.clear()
    assert fetch("mnist", data_dir=tmp_path) == directory and requested == []  # already present
    assert ("mnist", True, str(directory)) in dataset_status(tmp_path)


def test_checksum_mismatch_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", lambda request, timeout: io.BytesIO(b"junk"))
    remote = Remote(("http://host.invalid/a.bin",), "a.bin", "0" * 32)
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_mod._download(remote, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_dataset_status_reports_every_dataset(tmp_path: Path, no_system_fashion: None) -> None:
    status = {name: (ok, where) for name, ok, where in dataset_status(tmp_path)}
    assert set(status) >= {"fashion_mnist", "mnist", "mnist5k", "digits", "cifar10", "svhn"}
    assert status["digits"][0] and status["mnist5k"][0]
    assert status["mnist"] == (False, str(tmp_path / "mnist"))
    assert status["fashion_mnist"] == (False, str(tmp_path / "fashion_mnist"))
    assert not status["cifar10"][0] and not status["svhn"][0]
