"""`memory`: the embedded store, a dict served on a loopback TCP port by a thread of the driver.

Why a small socket server rather than a multiprocessing manager: functions reach it exactly as they reach
Redis (an address, nothing inherited from the driver), so it works for spawned or forked containers and for
Lithops' own worker processes alike; values travel as raw bytes (no pickle on the wire, nothing to
unpickle from a peer), and a thread per connection serves n workers concurrently. Its data lives in the
driver process: a driver that dies loses it (use `redis` to resume across driver crashes).

Wire format: request = op (1 byte) + body length (8 bytes) + body; reply = status (1 byte) + length +
body. Multi-key bodies are length-prefixed records.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from siegecraft.engines.serverless.store import STORES, Store, StoreSpec

if TYPE_CHECKING:
    from typing_extensions import Self

_HEAD = struct.Struct("!BQ")
_LEN = struct.Struct("!Q")
OP_MGET, OP_MSET, OP_DELETE, OP_EXISTS, OP_SCAN = range(1, 6)


def _pack(items: Sequence[bytes | None]) -> bytes:
    """Length-prefixed records; a missing value is the all-ones length."""
    parts = []
    for item in items:
        if item is None:
            parts.append(_LEN.pack(2**64 - 1))
        else:
            parts.append(_LEN.pack(len(item)))
            parts.append(item)
    return b"".join(parts)


def _unpack(body: bytes | memoryview) -> Iterator[bytes | None]:
    view, pos = memoryview(body), 0
    while pos < len(view):
        (size,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if size == 2**64 - 1:
            yield None
            continue
        yield bytes(view[pos : pos + size])
        pos += size


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ConnectionError("peer closed the connection")
        got += n
    return buf


class _Handler(socketserver.BaseRequestHandler):
    server: _DictServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                op, size = _HEAD.unpack(_recv_exact(sock, _HEAD.size))
                body = _recv_exact(sock, size)
            except (ConnectionError, OSError):
                return
            try:
                status, reply = 0, self.server.apply(op, body)
            except (ValueError, UnicodeDecodeError) as exc:
                status, reply = 1, str(exc).encode()
            head = _HEAD.pack(status, len(reply))
            if len(reply) < 65536:
                sock.sendall(head + reply)
            else:
                sock.sendall(head)
                sock.sendall(reply)


class _DictServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.data: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def apply(self, op: int, body: bytearray) -> bytes:
        """Execute one request against the dict; every request is atomic."""
        records = list(_unpack(body))
        if op == OP_MSET:
            keys = [bytes(r or b"").decode() for r in records[0::2]]
        else:
            keys = [bytes(r or b"").decode() for r in records]
        with self.lock:
            if op == OP_MGET:
                return _pack([self.data.get(k) for k in keys])
            if op == OP_MSET:
                for k, v in zip(keys, records[1::2]):
                    self.data[k] = v or b""
                return b""
            if op == OP_DELETE:
                return _LEN.pack(sum(self.data.pop(k, None) is not None for k in keys))
            if op == OP_EXISTS:
                return _LEN.pack(sum(k in self.data for k in keys))
            if op == OP_SCAN:
                prefix = keys[0]
                return _pack([k.encode() for k in self.data if k.startswith(prefix)])
        raise ValueError(f"unknown op {op}")


class MemoryStoreServer:
    """The embedded store's server: start it in the driver, hand `spec` to functions, stop it at the end."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _DictServer((host, port))
        self._thread = threading.Thread(target=self._server.serve_forever, name="memory-store", daemon=True)
        self._thread.start()
        bound_host, bound_port = self._server.server_address[:2]
        self.spec = StoreSpec("memory", str(bound_host), int(bound_port))

    def __len__(self) -> int:
        return len(self._server.data)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MemoryStore(Store):
    """Client of a `MemoryStoreServer` (one connection, used by one thread at a time)."""

    def __init__(self, spec: StoreSpec, *, network_mb_s: float | None = None) -> None:
        super().__init__(spec, network_mb_s=network_mb_s)
        self._sock = socket.create_connection((spec.host, spec.port), timeout=60)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._lock = threading.Lock()

    def _call(self, op: int, records: Sequence[bytes | None]) -> bytearray:
        body = _pack(records)
        with self._lock:
            self._sock.sendall(_HEAD.pack(op, len(body)))
            self._sock.sendall(body)
            status, size = _HEAD.unpack(_recv_exact(self._sock, _HEAD.size))
            reply = _recv_exact(self._sock, size)
        if status != 0:
            raise RuntimeError(f"memory store error: {bytes(reply).decode(errors='replace')}")
        return reply

    def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return list(_unpack(self._call(OP_MGET, [k.encode() for k in keys])))

    def _mset(self, items: Mapping[str, bytes]) -> None:
        records: list[bytes | None] = []
        for k, v in items.items():
            records += [k.encode(), bytes(v)]
        self._call(OP_MSET, records)

    def _delete(self, keys: Sequence[str]) -> int:
        return _LEN.unpack(self._call(OP_DELETE, [k.encode() for k in keys]))[0]

    def _exists(self, keys: Sequence[str]) -> int:
        return _LEN.unpack(self._call(OP_EXISTS, [k.encode() for k in keys]))[0]

    def _scan(self, prefix: str) -> list[str]:
        return [bytes(k or b"").decode() for k in _unpack(self._call(OP_SCAN, [prefix.encode()]))]

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


STORES.register("memory")(MemoryStore)
