"""SIMULATION of the platform's quoting infrastructure: one process that loads, measures and quotes enclaves.

In SGX the CPU measures what it loads into an enclave and the quoting enclave signs reports with a key
that never leaves the platform. Here one "authority" process plays both parts. It holds the only
signing key (an Ed25519 key drawn with `os.urandom` when it starts, never pickled, never sent), and it
is what starts every enclave process: the host asks it to launch a role from (kind, configuration),
the authority computes `measure(kind, config)` itself and gives the new process a private pipe on
which it can ask for quotes of exactly that measurement. The host gets back the pid and the relay's
end of the role's pipe (passed as a file descriptor), nothing else: its control line has no quoting
operation.

Control line (the host's `AuthorityClient`): JSON requests, JSON answers, and one file descriptor
after each successful launch. Operations: launch, signal, status, wait, shutdown. The authority never
unpickles anything the host sends. It exits, stopping every enclave it started, when the host shuts it
down or its control line closes (the host died).

What stays simulated: the host is root on this machine and can read the authority's memory (and so
its key) and every enclave's; the authority is ordinary code that the host chose to run.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing import util
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import recv_handle, send_handle
from types import FrameType
from typing import Any, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from siegecraft.enclave.attestation import MockQuoteChecker, Quote, QuoteChecker, short
from siegecraft.enclave.launcher import (
    AttestationBackend,
    EnclaveLauncher,
    LaunchRequest,
    PlatformError,
    RoleHandle,
)
from siegecraft.enclave.measurement import SECURITY_VERSION, measure
from siegecraft.enclave.quoting import EnclavePlatform, PipeQuoter, decode_request
from siegecraft.enclave.ray_placement import RayEnclaveProcess, RayPlacement
from siegecraft.enclave.roles.process import role_main

BACKEND = MockQuoteChecker.name
MAX_CONTROL_BYTES = 64 * 1024 * 1024
REPLY_MARGIN_S = 10.0
STOP_GRACE_S = 3.0
RAY_WAIT_POLL_S = 0.1


class MockQuoteSigner:
    """The authority's signing key. It exists only in the authority process and refuses to be pickled."""

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self._key = key or Ed25519PrivateKey.generate()
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def __repr__(self) -> str:
        return f"MockQuoteSigner(public_key={short(self.public_key)}...)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("the quoting authority's signing key never leaves its process")

    def sign(self, measurement: bytes, public_key: bytes, nonce: bytes, *, svn: int, debug: bool) -> Quote:
        """A quote over exactly these values (the caller, the authority, decided the measurement)."""
        unsigned = Quote(measurement, public_key, nonce, svn, debug, self.public_key, b"", BACKEND)
        return Quote(measurement, public_key, nonce, svn, debug, self.public_key,
                     self._key.sign(unsigned.signed_bytes()), BACKEND)


@dataclass
class LaunchedEnclave:
    """One enclave the authority started: its process, its quoting line and what it measured."""

    request: LaunchRequest
    process: BaseProcess | RayEnclaveProcess
    measurement: bytes


