"""Byte formats that cross the untrusted relay: envelopes and the payloads sealed inside them.

An envelope is `MAGIC | u32 header length | JSON header | body`. The header (kind, sender, receiver,
epoch, sequence number) is public routing data; for sealed envelopes it is also the AES-GCM associated data,
so the relay can read it but not change it. Payloads are JSON metadata plus raw numpy arrays - never
pickle, because an enclave must not run code chosen by whoever wrote the bytes.

A large sealed body may travel through a shared-memory segment instead (see shm.py): the pipe then
carries a reference frame `REF_MAGIC | u32 length | JSON {segment, size} | envelope header`. The
reference is public and unauthenticated, like the rest of the routing data; the body it points to is
the same AES-GCM ciphertext, so a redirected, altered or truncated segment fails authentication.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from siegecraft.enclave.errors import ChannelError

MAGIC = b"CTDL1"
REF_MAGIC = b"CTDLR"
PLAINTEXT_SEQ = -1
ALLOWED_DTYPES = frozenset({"uint8", "uint32", "uint64", "int64", "float32", "float64"})  # uint8: inline broadcasts
_U32 = struct.Struct(">I")


def round_epoch(rnd: int) -> int:
    """The channel epoch of round `rnd`'s messages: setup traffic is epoch 0, round r is epoch r + 1."""
    return int(rnd) + 1


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces): the form that is hashed, signed or measured."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class Envelope:
    """One message on the relay: a public header and a (usually encrypted) body."""

    kind: str
    src: str
    dst: str
    seq: int
    body: bytes | bytearray | memoryview  # a memoryview when it was copied out of a shared-memory segment
    #: the channel epoch the sender sealed it in (a round's messages use `round_epoch(rnd)`; 0 before rounds)
    epoch: int = 0

    @property
    def sealed(self) -> bool:
        return self.seq != PLAINTEXT_SEQ

    def header_bytes(self) -> bytes:
        """The exact header bytes; the associated data of a sealed body."""
        header = canonical_json({"kind": self.kind, "src": self.src, "dst": self.dst, "epoch": self.epoch,
                                 "seq": self.seq})
        return MAGIC + _U32.pack(len(header)) + header

    def with_body(self, body: bytes | bytearray | memoryview) -> Envelope:
        """The same header with another body."""
        return Envelope(self.kind, self.src, self.dst, self.seq, body, self.epoch)

    def to_bytes(self) -> bytes:
        return self.header_bytes() + self.body

    @classmethod
    def parse_header(cls, data: bytes) -> tuple[Envelope, int]:
        """The envelope with an empty body, and where the body starts (the relay never copies bodies)."""
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
            raise ChannelError("malformed envelope: bad magic or truncated header")
        (length,) = _U32.unpack_from(data, len(MAGIC))
        end = len(MAGIC) + 4 + length
        try:
            header = json.loads(data[len(MAGIC) + 4:end])
            env = cls(str(header["kind"]), str(header["src"]), str(header["dst"]), int(header["seq"]), b"",
                      int(header["epoch"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ChannelError(f"malformed envelope header: {exc}") from None
        if len(data) < end or env.header_bytes() != data[:end]:
            raise ChannelError("malformed envelope: header is truncated or not in canonical form")
        return env, end

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse an envelope; raise ChannelError on anything malformed."""
        env, end = cls.parse_header(data)
        return env.with_body(data[end:])


def _prefix(meta: dict[str, Any], specs: list[tuple[str, str, int]]) -> bytes:
    """The u32 length and JSON header that open a payload with arrays `specs` (name, dtype, size)."""
    for name, dtype, _ in specs:
        if dtype not in ALLOWED_DTYPES:
            raise TypeError(f"array {name!r} has dtype {dtype}; allowed: {sorted(ALLOWED_DTYPES)}")
    header = canonical_json({"meta": meta, "arrays": [list(spec) for spec in specs]})
    return _U32.pack(len(header)) + header


def pack(meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> bytes:
    """Serialise JSON-able `meta` and named 1-D arrays into one payload."""
    flat = {name: np.ascontiguousarray(arr).reshape(-1) for name, arr in (arrays or {}).items()}
    prefix = _prefix(meta, [(name, arr.dtype.name, int(arr.size)) for name, arr in flat.items()])
    return b"".join([prefix, *(arr.view(np.uint8).data for arr in flat.values())])


def payload_buffer(meta: dict[str, Any], arrays: dict[str, tuple[str, int]],
                   scratch: bytearray | None = None) -> tuple[bytearray | memoryview, dict[str, np.ndarray]]:
    """A payload in `pack`'s format whose arrays (name -> (dtype, size)) are left for the caller to fill.

    Returns the buffer and writable views of its arrays: a sender that computes straight into the views
    skips `pack`'s copy of every array (what a masked update of many megabytes costs). With `scratch`
    (large enough), the payload is a view of its start instead of a fresh buffer, so a sender that
    builds one such payload per round reuses memory it already has; the caller must fill every array
    and must not reuse `scratch` while the payload is still needed."""
    specs = [(name, dtype, int(size)) for name, (dtype, size) in arrays.items()]
    prefix = _prefix(meta, specs)
    size = len(prefix) + _arrays_size(specs)
    if scratch is None:
        buf: bytearray | memoryview = bytearray(size)
    elif len(scratch) < size:
        raise ValueError(f"scratch holds {len(scratch)} bytes, the payload needs {size}")
    else:
        buf = memoryview(scratch)[:size]
    buf[:len(prefix)] = prefix
    views, offset = {}, len(prefix)
    for name, dtype, size in specs:
        views[name] = np.frombuffer(buf, dtype=dtype, count=size, offset=offset)
        offset += np.dtype(dtype).itemsize * size
    return buf, views


def payload_size(meta: dict[str, Any], arrays: dict[str, tuple[str, int]]) -> int:
    """The size of `payload_buffer(meta, arrays)` (for sizing a scratch buffer)."""
    specs = [(name, dtype, int(size)) for name, (dtype, size) in arrays.items()]
    return len(_prefix(meta, specs)) + _arrays_size(specs)


def _arrays_size(specs: list[tuple[str, str, int]]) -> int:
    return sum(np.dtype(dtype).itemsize * size for _, dtype, size in specs)


def unpack(payload: bytes | bytearray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of `pack`; arrays are views into `payload` (writable only if it is a bytearray). Raises
    ChannelError if malformed."""
    try:
        (length,) = _U32.unpack_from(payload, 0)
        header = json.loads(payload[4:4 + length])
        offset = 4 + length
        arrays: dict[str, np.ndarray] = {}
        for name, dtype, size in header["arrays"]:
            if dtype not in ALLOWED_DTYPES:
                raise ValueError(f"dtype {dtype!r} not allowed")
            nbytes = np.dtype(dtype).itemsize * int(size)
            if offset + nbytes > len(payload):
                raise ValueError("array data truncated")
            arrays[name] = np.frombuffer(payload, dtype=dtype, count=int(size), offset=offset)
            offset += nbytes
        if offset != len(payload):
            raise ValueError("trailing bytes after the arrays")
        return dict(header["meta"]), arrays
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise ChannelError(f"malformed payload: {exc}") from None


@dataclass(frozen=True)
class BodyRef:
    """Where a sealed body that does not travel inline lives: a segment name and its exact size."""

    segment: str
    size: int


def ref_frame(env: Envelope, ref: BodyRef) -> bytes:
    """The pipe frame for `env` whose body is in segment `ref` (the body itself is not included)."""
    head = canonical_json({"segment": ref.segment, "size": ref.size})
    return REF_MAGIC + _U32.pack(len(head)) + head + env.header_bytes()


def frame_header(data: bytes) -> tuple[Envelope, BodyRef | None]:
    """The header-only envelope of a pipe frame, and its BodyRef if the body is in a segment.

    Inline bodies are not copied (the relay routes on this); raises ChannelError if malformed.
    """
    if not data.startswith(REF_MAGIC):
        return Envelope.parse_header(data)[0], None
    try:
        (length,) = _U32.unpack_from(data, len(REF_MAGIC))
        start = len(REF_MAGIC) + 4
        head = json.loads(data[start:start + length])
        ref = BodyRef(str(head["segment"]), int(head["size"]))
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise ChannelError(f"malformed reference frame: {exc}") from None
    rest = data[start + length:]
    env, end = Envelope.parse_header(rest)
    if end != len(rest) or not env.sealed or ref.size <= 0:
        raise ChannelError("malformed reference frame: trailing bytes, a plaintext envelope or a bad size")
    return env, ref
