"""`lithops`: the `FunctionPlatform` interface over Lithops (localhost, AWS Lambda, GCP, Kubernetes, ...).

The Lithops configuration dict passes through unchanged (`config={"lithops": {"backend": "aws_lambda"},
"aws": {...}, "aws_lambda": {...}}`, see Lithops' docs); only the localhost backend is tested here, where the
runtime defaults to this interpreter and `worker_processes` to the concurrency, because synchronous
workers must all run at once. Billing records come from each future's stats: duration from
`worker_func_exec_time`, cold from `worker_cold_start`; peak memory is the function process's own peak RSS.

The memory tier is enforced inside the function process as the emulator enforces it (localhost ignores
`runtime_memory`): `TierWatch` resets and samples the peak RSS and fails the invocation past the tier
with kind "memory" and the emulator's message.
"""

from __future__ import annotations

import copy
import math
import pickle
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from siegecraft.engines.serverless import context
from siegecraft.engines.serverless.billing import PriceTable, make_record
from siegecraft.engines.serverless.container import TierExceeded, TierWatch, resolve_function
from siegecraft.engines.serverless.platform import PLATFORMS, FunctionPlatform, Invocation, function_name


def lithops_entry(request: tuple[str, Any, int, float, float | None]) -> tuple[Any, float]:
    """What Lithops runs: install the invocation context, call the deployed function by name under its
    memory tier; returns (result, peak resident MB). Over the tier it raises `TierExceeded`."""
    name, payload, memory_mb, timeout_s, network_mb_s = request
    fn = resolve_function(name)
    context.install(context.InvocationContext(memory_mb, timeout_s, "lithops", network_mb_s))
    try:
        with TierWatch(memory_mb) as watch:
            result = fn(payload)
        return result, watch.peak_mb
    finally:
        context.install(None)


def classify(exc: BaseException) -> tuple[str, str, float | None]:
    """A failed Lithops call as (kind, message, peak MB if known): memory, timeout or error."""
    if isinstance(exc, TierExceeded):
        return "memory", str(exc), exc.peak_mb
    if isinstance(exc, MemoryError):  # also Lithops' own MemoryError('HANDLER', reason) for a SIGKILLed function
        return "memory", "out of memory: " + " ".join(str(a) for a in exc.args if a != "HANDLER"), None
    kind = "timeout" if "timeout" in str(exc).lower() else "error"
    return kind, f"{type(exc).__name__}: {exc}", None


def lithops_config(
    config: dict[str, Any] | None, backend: str, storage: str, concurrency: int
) -> dict[str, Any]:
    """The Lithops config with our defaults for anything not set (localhost: this interpreter, n processes)."""
    cfg = copy.deepcopy(config or {})
    cfg.setdefault("lithops", {}).setdefault("backend", backend)
    cfg["lithops"].setdefault("storage", storage)
    cfg["lithops"].setdefault("data_cleaner", False)  # cleaning after each get_result races concurrent jobs
    if cfg["lithops"]["backend"] == "localhost":
        local = cfg.setdefault("localhost", {})
        local.setdefault("runtime", sys.executable)
        local.setdefault("worker_processes", concurrency)
    return cfg


class LithopsPlatform(FunctionPlatform):
    """Invocations through one `lithops.FunctionExecutor`; memory maps to `runtime_memory`."""

    name = "lithops"

    def __init__(
        self,
        *,
        config: dict[str, Any] | None = None,
        backend: str = "localhost",
        storage: str = "localhost",
        prices: PriceTable | None = None,
        concurrency: int = 64,
        payload_limit_bytes: int = 6 * 1024 * 1024,
        network_mb_s: float | None = None,
        log_level: str | None = None,
    ) -> None:
        import lithops

        super().__init__(prices)
        self.concurrency = concurrency
        self.payload_limit_bytes = payload_limit_bytes
        self.network_mb_s = network_mb_s
        self.config = lithops_config(config, backend, storage, concurrency)
        self._executor = lithops.FunctionExecutor(config=self.config, log_level=log_level)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="lithops-invoke")
        self._submit_lock = threading.Lock()

    def submit(self, fn: Callable[[Any], Any], payload: Any, *, memory_mb: int, timeout_s: float) -> Future:
        self.check_limits(memory_mb, timeout_s)
        name = function_name(fn)
        size = len(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        if size > self.payload_limit_bytes:
            raise ValueError(f"lithops: payload of {size} bytes exceeds {self.payload_limit_bytes}")
        return self._pool.submit(self._run, name, payload, memory_mb, timeout_s)

    def _run(self, name: str, payload: Any, memory_mb: int, timeout_s: float) -> Invocation:
        started = time.time()
        request = (name, payload, memory_mb, timeout_s, self.network_mb_s)
        with self._submit_lock:
            future = self._executor.call_async(
                lithops_entry, {"request": request}, runtime_memory=memory_mb, timeout=math.ceil(timeout_s)
            )
        kind, error, result, peak_mb = "ok", "", None, None
        try:
            # no wait timeout here: Lithops arms SIGALRM for it, which only works in the main thread; the
            # function's own `timeout` is enforced by the backend.
            result, peak_mb = self._executor.get_result(fs=[future], show_progressbar=False)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a failed invocation
            kind, error, peak_mb = classify(exc)
        stats = getattr(future, "stats", {}) or {}
        if peak_mb is None:
            peak_mb = float(stats.get("worker_peak_memory_end") or 0.0) / 2**20
        duration_ms = float(stats.get("worker_func_exec_time", time.time() - started)) * 1000.0
        cold = bool(stats.get("worker_cold_start", False))
        init_ms = 0.0
        if cold and "worker_func_start_tstamp" in stats and "worker_start_tstamp" in stats:
            init_ms = max(0.0, (stats["worker_func_start_tstamp"] - stats["worker_start_tstamp"]) * 1000.0)
        record = make_record(
            self.prices,
            function=name,
            memory_mb=memory_mb,
            duration_ms=duration_ms,
            init_ms=init_ms,
            cold=cold,
            max_memory_used_mb=peak_mb,
            status=kind,
            started_at=started,
        )
        return Invocation(name, record, result=result, kind=kind, error=error)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        try:
            self._executor.clean(clean_cloudobjects=False)
        except Exception:  # noqa: BLE001, S110 - cleaning temporary files is best effort
            pass


PLATFORMS.register("lithops")(LithopsPlatform)
