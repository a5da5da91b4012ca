"""The inside of one emulated function container: a fresh process that initialises once, then serves
invocations of one function until it is told to stop or its parent goes away.

The parent (`EmulatedPlatform`) talks to it over a pipe: one pickled request per invocation, one reply
with the outcome, the measured duration and the invocation's peak resident memory.
"""

from __future__ import annotations

import importlib
import os
import pickle
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import TYPE_CHECKING, Any

from siegecraft.engines.serverless import context

if TYPE_CHECKING:
    from typing_extensions import Self

MIB = 1024 * 1024


def resolve_function(name: str) -> Callable[[Any], Any]:
    """Import "module:qualname" the way a FaaS runtime loads a handler."""
    module_name, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def read_status_kb(pid: int | str, field: str) -> int:
    """A "kB" field of /proc/<pid>/status (VmHWM, VmRSS, ...); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def reset_peak_rss() -> None:
    """Reset this process's VmHWM so the next reading is the peak of the coming invocation only."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def tier_exceeded(peak_mb: float, memory_mb: int) -> str:
    """The one message every platform gives an invocation whose peak resident memory exceeded its tier."""
    return f"out of memory: peak {peak_mb:.0f} MB > {memory_mb} MB tier"


class TierExceeded(MemoryError):
    """Raised inside a function process whose peak resident memory exceeded its tier (Lithops' workers).

    Its args are plain numbers so it pickles back to the driver unchanged.
    """

    def __init__(self, peak_mb: float, memory_mb: int) -> None:
        super().__init__(peak_mb, memory_mb)
        self.peak_mb = float(peak_mb)
        self.memory_mb = int(memory_mb)

    def __str__(self) -> str:
        return tier_exceeded(self.peak_mb, self.memory_mb)


class TierWatch:
    """Enforce a memory tier on this process for one invocation, as the emulator's watchdog does.

    Entering resets the peak RSS (VmHWM); a thread reads it every `interval_s` and, past the tier, sends
    this process SIGUSR1, whose handler raises `TierExceeded` in the main thread (the function's). On exit
    the final peak is checked too, so a spike shorter than the interval still fails the invocation.
    Without the main thread (no signal handler possible) only the final check applies.
    """

    def __init__(self, memory_mb: int, interval_s: float = 0.01) -> None:
        self.memory_mb = memory_mb
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._over = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: Any = None
        self._signals = threading.current_thread() is threading.main_thread()

    def _on_signal(self, signum: int, frame: Any) -> None:
        raise TierExceeded(self.peak_mb, self.memory_mb)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            peak = read_status_kb("self", "VmHWM") / 1024.0
            if peak > self.memory_mb:
                self.peak_mb, self._over = peak, True
                if self._signals:
                    os.kill(os.getpid(), signal.SIGUSR1)
                return

    def __enter__(self) -> Self:
        reset_peak_rss()
        if self._signals:
            self._previous = signal.signal(signal.SIGUSR1, self._on_signal)
        self._thread = threading.Thread(target=self._watch, name="tier-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._signals:
            signal.signal(signal.SIGUSR1, self._previous)
        self.peak_mb = max(self.peak_mb, read_status_kb("self", "VmHWM") / 1024.0)
        if exc_type is None and self.peak_mb > self.memory_mb:
            raise TierExceeded(self.peak_mb, self.memory_mb)
        if exc is not None and not isinstance(exc, TierExceeded) and self._over:
            raise TierExceeded(self.peak_mb, self.memory_mb) from exc


def limit_threads(threads: int) -> None:
    """Give the function `threads` compute threads (env vars for a fresh import, torch if loaded)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def container_main(
    conn: Connection,
    function: str,
    memory_mb: int,
    threads: int,
    address_limit_mb: int | None,
    preload: tuple[str, ...],
    platform: str,
    network_mb_s: float | None,
) -> None:
    """Process entry point: apply limits, import the runtime and the handler, then serve invocations."""
    try:
        if address_limit_mb is not None:
            limit = address_limit_mb * MIB
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        limit_threads(threads)
        for module in preload:
            importlib.import_module(module)
        limit_threads(threads)
        fn = resolve_function(function)
    except BaseException as exc:  # noqa: BLE001 - an init failure is reported, not raised
        conn.send(("init_error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not request:
            return
        request_id, timeout_s, payload_bytes = pickle.loads(request)
        conn.send_bytes(
            _serve_one(fn, request_id, timeout_s, payload_bytes, memory_mb, platform, network_mb_s)
        )


def _serve_one(
    fn: Callable[[Any], Any],
    request_id: str,
    timeout_s: float,
    payload_bytes: bytes,
    memory_mb: int,
    platform: str,
    network_mb_s: float | None,
) -> bytes:
    """Run one invocation and pickle (kind, result-bytes-or-message, duration_ms, peak_mb)."""
    reset_peak_rss()
    context.install(
        context.InvocationContext(
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            platform=platform,
            network_mb_s=network_mb_s,
            request_id=request_id,
        )
    )
    start = time.perf_counter()
    kind, body = "ok", b""
    try:
        body = pickle.dumps(fn(pickle.loads(payload_bytes)), protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        kind, body = "memory", f"out of memory: MemoryError (address-space limit of the {memory_mb} MB tier)".encode()
    except BaseException as exc:  # noqa: BLE001 - the function's failure is the invocation's outcome
        kind, body = "error", traceback.format_exc(limit=8).encode() or repr(exc).encode()
    finally:
        context.install(None)
    duration_ms = (time.perf_counter() - start) * 1000.0
    peak_mb = read_status_kb("self", "VmHWM") / 1024.0
    return pickle.dumps((kind, body, duration_ms, peak_mb), protocol=pickle.HIGHEST_PROTOCOL)
