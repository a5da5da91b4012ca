"""Tiny deployable functions used to check and calibrate platforms (tests, benchmark, `bench` CLI).

They must live in an importable module: platforms deploy functions by "module:qualname".
"""

from __future__ import annotations

import os
import time
from typing import Any

from siegecraft.engines.serverless import context


def echo(payload: Any) -> Any:
    """Return the payload unchanged."""
    return payload


def whoami(payload: Any) -> dict[str, Any]:
    """The container's pid, thread count and the invocation context it sees."""
    import torch

    ctx = context.current()
    return {
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "memory_mb": ctx.memory_mb,
        "timeout_s": ctx.timeout_s,
        "payload": payload,
    }


def sleep(seconds: float) -> float:
    """Sleep (no CPU), return the seconds slept."""
    time.sleep(seconds)
    return seconds


def spin(seconds_of_cpu: float) -> float:
    """Burn `seconds_of_cpu` of CPU time in Python; returns the wall time it took."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    x = 0
    while time.process_time() - start_cpu < seconds_of_cpu:
        x += 1
    return time.perf_counter() - start_wall


def allocate(megabytes: int) -> int:
    """Touch `megabytes` of fresh memory (resident), hold it briefly, return its size."""
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(0.05)
    return len(block)


def fail(message: str) -> None:
    """Raise, to check that function errors come back as failed invocations."""
    raise RuntimeError(message)


def matmul_seconds(size: int) -> float:
    """Time one float32 matrix product of `size` x `size` with torch's threads (CPU-share calibration)."""
    import torch

    a = torch.ones(size, size)
    start = time.perf_counter()
    (a @ a).sum().item()
    return time.perf_counter() - start


def store_put(request: tuple[Any, str, bytes]) -> int:
    """Connect to the store at `spec` from inside the function and write `value` under `key`."""
    from siegecraft.engines.serverless.store import connect

    spec, key, value = request
    with connect(spec) as store:
        store.put(key, value)
        return len(store.get(key) or b"")


def gradient_seconds(request: dict[str, Any]) -> list[float]:
    """Wall seconds of `reps` forward+backward passes of a model on random images (compute calibration)."""
    import torch

    from siegecraft.core.models import build_model

    torch.manual_seed(0)
    model = build_model(request.get("model", "cnn"), in_channels=1, num_classes=10, image_size=28)
    x = torch.rand(request["batch"], 1, 28, 28)
    y = torch.randint(0, 10, (request["batch"],))
    times = []
    for _ in range(request.get("reps", 5) + 1):
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        times.append(time.perf_counter() - start)
    return times[1:]


def store_timings(request: tuple[Any, int, int]) -> dict[str, float]:
    """Median round trip of a tiny GET and seconds per MB of PUT+GET of `size` bytes, from inside a function."""
    import statistics

    from siegecraft.engines.serverless.store import connect

    spec, size, reps = request
    blob = b"\1" * size
    with connect(spec) as store:
        store.put("probe/small", b"1")
        small, big = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            store.get("probe/small")
            t1 = time.perf_counter()
            store.put("probe/big", blob)
            store.get("probe/big")
            big.append(time.perf_counter() - t1)
            small.append(t1 - t0)
        store.delete(["probe/small", "probe/big"])
    return {"latency_s": statistics.median(small), "s_per_mb": statistics.median(big) / (2 * size / 1e6)}
