"""Trap points: where a worker stops and waits for the scheduler's grant (one duplex pipe per worker).

A worker with its trap switch on sends `(kind, step, version)` before reading the parameters (READ)
or before writing its update (WRITE) and blocks until the scheduler answers. The `gated` scheduler
uses the traps to order workers deterministically; under `os_signals` a trap models the controlled
channel (page-fault interception) that hands an enclave thread to the OS at a known point. One pipe
per worker means a stopped or killed worker never holds a lock another worker needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

READ_TRAP, WRITE_TRAP, DONE = "read", "write", "done"


@dataclass(frozen=True)
class TrapEvent:
    """A worker waiting at a trap (or reporting it finished)."""

    rank: int
    kind: str
    step: int  # the worker's local step (batches drawn before this one)
    version: int  # the global step when the worker trapped


class WorkerLink:
    """Worker side of the trap pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def wait_for_grant(self, kind: str, step: int, version: int) -> None:
        """Announce a trap and block until the scheduler grants it; exit if the main process is gone."""
        try:
            self.conn.send((kind, step, version))
            self.conn.recv()
        except (EOFError, OSError):
            os._exit(3)

    def finished(self, step: int, version: int) -> None:
        try:
            self.conn.send((DONE, step, version))
        except (EOFError, OSError):
            pass


def decode(rank: int, message: Any) -> TrapEvent:
    kind, step, version = message
    return TrapEvent(rank, str(kind), int(step), int(version))
