"""The `FunctionPlatform` interface: run `fn(payload)` as a billed serverless function invocation.

Every platform (emulated, lithops, ...) answers `invoke(fn, payload, memory_mb, timeout_s)` with an
`Invocation`: the result or the failure kind, and the `BillingRecord` the provider would charge. Failed
invocations are billed too, as on real FaaS. `submit` is the asynchronous form and `map` the batch form,
because a training step invokes n workers at once.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from siegecraft.core.registry import Registry
from siegecraft.engines.serverless.billing import BillingRecord, PriceTable

if TYPE_CHECKING:
    from typing_extensions import Self

FAILURE_KINDS = ("error", "timeout", "killed", "memory", "payload", "throttled")


class InvocationFailed(RuntimeError):
    """Raised by `Invocation.value()` when the invocation did not return a result."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass
class Invocation:
    """Outcome of one function invocation: the result (kind "ok") or a failure kind and message."""

    function: str
    billing: BillingRecord
    result: Any = None
    kind: str = "ok"
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def value(self) -> Any:
        """The function's return value, or raise `InvocationFailed` with the failure kind."""
        if not self.ok:
            raise InvocationFailed(self.kind, self.error)
        return self.result


def function_name(fn: Callable[..., Any]) -> str:
    """The deployable name of `fn`: "module:qualname" (functions must be importable by that name)."""
    return f"{fn.__module__}:{fn.__qualname__}"


class FunctionPlatform(ABC):
    """A FaaS platform: asynchronous billed invocations with memory tiers and hard time limits."""

    name: str = "abstract"
    max_timeout_s: float = 900.0

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices or PriceTable()

    @abstractmethod
    def submit(self, fn: Callable[[Any], Any], payload: Any, *, memory_mb: int, timeout_s: float) -> Future:
        """Start one invocation; the future resolves to an `Invocation` (it never raises)."""

    def invoke(self, fn: Callable[[Any], Any], payload: Any, memory_mb: int, timeout_s: float) -> Invocation:
        """Run one invocation to completion (synchronous form)."""
        return self.submit(fn, payload, memory_mb=memory_mb, timeout_s=timeout_s).result()

    def map(
        self, fn: Callable[[Any], Any], payloads: Sequence[Any], *, memory_mb: int, timeout_s: float
    ) -> list[Invocation]:
        """Invoke `fn` once per payload, concurrently up to the platform's concurrency; results in order."""
        futures = [self.submit(fn, p, memory_mb=memory_mb, timeout_s=timeout_s) for p in payloads]
        return [f.result() for f in futures]

    def check_limits(self, memory_mb: int, timeout_s: float) -> None:
        """Reject a memory tier or time limit the platform does not offer (before anything is billed)."""
        lo, hi = self.prices.min_memory_mb, self.prices.max_memory_mb
        if not lo <= memory_mb <= hi:
            raise ValueError(f"{self.name}: memory_mb must be in [{lo}, {hi}], got {memory_mb}")
        if not 0 < timeout_s <= self.max_timeout_s:
            raise ValueError(f"{self.name}: timeout_s must be in (0, {self.max_timeout_s}], got {timeout_s}")

    def close(self) -> None:
        """Release every process or client the platform holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PLATFORMS: Registry[Callable[..., FunctionPlatform]] = Registry("function platform")


def make_platform(name: str, **options: Any) -> FunctionPlatform:
    """Build the registered platform `name` ("emulated", "lithops") with its options."""
    builtin = {"emulated": "emulated", "lithops": "lithops_platform"}
    if name not in PLATFORMS and name in builtin:
        importlib.import_module(f"siegecraft.engines.serverless.{builtin[name]}")  # registers the built-in platform
    return PLATFORMS.get(name)(**options)
