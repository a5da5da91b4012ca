"""Shared-memory segments: how bulk ciphertext moves between role processes without the relay's pipes.

A segment only ever holds ciphertext (a sealed envelope body, or a round's broadcast); the pipe carries
a small reference to it. The host can read, change, truncate or delete a segment, exactly as it can a
pipe message, so a reader first copies the bytes into private memory with `read()` (never a shared
mapping: no double fetch between authenticating and using the bytes, and no SIGBUS when the host
truncates the segment) and only then authenticates them.

Lifetimes are explicit: the receiver of a point-to-point segment unlinks it as soon as it has its
copy, the writer of a broadcast unlinks it when the round ends, and the session sweeps its random
name prefix on close, so nothing outlives a deployment even when a process dies mid-round. Segments
are opened through CPython's `_posixshmem` (the module behind `multiprocessing.shared_memory`)
rather than `SharedMemory`, because before Python 3.13 every `SharedMemory` attach registers the name
with the shared resource tracker, and concurrent readers of one broadcast would race its bookkeeping.
POSIX only (like the rest of the simulation, which uses SIGSTOP and /dev/shm).
"""

from __future__ import annotations

import _posixshmem
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from siegecraft.enclave.errors import ChannelError

SHM_DIR = Path("/dev/shm")
MAX_SEGMENT_BYTES = 1 << 32
_TOKEN_BYTES = 8
_PREFIX_RE = re.compile(r"ctdl[0-9a-f]{8}_")


class SegmentError(ChannelError):
    """A shared-memory segment is missing, has the wrong size, or its name is not this session's."""


class SegmentMissingError(SegmentError):
    """The segment does not exist (already consumed, unlinked at the end of its round, or deleted)."""


def new_prefix() -> str:
    """A random per-session name prefix (`ctdl<8 hex>_`); names stay under macOS's 31-character limit."""
    return f"ctdl{secrets.token_hex(4)}_"


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"not a segment prefix: {prefix!r}")
    return prefix


def check_name(name: str, prefix: str) -> str:
    """Refuse names outside this session's namespace (a host must not make an enclave unlink others')."""
    if not isinstance(name, str) or not re.fullmatch(re.escape(prefix) + f"[0-9a-f]{{{2 * _TOKEN_BYTES}}}", name):
        raise SegmentError(f"segment name {name!r} is not in this session's namespace {prefix!r}")
    return name


def write(prefix: str, data: bytes | bytearray | memoryview) -> str:
    """Create a fresh segment holding exactly `data`; returns its name. Unlinked again on any failure."""
    view = memoryview(data).cast("B")
    if not 0 < view.nbytes <= MAX_SEGMENT_BYTES:
        raise ValueError(f"segment size must be in 1..{MAX_SEGMENT_BYTES}, got {view.nbytes}")
    name = prefix + secrets.token_hex(_TOKEN_BYTES)
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        done = 0
        while done < view.nbytes:
            done += os.write(fd, view[done:])
    except BaseException:
        unlink(name)
        raise
    finally:
        os.close(fd)
    return name


def read(name: str, size: int, prefix: str, into: bytearray | None = None) -> memoryview:
    """A private, writable copy of segment `name`, which must hold exactly `size` bytes; raises SegmentError.

    With `into` (at least `size` bytes), the copy lands in its start and a view of those bytes is returned:
    a reader that copies one segment per round reuses its buffer instead of allocating one."""
    check_name(name, prefix)
    if not 0 < size <= MAX_SEGMENT_BYTES:
        raise SegmentError(f"segment size {size} out of range")
    if into is not None and len(into) < size:
        raise ValueError(f"buffer of {len(into)} bytes cannot hold a segment of {size}")
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    except FileNotFoundError:
        raise SegmentMissingError(f"segment {name} does not exist (already consumed, or deleted by the host)") from None
    try:
        actual = os.fstat(fd).st_size
        if actual != size:
            raise SegmentError(f"segment {name} holds {actual} bytes, {size} were announced (truncated or altered)")
        # a fresh buffer is left uninitialised (every byte is read into it below, or it is discarded)
        buf = memoryview(np.empty(size, dtype=np.uint8) if into is None else into)[:size]
        done = 0
        while done < size:
            got = os.preadv(fd, [buf[done:]], done)
            if got == 0:
                raise SegmentError(f"segment {name} was truncated while being read ({done} of {size} bytes)")
            done += got
        return buf
    finally:
        os.close(fd)


def unlink(name: str) -> bool:
    """Remove segment `name`; False if it was already gone."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


def unlink_all(names: Iterable[str]) -> int:
    return sum(unlink(n) for n in list(names))


def live(prefix: str) -> list[str]:
    """Names of this prefix's segments that still exist (Linux: listed from /dev/shm; [] elsewhere)."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in SHM_DIR.glob(check_prefix(prefix) + "*"))


def sweep(prefix: str) -> int:
    """Unlink every remaining segment of `prefix` (session close); returns how many there were."""
    return unlink_all(live(prefix))
