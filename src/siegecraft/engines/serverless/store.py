"""The `Store` interface: the parameter store that stateless functions share (bytes by string key).

Functions get a picklable `StoreSpec` (an address, as on a real FaaS) and `connect` to it from their own
process. The base class meters traffic (bytes each way, requests) and can cap a client's bandwidth, so
the emulated platform can give functions a Lambda-like network link to the store.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from siegecraft.core.registry import Registry

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")


@dataclass(frozen=True)
class StoreSpec:
    """Where a store lives: kind ("memory" or "redis"), loopback host and port, redis db number."""

    kind: str
    host: str
    port: int
    db: int = 0

    @property
    def url(self) -> str:
        return f"{self.kind}://{self.host}:{self.port}/{self.db}"


@dataclass
class Traffic:
    """Bytes a client sent and received, its request count (round trips) and the values it moved (keys
    written plus keys read that existed: what a per-object store such as S3 would bill as requests)."""

    sent: int = 0
    received: int = 0
    requests: int = 0
    values: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.received


def check_key(key: str) -> str:
    if not key or "\n" in key or "*" in key or "?" in key or "[" in key:
        raise ValueError(f"store keys must be non-empty without newlines or glob characters: {key!r}")
    return key


class Store(ABC):
    """Key/value bytes store client with metered (optionally bandwidth-capped) traffic."""

    def __init__(self, spec: StoreSpec, *, network_mb_s: float | None = None) -> None:
        self.spec = spec
        self.network_mb_s = network_mb_s
        self.traffic = Traffic()

    # -- raw operations each backend implements --------------------------------------------------------
    @abstractmethod
    def _mget(self, keys: Sequence[str]) -> list[bytes | None]: ...

    @abstractmethod
    def _mset(self, items: Mapping[str, bytes]) -> None: ...

    @abstractmethod
    def _delete(self, keys: Sequence[str]) -> int: ...

    @abstractmethod
    def _exists(self, keys: Sequence[str]) -> int: ...

    @abstractmethod
    def _scan(self, prefix: str) -> list[str]: ...

    def close(self) -> None:
        """Drop the connection."""

    # -- metered public operations ---------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0]

    def put(self, key: str, value: bytes) -> None:
        self.put_many({key: value})

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of `keys` in order (None where missing), in one round trip."""
        if not keys:
            return []
        out = self._metered(lambda: self._mget(keys), sent=sum(len(k) for k in keys), received=_sizes)
        self.traffic.values += sum(v is not None for v in out)
        return out

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Write several keys in one round trip (atomic per key)."""
        if not items:
            return
        for key in items:
            check_key(key)
        size = sum(len(k) + len(v) for k, v in items.items())
        self._metered(lambda: self._mset(items), sent=size)
        self.traffic.values += len(items)

    def delete(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        return self._metered(lambda: self._delete(keys), sent=sum(len(k) for k in keys)) if keys else 0

    def exists(self, keys: Iterable[str]) -> int:
        """How many of `keys` exist."""
        keys = list(keys)
        return self._metered(lambda: self._exists(keys), sent=sum(len(k) for k in keys)) if keys else 0

    def scan(self, prefix: str) -> list[str]:
        """All keys starting with `prefix`, sorted."""
        return sorted(self._metered(lambda: self._scan(prefix), sent=len(prefix)))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with `prefix`; returns how many."""
        keys = self.scan(prefix)
        deleted = 0
        for i in range(0, len(keys), 1000):
            deleted += self.delete(keys[i : i + 1000])
        return deleted

    def _metered(self, op: Callable[[], T], *, sent: int, received: Callable[[T], int] | None = None) -> T:
        start = time.perf_counter()
        out = op()
        got = received(out) if received is not None else 0
        self.traffic.sent += sent
        self.traffic.received += got
        self.traffic.requests += 1
        if self.network_mb_s:
            wait = (sent + got) / (self.network_mb_s * 1e6) - (time.perf_counter() - start)
            if wait > 0:
                time.sleep(wait)
        return out

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sizes(values: list[bytes | None]) -> int:
    return sum(len(v) for v in values if v is not None)


STORES: Registry[Callable[..., Store]] = Registry("store")


def connect(spec: StoreSpec, *, network_mb_s: float | None = None) -> Store:
    """Open a client for `spec` (from any process that can reach its loopback address)."""
    if spec.kind not in STORES and spec.kind in ("memory", "redis"):
        importlib.import_module(f"siegecraft.engines.serverless.{spec.kind}_store")  # registers the built-in store
    return STORES.get(spec.kind)(spec, network_mb_s=network_mb_s)
