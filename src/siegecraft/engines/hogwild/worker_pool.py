"""The worker processes: start (fork), stop and continue with real signals, and always clean up.

Only processes this pool started are ever signalled, by pid. `cleanup()` continues stopped workers
before terminating them (a stopped process would otherwise sit on a pending SIGTERM), joins with
timeouts and escalates to SIGKILL, so no child outlives a run, also when the run fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp


def process_state(pid: int) -> str:
    """The kernel's one-letter state of `pid` (R, S, T for stopped, Z, ...), or '' if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


class WorkerPool:
    """Worker processes indexed by rank."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.killed: set[int] = set()
        self.exitcodes: list[int | None] = []

    def start(self, target: Callable[..., None], args_per_rank: list[tuple[Any, ...]]) -> None:
        """Fork one process per argument tuple (fork: shared tensors and data are inherited, not pickled)."""
        ctx = mp.get_context("fork")
        for args in args_per_rank:
            proc = ctx.Process(target=target, args=args, daemon=True)
            proc.start()
            self.procs.append(proc)

    def __len__(self) -> int:
        return len(self.procs)

    def pid(self, rank: int) -> int:
        return int(self.procs[rank].pid)

    def is_alive(self, rank: int) -> bool:
        return self.procs[rank].is_alive()

    def exitcode(self, rank: int) -> int | None:
        return self.procs[rank].exitcode

    def is_stopped(self, rank: int) -> bool:
        return process_state(self.pid(rank)) in ("T", "t")

    def stop(self, rank: int, timeout: float = 5.0) -> bool:
        """SIGSTOP the worker and wait until the kernel reports it stopped; False if it exited instead."""
        if not self.is_alive(rank):
            return False
        os.kill(self.pid(rank), signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = process_state(self.pid(rank))
            if state in ("T", "t"):
                return True
            if state in ("", "Z", "X"):
                return False
            time.sleep(0.0005)
        raise TimeoutError(f"worker {rank} (pid {self.pid(rank)}) did not stop within {timeout} s")

    def cont(self, rank: int) -> None:
        if self.is_alive(rank):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid(rank), signal.SIGCONT)

    def kill(self, rank: int, timeout: float = 5.0) -> None:
        """End one worker now (SIGKILL works on a stopped process and runs none of its code)."""
        proc = self.procs[rank]
        self.killed.add(rank)
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout)

    def join(self, timeout: float = 10.0) -> None:
        """Wait for workers that are exiting on their own (finished their epochs)."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))

    def cleanup(self, timeout: float = 3.0) -> None:
        """Continue, terminate, join; SIGKILL what is left. Safe to call more than once."""
        for proc in self.procs:
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.join(timeout)
        self.exitcodes = [proc.exitcode for proc in self.procs]