class AuthorityServer:
    """The authority's event loop: the host's control line, every enclave's quoting line, child exits."""

    def __init__(self, control: Connection, signer: MockQuoteSigner, ctx: BaseContext) -> None:
        self.control = control
        self.signer = signer
        self.ctx = ctx
        self.enclaves: dict[str, LaunchedEnclave] = {}
        self.quote_lines: dict[Connection, str] = {}
        self.sentinels: dict[int, str] = {}
        self.pending_wait: tuple[list[str], float] | None = None
        self.done = False
        #: roles launched on a Ray cluster (ray_placement.py) have no local sentinel: waits poll them
        self.ray = RayPlacement()

    # -- loop ------------------------------------------------------------------------------
    def serve(self) -> None:
        try:
            while not self.done:
                watch: list[Any] = [*self.quote_lines, *self.sentinels]
                timeout = None
                if self.pending_wait is None:
                    watch.append(self.control)  # one control request at a time
                else:
                    timeout = max(0.0, self.pending_wait[1] - time.monotonic())
                    if any(isinstance(e.process, RayEnclaveProcess) for e in self.enclaves.values()):
                        timeout = min(timeout, RAY_WAIT_POLL_S)
                for ready in wait(watch, timeout):
                    if ready is self.control:
                        self._on_control()
                    elif isinstance(ready, int):
                        self._on_exit(ready)
                    else:
                        self._on_quote_request(ready)
                self._answer_wait()
        finally:
            self.stop_all(STOP_GRACE_S)

    def _reply(self, answer: dict[str, Any]) -> None:
        try:
            self.control.send_bytes(json.dumps(answer).encode())
        except OSError:
            self.done = True  # the host is gone

    def _on_control(self) -> None:
        try:
            body = json.loads(self.control.recv_bytes(MAX_CONTROL_BYTES))
            op = body["op"]
        except (EOFError, OSError):
            self.done = True
            return
        except (ValueError, KeyError, TypeError) as exc:
            self._reply({"ok": False, "error": f"malformed request: {exc}"})
            return
        handlers = {"launch": self._launch, "signal": self._signal, "status": self._status, "wait": self._wait,
                    "shutdown": self._shutdown}
        handler = handlers.get(op)
        if handler is None:
            self._reply({"ok": False, "error": f"unknown operation {op!r}; the host may only "
                                               f"{', '.join(sorted(handlers))}"})
            return
        try:
            handler(body)
        except (PlatformError, ValueError, KeyError, TypeError) as exc:
            self._reply({"ok": False, "error": str(exc)})

    def _on_exit(self, sentinel: int) -> None:
        """Reap an enclave whose sentinel fired. Its descriptors close just before it can be waited for,
        so a non-blocking poll here could still see it alive; join() blocks for that instant."""
        role = self.sentinels.pop(sentinel)
        self.enclaves[role].process.join(STOP_GRACE_S)

    # -- quoting ---------------------------------------------------------------------------
    def _on_quote_request(self, line: Connection) -> None:
        role = self.quote_lines[line]
        try:
            data = line.recv_bytes(4096)
        except (EOFError, OSError):
            del self.quote_lines[line]
            line.close()
            return
        enclave = self.enclaves[role]
        try:
            public_key, nonce = decode_request(data)
            answer = self.signer.sign(enclave.measurement, public_key, nonce, svn=SECURITY_VERSION,
                                      debug=enclave.request.debug).to_dict()
        except ValueError as exc:
            answer = {"error": str(exc)}
        try:
            line.send_bytes(json.dumps(answer).encode())
        except OSError:
            del self.quote_lines[line]

    # -- control operations ----------------------------------------------------------------
    def _launch(self, body: dict[str, Any]) -> None:
        request = LaunchRequest.from_dict(body.get("request", {}))
        if request.config.get("role") != request.role:  # the role's name is part of what is measured
            raise PlatformError(f"launch of {request.role!r} with a configuration for {request.config.get('role')!r}")
        if request.role in self.enclaves:
            raise PlatformError(f"role {request.role!r} was already launched")
        measurement = measure(request.kind, request.config, request.extra_modules)  # the authority's own count
        placement = request.options.get("placement")
        if placement and placement.get("kind") == "ray":
            self._launch_on_ray(request, measurement, placement)
            return
        network = bool(request.options.get("net"))  # the role connects to the relay itself (net.py)
        relay_end, enclave_end = self.ctx.Pipe()
        quote_line, quoter_end = self.ctx.Pipe()
        platform = EnclavePlatform(BACKEND, measurement, self.signer.public_key, PipeQuoter(quoter_end),
                                   SECURITY_VERSION, request.debug)
        process = self.ctx.Process(target=role_main, name=f"citadel-{request.role}", daemon=True,
                                   args=(request.kind, request.role, request.config,
                                         None if network else enclave_end, platform,
                                         request.options, request.extra_modules))
        try:
            process.start()
        except BaseException:
            relay_end.close()
            quote_line.close()
            raise
        finally:
            enclave_end.close()
            quoter_end.close()
        self.enclaves[request.role] = LaunchedEnclave(request, process, measurement)
        self.quote_lines[quote_line] = request.role
        self.sentinels[process.sentinel] = request.role
        self._reply({"ok": True, "pid": process.pid, "measurement": measurement.hex(), "relay_fd": not network})
        try:
            if not network:
                send_handle(self.control, relay_end.fileno(), os.getppid())
        except OSError:
            self.done = True
        finally:
            relay_end.close()

    def _launch_on_ray(self, request: LaunchRequest, measurement: bytes, placement: dict[str, Any]) -> None:
        """Start the role in a Ray actor (ray_placement.py); it reaches the relay over the network."""
        if not request.options.get("net"):
            raise PlatformError(f"Ray placement of {request.role!r} needs the network transport (options['net'])")
        platform = {"backend": BACKEND, "measurement": measurement.hex(), "signer": self.signer.public_key.hex(),
                    "svn": SECURITY_VERSION, "debug": request.debug}
        timeout = float(request.options.get("start_timeout_s", REPLY_MARGIN_S * 6))
        process, quote_line = self.ray.launch(request, platform, placement, timeout)
        self.enclaves[request.role] = LaunchedEnclave(request, process, measurement)
        self.quote_lines[quote_line] = request.role
        self._reply({"ok": True, "pid": process.pid, "measurement": measurement.hex(), "relay_fd": False})

    def _enclave(self, body: dict[str, Any]) -> LaunchedEnclave:
        role = str(body["role"])
        if role not in self.enclaves:
            raise PlatformError(f"no enclave {role!r} was launched")
        return self.enclaves[role]

    def _signal(self, body: dict[str, Any]) -> None:
        self._reply({"ok": True, "delivered": _send_signal(self._enclave(body).process, int(body["signal"]))})

    def _status(self, body: dict[str, Any]) -> None:
        process = self._enclave(body).process
        alive = process.is_alive()
        self._reply({"ok": True, "alive": alive, "exitcode": process.exitcode, "pid": process.pid})

    def _wait(self, body: dict[str, Any]) -> None:
        roles = [str(r) for r in body["roles"]]
        unknown = [r for r in roles if r not in self.enclaves]
        if unknown:
            raise PlatformError(f"no enclaves {unknown} were launched")
        self.pending_wait = (roles, time.monotonic() + max(0.0, float(body["timeout"])))

    def _answer_wait(self) -> None:
        if self.pending_wait is None:
            return
        roles, deadline = self.pending_wait
        alive = [r for r in roles if self.enclaves[r].process.is_alive()]
        if alive and time.monotonic() < deadline:
            return
        self.pending_wait = None
        self._reply({"ok": True, "alive": alive})

    def _shutdown(self, body: dict[str, Any]) -> None:
        self.stop_all(float(body.get("timeout", STOP_GRACE_S)))
        self._reply({"ok": True})
        self.done = True

    def stop_all(self, grace_s: float) -> None:
        """Continue and terminate every enclave still running; kill what outlives `grace_s`."""
        for enclave in self.enclaves.values():
            if isinstance(enclave.process, RayEnclaveProcess):
                enclave.process.release(grace_s)
        running = [e.process for e in self.enclaves.values()
                   if isinstance(e.process, BaseProcess) and e.process.is_alive()]
        for process in running:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(process.pid, sig)  # type: ignore[arg-type]
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)
        for line in self.quote_lines:
            line.close()
        self.quote_lines.clear()


