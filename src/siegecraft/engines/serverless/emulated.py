"""`emulated`: a local FaaS that behaves like AWS Lambda where it matters for cost and time.

- Cold start: a fresh process per container (forked from a pre-initialised server by default, or a full
  `spawn`); its init time is measured and billed. Warm containers are reused (newest first) until they
  have been idle longer than `keep_alive_s`.
- Memory tier: one container serves one (function, memory) pair. From `address_limit_from_mb` (1 GiB) up
  the kernel enforces RLIMIT_AS = the tier; at every tier a watchdog fails the invocation whose peak
  resident memory exceeds the tier, and so does the container's own final peak reading (short spikes). The machine's cgroups are never touched.
- CPU: threads = max(1, memory / 1769 MB); below 1769 MB the container only runs for a memory/1769 share
  of each period (SIGSTOP/SIGCONT duty cycle), as a fractional Lambda vCPU does.
- Hard timeout (the container is killed), a concurrency cap (excess invocations queue), payload limits,
  prices from a `PriceTable`, optional per-function network bandwidth for store traffic, and optional
  fault injection (kill a seeded random fraction of invocations at a random moment).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from siegecraft.engines.serverless.billing import BillingRecord, PriceTable, make_record
from siegecraft.engines.serverless.container import container_main, read_status_kb, tier_exceeded
from siegecraft.engines.serverless.platform import PLATFORMS, FunctionPlatform, Invocation, function_name

MB = 1024 * 1024


@dataclass(eq=False)
class _Container:
    """Parent-side handle of one container process."""

    process: Any
    conn: Any
    function: str
    memory_mb: int
    last_used: float = field(default_factory=time.monotonic)
    invocations: int = 0

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def kill(self) -> None:
        """SIGKILL the container (continuing it first if the throttle had stopped it)."""
        if self.process.is_alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        """Ask an idle container to exit; kill it if it does not."""
        try:
            self.conn.send_bytes(b"")
        except OSError:
            pass
        self.process.join(timeout=2)
        self.kill()


@dataclass
class PlatformStats:
    """Counters an experiment reports next to its bill."""

    invocations: int = 0
    cold_starts: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    injected_faults: int = 0


class _Fault:
    """A planned kill: at `delay_s` into the invocation, or right after it finishes if that comes first."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s


