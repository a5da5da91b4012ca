"""The platform side of an attestation backend, as the host holds it: launch enclaves, signal them.

The host decides *what* to launch (role kind, configuration, runtime options) but not what the
enclave's quotes say: the platform loads and measures the code itself and hands the enclave a
private quoting line. The host gets back only what it has in reality: a handle to signal and watch
the process (it is root) and the enclave's end of the relay (it carries all traffic).

`AttestationBackend` pairs that platform side with its verifier side (`attestation.QuoteChecker`).
The mock backend lives in authority.py; the registry in backends.py.
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from siegecraft.enclave.attestation import QuoteChecker
from siegecraft.enclave.errors import CitadelError


class PlatformError(CitadelError):
    """The platform refused a request or is unreachable."""


@dataclass(frozen=True)
class LaunchRequest:
    """What the host asks the platform to load. `extra_modules` is a test hook for altered code: the
    platform loads and measures it with the role's own code, so the enclave's measurement changes."""

    kind: str
    role: str
    config: dict[str, Any] = field(repr=False)
    options: dict[str, Any] = field(repr=False)
    extra_modules: tuple[str, ...] = ()
    debug: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "role": self.role, "config": self.config, "options": self.options,
                "extra_modules": list(self.extra_modules), "debug": self.debug}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LaunchRequest:
        try:
            request = cls(str(data["kind"]), str(data["role"]), dict(data["config"]), dict(data["options"]),
                          tuple(str(m) for m in data.get("extra_modules", ())), bool(data.get("debug", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlatformError(f"malformed launch request: {exc}") from None
        return request


class RoleHandle(ABC):
    """The host's handle on one launched enclave process (it is not necessarily the host's child)."""

    role: str
    pid: int

    @abstractmethod
    def send_signal(self, sig: int) -> bool:
        """Deliver `sig` if the process is still alive; True if it was delivered."""

    @abstractmethod
    def join(self, timeout: float | None = None) -> None:
        """Wait until the process has exited or `timeout` passed."""

    @abstractmethod
    def is_alive(self) -> bool: ...

    @property
    @abstractmethod
    def exitcode(self) -> int | None:
        """The exit status (negative: killed by that signal), None while running."""

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class EnclaveLauncher(ABC):
    """A running platform: launches enclaves it measures, and exercises the host's powers over them."""

    @abstractmethod
    def wait_ready(self, timeout: float) -> bytes:
        """Block until the platform is up; return its signer (the trust anchor verifiers accept)."""

    @abstractmethod
    def launch(self, request: LaunchRequest) -> tuple[RoleHandle, Connection | None]:
        """Load, measure and start one enclave; returns its handle and the relay's end of its pipe (None
        with the network transport, `request.options["net"]`: the enclave connects to the relay itself)."""

    @abstractmethod
    def wait(self, roles: list[str], timeout: float) -> list[str]:
        """Wait until every role in `roles` has exited or `timeout` passed; returns those still running."""

    @abstractmethod
    def close(self, timeout: float = 5.0) -> None:
        """Stop every enclave still running and the platform itself. Safe to call twice."""


class AttestationBackend(ABC):
    """A way to run and attest enclaves: the platform side for the host, the checker for verifiers."""

    name: ClassVar[str]
    #: True when there is no hardware protection at all (then every session start says so)
    simulated: ClassVar[bool]
    notice: ClassVar[str] = ""

    @abstractmethod
    def checker(self) -> QuoteChecker:
        """Verifier side: checks quotes' signature chains."""

    @abstractmethod
    def start_platform(self, ctx: BaseContext, anchors: list[Connection]) -> EnclaveLauncher:
        """Platform side: start it (without waiting for it). The platform sends its trust anchor over
        each of `anchors` (pipes to verifiers outside the host's process, e.g. the data owners), so
        they do not take the host's word for which signer to accept."""
