"""Citadel roles placed on a Ray cluster: one Ray actor per role, started by the platform, not the host.

Placement decision (SIMULATION, like the rest of the mock platform): the quoting authority
(authority.py) stays the single platform process the host started, holding the only signing key.
When a launch request asks for Ray placement, the *authority* joins the cluster as a Ray driver and
creates an `EnclaveSlot` actor for the role (num_cpus=0, so every role fits on a small machine); the
host never holds the actor handle. The slot is the platform's agent on whichever node Ray picked: it
opens the role's private quoting line back to the authority (a TCP connection authenticated with a
fresh 256-bit key the authority put in the actor's constructor arguments), then starts the role
process under itself with `roles.process.role_main`, exactly as the authority does locally, and
keeps the powers the host has over a process on that node (signals, exit status), which the
authority exercises for the host through its control line. The role connects to the relay over the
network transport (net.py) with its admission ticket, so its traffic is the same sealed envelopes.

What stays simulated: the host runs the Ray cluster and could read the actor's arguments (the
quoting key) from Ray's control store, as it could read the authority's memory on one machine.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from siegecraft.enclave.launcher import LaunchRequest, PlatformError
from siegecraft.enclave.quoting import EnclavePlatform, PipeQuoter
from siegecraft.enclave.roles.process import role_main

log = logging.getLogger("siegecraft.enclave")
KEY_BYTES = 32
CALL_TIMEOUT_S = 30.0
JOIN_POLL_S = 0.05


def import_ray() -> Any:
    """Ray is an optional extra (`siegecraft[ray]`); only Ray placement needs it."""
    try:
        import ray  # optional dependency, imported only when a role is placed on Ray
    except ImportError as exc:
        raise PlatformError("Ray placement needs the ray package (pip install 'siegecraft[ray]')") from exc
    return ray


class EnclaveSlot:
    """The Ray actor that hosts one role process on its node (the platform's agent there)."""

    def __init__(self, request: dict[str, Any], platform: dict[str, Any], quote_address: tuple[str, int],
                 quote_key: bytes, start_method: str = "spawn") -> None:
        req = LaunchRequest.from_dict(request)
        line = Client(tuple(quote_address), family="AF_INET", authkey=quote_key)
        enclave_platform = EnclavePlatform(platform["backend"], bytes.fromhex(platform["measurement"]),
                                           bytes.fromhex(platform["signer"]), PipeQuoter(line),
                                           int(platform["svn"]), bool(platform["debug"]))
        self.process = mp.get_context(start_method).Process(
            target=role_main, name=f"citadel-{req.role}", daemon=True,
            args=(req.kind, req.role, req.config, None, enclave_platform, req.options, req.extra_modules))
        try:
            self.process.start()
        finally:
            line.close()  # the role process holds its own copy

    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def signal(self, sig: int) -> bool:
        """Deliver `sig` to the role process if it is alive."""
        if not self.process.is_alive() or self.process.pid is None:
            return False
        try:
            os.kill(self.process.pid, int(sig))
        except ProcessLookupError:
            return False
        return True

    def status(self) -> tuple[bool, int | None]:
        return self.process.is_alive(), self.process.exitcode

    def stop(self, grace_s: float) -> int | None:
        """Continue and terminate the role process; kill it if it outlives `grace_s`; its exit code."""
        for sig in (signal.SIGCONT, signal.SIGTERM):
            self.signal(sig)
        self.process.join(grace_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        return self.process.exitcode


class RayEnclaveProcess:
    """The authority's view of a role in an `EnclaveSlot`: the subset of `BaseProcess` it uses, plus signals."""

    def __init__(self, ray: Any, actor: Any, pid: int) -> None:
        self.ray, self.actor, self.pid = ray, actor, pid
        self._last: tuple[bool, int | None] = (True, None)

    def _status(self) -> tuple[bool, int | None]:
        if self._last[0]:
            try:
                alive, code = self.ray.get(self.actor.status.remote(), timeout=CALL_TIMEOUT_S)
                self._last = (bool(alive), code)
            except self.ray.exceptions.RayError:  # the actor (the node's agent) is gone, and the role with it
                self._last = (False, -signal.SIGKILL)
        return self._last

    def is_alive(self) -> bool:
        return self._status()[0]

    @property
    def exitcode(self) -> int | None:
        return self._status()[1]

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(JOIN_POLL_S)

    def send_signal(self, sig: int) -> bool:
        try:
            return bool(self.ray.get(self.actor.signal.remote(int(sig)), timeout=CALL_TIMEOUT_S))
        except self.ray.exceptions.RayError:
            return False

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def release(self, grace_s: float) -> None:
        """Stop the role process, then the actor."""
        code = self._last[1]
        if self._last[0]:
            try:
                code = self.ray.get(self.actor.stop.remote(grace_s), timeout=grace_s + CALL_TIMEOUT_S)
            except self.ray.exceptions.RayError:
                code = -signal.SIGKILL
        self._last = (False, code)
        self.ray.kill(self.actor)


class RayPlacement:
    """The authority's side: joins the cluster once and starts one `EnclaveSlot` per launched role."""

    def __init__(self) -> None:
        self.ray: Any = None

    def _join(self, address: str) -> Any:
        if self.ray is None:
            ray = import_ray()
            if not ray.is_initialized():
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            self.ray = ray
        return self.ray

    def launch(self, request: LaunchRequest, platform: dict[str, Any], placement: dict[str, Any],
               timeout: float) -> tuple[RayEnclaveProcess, Connection]:
        """Start `request`'s role in a new actor; returns its process view and the authority's end of its
        private quoting line (authenticated with a key only the authority and the actor know)."""
        ray = self._join(str(placement["address"]))
        key = os.urandom(KEY_BYTES)
        listener = Listener((str(placement.get("host", "127.0.0.1")), 0), family="AF_INET", authkey=key)
        slot = ray.remote(num_cpus=float(placement.get("num_cpus", 0)), max_restarts=0)(EnclaveSlot)
        actor = slot.options(name=None).remote(request.to_dict(), platform, listener.address, key)
        accepted: list[Connection] = []
        stopped = threading.Event()

        def accept() -> None:
            while not accepted and not stopped.is_set():
                try:
                    accepted.append(listener.accept())
                except OSError:
                    return  # closed on timeout
                except Exception as exc:  # noqa: BLE001 - a stranger failed the key challenge; keep waiting
                    log.warning("authority: refused a quoting-line connection: %s", exc)

        thread = threading.Thread(target=accept, name=f"quote-accept-{request.role}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():  # wake the blocked accept() with a connection that fails the challenge
            stopped.set()
            with contextlib.suppress(OSError):
                socket.create_connection(listener.address, timeout=1.0).close()
            thread.join(1.0)
        listener.close()
        if not accepted:
            ray.kill(actor)
            raise PlatformError(f"the Ray actor of {request.role!r} did not open its quoting line within {timeout:g} s")
        try:
            pid = int(ray.get(actor.pid.remote(), timeout=timeout))
        except ray.exceptions.RayError as exc:
            accepted[0].close()
            ray.kill(actor)
            raise PlatformError(f"the Ray actor of {request.role!r} failed: {exc}") from None
        return RayEnclaveProcess(ray, actor, pid), accepted[0]