class EmulatedPlatform(FunctionPlatform):
    """Local Lambda-like platform; see the module docstring for what is emulated and how."""

    name = "emulated"

    def __init__(
        self,
        *,
        prices: PriceTable | None = None,
        concurrency: int = 64,
        keep_alive_s: float = 600.0,
        start_method: str = "forkserver",
        preload: tuple[str, ...] | list[str] = ("torch",),
        payload_limit_bytes: int = 6 * MB,
        result_limit_bytes: int = 6 * MB,
        throttle_cpu: bool = True,
        throttle_period_ms: float = 20.0,
        watch_interval_ms: float = 10.0,
        address_limit_from_mb: int | None = 1024,
        max_threads: int | None = None,
        init_timeout_s: float = 60.0,
        network_mb_s: float | None = None,
        fault_rate: float = 0.0,
        fault_seed: int = 0,
        max_timeout_s: float = 900.0,
    ) -> None:
        super().__init__(prices)
        if concurrency < 1:
            raise ValueError(f"emulated: concurrency must be >= 1, got {concurrency}")
        if not 0.0 <= fault_rate < 1.0:
            raise ValueError(f"emulated: fault_rate must be in [0, 1), got {fault_rate}")
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"emulated: start_method must be 'forkserver' or 'spawn', got {start_method!r}")
        self.concurrency = concurrency
        self.keep_alive_s = keep_alive_s
        self.preload = tuple(preload)
        self.payload_limit_bytes = payload_limit_bytes
        self.result_limit_bytes = result_limit_bytes
        self.throttle_cpu = throttle_cpu
        self.throttle_period_s = throttle_period_ms / 1000.0
        self.watch_interval_s = watch_interval_ms / 1000.0
        self.address_limit_from_mb = address_limit_from_mb
        self.max_threads = max_threads or os.cpu_count() or 1
        self.init_timeout_s = init_timeout_s
        self.network_mb_s = network_mb_s
        self.fault_rate = fault_rate
        self.max_timeout_s = max_timeout_s
        self.stats = PlatformStats()
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver" and self.preload:
            # "__main__" first (multiprocessing's own default): the server imports the main script once, so a
            # forked container does not re-run a heavy script's imports on every cold start.
            self._ctx.set_forkserver_preload(["__main__", "siegecraft.engines.serverless.container", *self.preload])
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="emulated-invoke")
        self._idle: dict[tuple[str, int], list[_Container]] = {}
        self._busy: set[_Container] = set()
        self._lock = threading.Lock()
        self._fault_rng = random.Random(fault_seed)
        self._mean_ms: dict[str, float] = {}
        self._closed = False

    # -- CPU and memory rules -------------------------------------------------------------------------
    def threads_for(self, memory_mb: int) -> int:
        """Compute threads of a tier: one per 1,769 MB (at least one), capped by this machine's cores."""
        return max(1, min(self.max_threads, int(memory_mb // self.prices.mb_per_vcpu)))

    def cpu_share(self, memory_mb: int) -> float:
        """Fraction of one CPU a tier below one vCPU may use (1.0 from 1,769 MB up)."""
        return min(1.0, self.prices.vcpus(memory_mb))

    def address_limit_mb(self, memory_mb: int) -> int | None:
        if self.address_limit_from_mb is not None and memory_mb >= self.address_limit_from_mb:
            return memory_mb
        return None

    # -- public interface -----------------------------------------------------------------------------
    def submit(self, fn: Callable[[Any], Any], payload: Any, *, memory_mb: int, timeout_s: float) -> Future:
        if self._closed:
            raise RuntimeError("emulated platform is closed")
        self.check_limits(memory_mb, timeout_s)
        name = function_name(fn)
        payload_bytes = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        if len(payload_bytes) > self.payload_limit_bytes:
            done: Future = Future()
            msg = f"payload of {len(payload_bytes)} bytes exceeds the {self.payload_limit_bytes}-byte limit"
            done.set_result(self._rejected(name, memory_mb, "payload", msg))
            return done
        fault = self._plan_fault(name)
        return self._pool.submit(self._run, name, payload_bytes, memory_mb, timeout_s, fault)

    def warm_containers(self, fn: Callable[[Any], Any] | None = None) -> int:
        """Idle containers currently kept warm (for one function, or all)."""
        with self._lock:
            return sum(
                len(v) for (name, _), v in self._idle.items() if fn is None or name == function_name(fn)
            )

    def reap(self) -> int:
        """Stop idle containers older than `keep_alive_s`; returns how many were stopped."""
        now = time.monotonic()
        expired: list[_Container] = []
        with self._lock:
            for key, pool in self._idle.items():
                keep = [c for c in pool if now - c.last_used <= self.keep_alive_s and c.alive()]
                expired.extend(c for c in pool if c not in keep)
                self._idle[key] = keep
        for c in expired:
            c.stop()
        return len(expired)

    def close(self) -> None:
        """Kill every container, idle or busy, and stop accepting invocations."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            containers = [c for pool in self._idle.values() for c in pool] + list(self._busy)
            self._idle.clear()
        for c in containers:
            c.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- internals --------------------------------------------------------------------------------------
    def _plan_fault(self, name: str) -> _Fault | None:
        if self.fault_rate <= 0.0:
            return None
        with self._lock:
            if self._fault_rng.random() >= self.fault_rate:
                return None
            window_s = self._mean_ms.get(name, 50.0) / 1000.0
            return _Fault(self._fault_rng.uniform(0.0, window_s))

    def _rejected(self, name: str, memory_mb: int, kind: str, message: str) -> Invocation:
        record = BillingRecord(name, memory_mb, 0.0, 0.0, 0, False, 0.0, 0.0, kind, time.time())
        with self._lock:
            self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1
        return Invocation(name, record, kind=kind, error=message)

    def _acquire(self, name: str, memory_mb: int) -> tuple[_Container | None, float, str]:
        """A warm container, or a cold-started one with its init time in ms (or an init error)."""
        self.reap()
        with self._lock:
            pool = self._idle.get((name, memory_mb), [])
            while pool:
                c = pool.pop()
                if c.alive():
                    self._busy.add(c)
                    return c, 0.0, ""
        return self._cold_start(name, memory_mb)

    def _cold_start(self, name: str, memory_mb: int) -> tuple[_Container | None, float, str]:
        start = time.perf_counter()
        parent, child = self._ctx.Pipe(duplex=True)
        args = (
            child,
            name,
            memory_mb,
            self.threads_for(memory_mb),
            self.address_limit_mb(memory_mb),
            self.preload,
            self.name,
            self.network_mb_s,
        )
        process = self._ctx.Process(target=container_main, args=args, daemon=True)
        process.start()
        child.close()
        c = _Container(process, parent, name, memory_mb)
        error = ""
        if not parent.poll(self.init_timeout_s):
            error = f"init did not finish within {self.init_timeout_s} s"
        else:
            try:
                status, detail = parent.recv()
                if status != "ready":
                    error = f"init failed: {detail}"
            except EOFError:
                error = f"container died during init (exit code {process.exitcode})"
        init_ms = (time.perf_counter() - start) * 1000.0
        peak_mb = read_status_kb(c.pid, "VmHWM") / 1024.0
        if not error and peak_mb > memory_mb:
            error = tier_exceeded(peak_mb, memory_mb) + " (at init)"
        with self._lock:
            self.stats.cold_starts += 1
        if error:
            c.kill()
            return None, init_ms, error
        with self._lock:
            self._busy.add(c)
        return c, init_ms, ""

    def _release(self, c: _Container, reuse: bool) -> None:
        with self._lock:
            self._busy.discard(c)
            if reuse and not self._closed:
                c.last_used = time.monotonic()
                self._idle.setdefault((c.function, c.memory_mb), []).append(c)
                return
        c.kill()

    def _run(
        self, name: str, payload_bytes: bytes, memory_mb: int, timeout_s: float, fault: _Fault | None
    ) -> Invocation:
        started_at = time.time()
        container, init_ms, init_error = self._acquire(name, memory_mb)
        if container is None:
            kind = "memory" if init_error.startswith("out of memory") else "error"
            return self._finish(name, memory_mb, 0.0, init_ms, True, 0.0, kind, init_error, None, started_at)
        cold = init_ms > 0.0
        request_id = uuid.uuid4().hex
        container.invocations += 1
        container.conn.send_bytes(pickle.dumps((request_id, timeout_s, payload_bytes)))
        t0 = time.perf_counter()
        kind, message, reply = self._watch(container, memory_mb, timeout_s, fault, t0)
        wall_ms = (time.perf_counter() - t0) * 1000.0
        result, duration_ms, peak_mb = None, wall_ms, read_status_kb(container.pid, "VmHWM") / 1024.0
        if reply is not None:
            kind, body, duration_ms, peak_mb = pickle.loads(reply)
            if kind == "ok" and peak_mb > memory_mb:  # a spike between two watchdog samples
                kind, message = "memory", tier_exceeded(peak_mb, memory_mb)
            elif kind == "ok" and len(body) > self.result_limit_bytes:
                kind, message = "error", f"result of {len(body)} bytes exceeds {self.result_limit_bytes}"
            elif kind == "ok":
                result = pickle.loads(body)
            else:
                message = body.decode(errors="replace")
        self._release(container, reuse=reply is not None and kind in ("ok", "error"))
        if kind == "ok":
            with self._lock:
                prev = self._mean_ms.get(name, duration_ms)
                self._mean_ms[name] = 0.8 * prev + 0.2 * duration_ms
        return self._finish(
            name, memory_mb, duration_ms, init_ms, cold, peak_mb, kind, message, result, started_at
        )

    def _watch(
        self, c: _Container, memory_mb: int, timeout_s: float, fault: _Fault | None, t0: float
    ) -> tuple[str, str, bytes | None]:
        """Wait for the reply while enforcing timeout, memory tier, CPU share and planned faults."""
        share = self.cpu_share(memory_mb) if self.throttle_cpu else 1.0
        run_s = share * self.throttle_period_s if share < 1.0 else self.watch_interval_s
        stop_s = (1.0 - share) * self.throttle_period_s if share < 1.0 else 0.0
        while True:
            try:
                ready = c.conn.poll(run_s)
            except (EOFError, OSError):
                ready = True
            elapsed = time.perf_counter() - t0
            if ready:
                try:
                    reply = c.conn.recv_bytes()
                except (EOFError, OSError):
                    return "error", f"container crashed (exit code {c.process.exitcode})", None
                if fault is not None:
                    self._count_fault()
                    return "killed", "injected fault: killed before responding", None
                return "ok", "", reply
            if elapsed > timeout_s:
                c.kill()
                return "timeout", f"task timed out after {timeout_s:.3f} s", None
            peak_mb = read_status_kb(c.pid, "VmHWM") / 1024.0
            if peak_mb > memory_mb:
                c.kill()
                return "memory", tier_exceeded(peak_mb, memory_mb), None
            if fault is not None and elapsed >= fault.delay_s:
                c.kill()
                self._count_fault()
                return "killed", f"injected fault: killed after {elapsed:.3f} s", None
            if stop_s > 0.0:
                self._pause(c, stop_s)

    @staticmethod
    def _pause(c: _Container, seconds: float) -> None:
        try:
            os.kill(c.pid, signal.SIGSTOP)
            time.sleep(seconds)
        except ProcessLookupError:
            return
        finally:
            try:
                os.kill(c.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def _count_fault(self) -> None:
        with self._lock:
            self.stats.injected_faults += 1

    def _finish(
        self,
        name: str,
        memory_mb: int,
        duration_ms: float,
        init_ms: float,
        cold: bool,
        peak_mb: float,
        kind: str,
        message: str,
        result: Any,
        started_at: float,
    ) -> Invocation:
        record = make_record(
            self.prices,
            function=name,
            memory_mb=memory_mb,
            duration_ms=duration_ms,
            init_ms=init_ms,
            cold=cold,
            max_memory_used_mb=peak_mb,
            status=kind,
            started_at=started_at,
        )
        with self._lock:
            self.stats.invocations += 1
            if kind != "ok":
                self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1
        return Invocation(name, record, result=result if kind == "ok" else None, kind=kind, error=message)


PLATFORMS.register("emulated")(EmulatedPlatform)
