"""Download datasets from their official hosts into the data directory (`siegecraft data fetch NAME`).

Every file is checked against its published MD5 and written atomically (`.part` then rename), so an
interrupted download never leaves a file the loaders would accept.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from siegecraft.core.data.paths import (
    FASHION_MNIST_APT_PACKAGE,
    DatasetNotFoundError,
    find_fashion_mnist,
    resolve_data_dir,
)

TIMEOUT_S = 60
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A download failed (no network, HTTP error, or a checksum mismatch)."""


@dataclass(frozen=True)
class Remote:
    """One downloadable file: candidate URLs (tried in order), its name on disk and its MD5."""

    urls: tuple[str, ...]
    filename: str
    md5: str


def _idx_remotes(bases: tuple[str, ...], md5s: dict[str, str]) -> list[Remote]:
    return [Remote(tuple(b + name for b in bases), name, md5) for name, md5 in md5s.items()]


# Official hosts first; MNIST's original host now often refuses scripts, so PyTorch's mirror follows it.
MNIST_HOSTS = ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/")
FASHION_MNIST_HOSTS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
REMOTES: dict[str, list[Remote]] = {
    "mnist": _idx_remotes(
        MNIST_HOSTS,
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": _idx_remotes(
        FASHION_MNIST_HOSTS,
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": [
        Remote(
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        )
    ],
    "svhn": [
        Remote(
            ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
            "train_32x32.mat",
            "e26dedcc434d2e4c54c9b2d4a06d8373",
        ),
        Remote(
            ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
            "test_32x32.mat",
            "eb5a983be6a315427106f1b164d9cef3",
        ),
    ],
}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(remote: Remote, directory: Path) -> Path:
    """Fetch `remote` into `directory` (trying each URL), verify its MD5, and return the file's path."""
    target = directory / remote.filename
    if target.is_file() and _md5(target) == remote.md5:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    errors = []
    for url in remote.urls:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "siegecraft-data-fetch"})
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, part.open("wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
        except (urllib.error.URLError, OSError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            part.unlink(missing_ok=True)
            continue
        if _md5(part) != remote.md5:
            errors.append(f"{url}: checksum mismatch (expected md5 {remote.md5})")
            part.unlink(missing_ok=True)
            continue
        part.replace(target)
        return target
    raise FetchError(
        f"could not download {remote.filename}:\n  "
        + "\n  ".join(errors)
        + "\nIs the internet reachable from this machine? "
        + f"Otherwise download it elsewhere and put it at {target}"
    )


def fetch(name: str, data_dir: str | Path | None = None) -> Path:
    """Download dataset `name` into `<data_dir>/<name>/` unless present; return the directory it loads from.

    Raises FetchError when the hosts cannot be reached, ValueError for datasets that ship with a package.
    """
    from siegecraft.core.data.datasets import DATASETS  # deferred: it imports torch

    loader = DATASETS.get(name)
    root = resolve_data_dir(data_dir)
    if name not in REMOTES:
        raise ValueError(
            f"dataset {name!r} needs no download ({loader.locate(root)}); "
            f"fetchable: {', '.join(sorted(REMOTES))}"
        )
    if name == "fashion_mnist" and (found := find_fashion_mnist(root)) is not None:
        return found
    try:
        return Path(loader.locate(root))
    except DatasetNotFoundError:
        pass
    directory = root / name
    try:
        files = [_download(remote, directory) for remote in REMOTES[name]]
    except FetchError as exc:
        if name == "fashion_mnist":
            raise FetchError(f"{exc}\nor install it: apt-get install {FASHION_MNIST_APT_PACKAGE}") from None
        raise
    for archive in files:
        if archive.name.endswith(".tar.gz"):
            _extract(archive, directory)
            archive.unlink()
    return Path(loader.locate(root))  # fails loudly if what arrived is not what the loader reads


def _extract(archive: Path, directory: Path) -> None:
    """Unpack a tar archive, refusing members that would land outside `directory`."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(directory, filter="data")
            return
        base = directory.resolve()
        for member in tar.getmembers():
            if not (base / member.name).resolve().is_relative_to(base) or member.issym() or member.islnk():
                raise FetchError(f"{archive}: refusing unsafe archive member {member.name!r}")
        tar.extractall(directory)


def dataset_status(data_dir: str | Path | None = None) -> list[tuple[str, bool, str]]:
    """(name, available, where) for every registered dataset; `where` is the expected path when absent."""
    from siegecraft.core.data.datasets import DATASETS  # deferred: it imports torch

    root = resolve_data_dir(data_dir)
    rows = []
    for name in DATASETS.names():
        try:
            rows.append((name, True, DATASETS.get(name).locate(root)))
        except DatasetNotFoundError as exc:
            first = exc.expected[0].parent if exc.expected else root / name
            rows.append((name, False, str(first)))
    return rows
