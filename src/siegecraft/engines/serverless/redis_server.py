"""Start and stop a private Redis server from the system `redis-server` binary.

Loopback only, no persistence (no RDB, no AOF), a pidfile under ~/.cache/siegecraft/redis/ so that
`siegecraft serverless redis stop` (another process) can find it. Stopping checks that the pid still is
our redis-server on that port before signalling it, so a recycled pid is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from siegecraft.engines.serverless.store import StoreSpec

if TYPE_CHECKING:
    from typing_extensions import Self

DEFAULT_DIR = Path.home() / ".cache" / "siegecraft" / "redis"


@dataclass
class RedisHandle:
    """A running redis-server we started: its pid, address and pidfile."""

    pid: int
    host: str
    port: int
    pidfile: str
    logfile: str

    @property
    def spec(self) -> StoreSpec:
        return StoreSpec("redis", self.host, self.port)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        stop_redis(self)


_children: dict[int, subprocess.Popen] = {}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(
    port: int | None = None,
    dir: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    binary: str = "redis-server",
    wait_s: float = 10.0,
) -> RedisHandle:
    """Start redis-server on `host:port` (a free port by default) and wait until it answers PING."""
    exe = shutil.which(binary) or (binary if os.path.exists(binary) else None)
    if exe is None:
        raise FileNotFoundError(
            f"{binary!r} not found; install Debian's redis-server (apt-get install redis-server)"
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"redis is only started on loopback, got host={host!r}")
    root = Path(dir) if dir is not None else DEFAULT_DIR
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    logfile = root / f"redis-{port}.log"
    cmd = [
        exe, "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no",
        "--protected-mode", "yes", "--daemonize", "no", "--dir", str(root), "--logfile", str(logfile),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + wait_s
    while not _ping(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            tail = logfile.read_text()[-500:] if logfile.exists() else ""
            raise RuntimeError(f"redis-server on {host}:{port} did not start: {tail}")
        time.sleep(0.02)
    pidfile = root / f"redis-{port}.pid"
    handle = RedisHandle(proc.pid, host, port, str(pidfile), str(logfile))
    pidfile.write_text(json.dumps(asdict(handle)))
    _children[proc.pid] = proc
    return handle


def read_pidfile(path: str | Path) -> RedisHandle:
    return RedisHandle(**json.loads(Path(path).read_text()))


def list_redis(dir: str | Path | None = None) -> list[RedisHandle]:
    """Handles of the servers whose pidfiles are in `dir` (the CLI's `status`)."""
    root = Path(dir) if dir is not None else DEFAULT_DIR
    return [read_pidfile(p) for p in sorted(root.glob("redis-*.pid"))]


def _is_our_redis(pid: int, port: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    tokens = b" ".join(cmdline).decode(errors="replace").split()
    if not tokens or "redis-server" not in tokens[0]:
        return False
    return any(t == str(port) or t.endswith(f":{port}") for t in tokens)


def stop_redis(target: RedisHandle | str | Path, *, wait_s: float = 5.0) -> bool:
    """Stop the server of a handle or pidfile (SIGTERM, then SIGKILL), remove its pidfile and log; True if it
    was running."""
    handle = target if isinstance(target, RedisHandle) else read_pidfile(target)
    was_running = _is_our_redis(handle.pid, handle.port)
    if was_running:
        os.kill(handle.pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while _is_our_redis(handle.pid, handle.port) and time.monotonic() < deadline:
            child = _children.get(handle.pid)
            if child is not None and child.poll() is not None:
                break
            time.sleep(0.02)
        if _is_our_redis(handle.pid, handle.port):
            os.kill(handle.pid, signal.SIGKILL)
    child = _children.pop(handle.pid, None)
    if child is not None:
        child.wait(timeout=wait_s)
    Path(handle.pidfile).unlink(missing_ok=True)
    if handle.logfile:
        Path(handle.logfile).unlink(missing_ok=True)  # no persistence: nothing of the server outlives it
    return was_running
