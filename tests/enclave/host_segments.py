"""What a hostile host can do to a shared-memory segment: read it, flip a byte, truncate or rewrite it."""

from __future__ import annotations

import _posixshmem
import os


def _open(name: str, flags: int) -> int:
    return _posixshmem.shm_open("/" + name, flags, mode=0o600)


def segment_bytes(name: str) -> bytes:
    fd = _open(name, os.O_RDONLY)
    try:
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def flip_byte(name: str, offset: int) -> None:
    fd = _open(name, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 0x01]), offset)
    finally:
        os.close(fd)


def truncate(name: str, size: int) -> None:
    fd = _open(name, os.O_RDWR)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def overwrite(name: str, data: bytes) -> None:
    """Replace the segment's whole content with `data` (any size)."""
    fd = _open(name, os.O_RDWR)
    try:
        os.ftruncate(fd, len(data))
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