def _send_signal(process: BaseProcess | RayEnclaveProcess, sig: int) -> bool:
    """Deliver `sig` to an enclave process if it is alive (a Ray-placed one through its actor)."""
    if isinstance(process, RayEnclaveProcess):
        return process.send_signal(sig)
    if not process.is_alive() or process.pid is None:
        return False
    try:
        os.kill(process.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGINT (Ctrl-C reaches the whole process group): the host's exit or shutdown stops the authority."""


def _exit_on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def authority_main(control: Connection, start_method: str, anchors: list[Connection]) -> None:
    """Entry point of the authority process: draw the key, publish the public half, serve."""
    signal.signal(signal.SIGINT, _ignore)  # a handler, not SIG_IGN: the enclaves it spawns get the default
    signal.signal(signal.SIGTERM, _exit_on_term)
    signer = MockQuoteSigner()
    anchor = json.dumps({"backend": BACKEND, "signer": signer.public_key.hex()}).encode()
    for conn in anchors:  # verifiers outside the host's process learn the signer from here, not from the host
        try:
            conn.send_bytes(anchor)
        except OSError:
            pass
        conn.close()
    control.send_bytes(json.dumps({"ok": True, "backend": BACKEND, "signer": signer.public_key.hex()}).encode())
    AuthorityServer(control, signer, mp.get_context(start_method)).serve()


# -- the host's side ---------------------------------------------------------------------------
def _shutdown(conn: Connection, process: BaseProcess, lock: threading.Lock, timeout: float = STOP_GRACE_S) -> None:
    """Ask the authority to stop its enclaves and exit; make sure it is gone. Also runs at interpreter exit
    (before multiprocessing joins its non-daemonic children) and when the client is garbage-collected."""
    if lock.acquire(timeout=timeout + REPLY_MARGIN_S):
        try:
            if process.is_alive():
                conn.send_bytes(json.dumps({"op": "shutdown", "timeout": timeout}).encode())
                conn.poll(timeout + REPLY_MARGIN_S)
        except OSError:
            pass
        finally:
            lock.release()
    conn.close()
    process.join(timeout + 1.0)
    if process.is_alive():
        process.terminate()
        process.join(1.0)
    if process.is_alive():
        process.kill()
        process.join(1.0)


class AuthorityClient(EnclaveLauncher):
    """The host's line to the mock authority: holds its public key only."""

    def __init__(self, ctx: BaseContext, anchors: list[Connection]) -> None:
        self._conn, authority_end = ctx.Pipe()  # a socket pair: it also carries the relay ends' descriptors
        # not a daemon: the authority starts the enclave processes (daemons may not have children)
        self._process = ctx.Process(target=authority_main, name="citadel-authority",
                                    args=(authority_end, ctx.get_start_method(), anchors))
        self._process.start()
        authority_end.close()
        self._lock = threading.Lock()
        self._broken: str | None = None
        self.signer: bytes | None = None
        self._finalizer = util.Finalize(self, _shutdown, args=(self._conn, self._process, self._lock),
                                        exitpriority=10)

    def __repr__(self) -> str:
        signer = short(self.signer) if self.signer else "not ready"
        return f"AuthorityClient(pid={self.pid}, signer={signer})"

    @property
    def pid(self) -> int | None:
        """The authority process's pid."""
        return self._process.pid

    def _request(self, op: str, reply_within: float, **fields: Any) -> tuple[dict[str, Any], int | None]:
        """One request and its answer (plus the descriptor that follows a successful launch)."""
        with self._lock:
            if self._broken:
                raise PlatformError(self._broken)
            try:
                self._conn.send_bytes(json.dumps({"op": op, **fields}).encode())
                if not self._conn.poll(reply_within):
                    self._broken = f"the quoting authority did not answer {op!r} within {reply_within:g} s"
                    raise PlatformError(self._broken)
                answer = json.loads(self._conn.recv_bytes())
                fd = recv_handle(self._conn) if op == "launch" and answer.get("relay_fd") else None
            except (EOFError, OSError) as exc:
                self._broken = f"the quoting authority is gone ({type(exc).__name__}: {exc})"
                raise PlatformError(self._broken) from None
        if not answer.get("ok"):
            raise PlatformError(f"the quoting authority refused {op!r}: {answer.get('error')}")
        return answer, fd

    def wait_ready(self, timeout: float) -> bytes:
        if self.signer is None:
            with self._lock:
                try:
                    if not self._conn.poll(timeout):
                        raise PlatformError(f"the quoting authority did not start within {timeout:g} s")
                    hello = json.loads(self._conn.recv_bytes())
                except (EOFError, OSError) as exc:
                    raise PlatformError(f"the quoting authority failed to start: {exc}") from None
            self.signer = bytes.fromhex(hello["signer"])
        return self.signer

    def launch(self, request: LaunchRequest) -> tuple[RoleHandle, Connection | None]:
        timeout = REPLY_MARGIN_S * 6 + float(request.options.get("start_timeout_s", 0))
        answer, fd = self._request("launch", timeout, request=request.to_dict())
        return AuthorityRoleHandle(self, request.role, int(answer["pid"])), None if fd is None else Connection(fd)

    def signal(self, role: str, sig: int) -> bool:
        return bool(self._request("signal", REPLY_MARGIN_S, role=role, signal=int(sig))[0]["delivered"])

    def status(self, role: str) -> tuple[bool, int | None]:
        answer = self._request("status", REPLY_MARGIN_S, role=role)[0]
        return bool(answer["alive"]), answer["exitcode"]

    def wait(self, roles: list[str], timeout: float) -> list[str]:
        if not roles:
            return []
        answer = self._request("wait", timeout + REPLY_MARGIN_S, roles=roles, timeout=timeout)[0]
        return [str(r) for r in answer["alive"]]

    def close(self, timeout: float = STOP_GRACE_S) -> None:
        self._finalizer()


class AuthorityRoleHandle(RoleHandle):
    """A handle on an enclave the authority started; signals and waits go through the authority, its parent."""

    def __init__(self, client: AuthorityClient, role: str, pid: int) -> None:
        self.client, self.role, self.pid = client, role, pid

    def __repr__(self) -> str:
        return f"AuthorityRoleHandle(role={self.role!r}, pid={self.pid})"

    def send_signal(self, sig: int) -> bool:
        try:
            return self.client.signal(self.role, sig)
        except PlatformError:
            return False  # the authority is gone, and with it every enclave it started

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 60.0 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                if not self.client.wait([self.role], left) or (deadline is not None and left == 0.0):
                    return
            except PlatformError:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return

    def is_alive(self) -> bool:
        try:
            return self.client.status(self.role)[0]
        except PlatformError:
            return False

    @property
    def exitcode(self) -> int | None:
        try:
            return self.client.status(self.role)[1]
        except PlatformError:
            return None


class MockBackend(AttestationBackend):
    """SIMULATION: the mock authority process as the platform, Ed25519 quotes as evidence."""

    name = BACKEND
    simulated = True
    notice = ("SIMULATION: attestation backend 'mock' gives no hardware protection - enclaves are ordinary "
              "processes, a mock authority signs their quotes, and the host (root) can read the memory of "
              "every process, the authority's included")

    def checker(self) -> QuoteChecker:
        return MockQuoteChecker()

    def start_platform(self, ctx: BaseContext, anchors: list[Connection]) -> AuthorityClient:
        return AuthorityClient(ctx, anchors)
