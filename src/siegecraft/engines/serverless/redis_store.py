"""`redis`: the parameter store of the SMLT paper, a real Redis server reached over loopback (or a network)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from siegecraft.engines.serverless.store import STORES, Store, StoreSpec


class RedisStore(Store):
    """Client of a Redis server; multi-key reads are MGET and multi-key writes one atomic MSET."""

    def __init__(self, spec: StoreSpec, *, network_mb_s: float | None = None) -> None:
        import redis

        super().__init__(spec, network_mb_s=network_mb_s)
        self._client = redis.Redis(host=spec.host, port=spec.port, db=spec.db, socket_timeout=60)

    def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return list(self._client.mget(list(keys)))

    def _mset(self, items: Mapping[str, bytes]) -> None:
        self._client.mset(dict(items))

    def _delete(self, keys: Sequence[str]) -> int:
        return int(self._client.delete(*keys))

    def _exists(self, keys: Sequence[str]) -> int:
        return int(self._client.exists(*keys))

    def _scan(self, prefix: str) -> list[str]:
        return [k.decode() for k in self._client.scan_iter(match=prefix + "*", count=1000)]

    def ping(self) -> bool:
        return bool(self._client.ping())

    def close(self) -> None:
        self._client.close()


STORES.register("redis")(RedisStore)
