"""The invocation context a running function can ask for, like Lambda's `context` argument.

Functions keep the one-argument signature `fn(payload)`; the runtime that calls them (emulated container or
Lithops wrapper) installs an `InvocationContext` first, so long-running work can checkpoint before its
time limit (`remaining_s()`) and store clients can honour the function's network bandwidth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class InvocationContext:
    """Limits of the invocation in progress: memory tier, deadline and (emulated) network bandwidth."""

    memory_mb: int
    timeout_s: float
    platform: str = "local"
    network_mb_s: float | None = None
    request_id: str = ""
    started_at: float = field(default_factory=time.monotonic)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    def remaining_s(self) -> float:
        """Seconds left before the platform kills this invocation."""
        return self.timeout_s - self.elapsed_s()


_current: InvocationContext | None = None


def current() -> InvocationContext:
    """The running invocation's context; outside any platform, an unlimited local one."""
    return _current if _current is not None else InvocationContext(memory_mb=0, timeout_s=float("inf"))


def install(ctx: InvocationContext | None) -> None:
    """Set (or clear) the current context; called by runtimes just before and after a function runs."""
    global _current
    _current = ctx
