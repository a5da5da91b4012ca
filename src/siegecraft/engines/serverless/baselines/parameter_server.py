"""Cirrus' parameter server: a real, separate, long-running process that workers reach over loopback TCP.

The process (`serve`) holds the model and momentum, accepts authenticated `multiprocessing.connection`
clients (one thread each) and answers two requests: `pull(it)` returns the model at the start of
iteration `it` once every push of iteration it-1 has arrived; `push(it, role, gradient)` records a
gradient, and the n-th push of an iteration averages them in worker order and steps the model with SMLT's
exact float32 SGD. The driver controls it through a pipe: `init`, `state` (model, iteration and the bytes
it moved), `stop`. `ParameterServer` is the driver's handle; it always stops (or kills) the process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from typing import TYPE_CHECKING, Any

import numpy as np

from siegecraft.engines.serverless.baselines.common import average
from siegecraft.engines.serverless.layout import from_bytes, to_bytes
from siegecraft.engines.serverless.worker import sgd_step

if TYPE_CHECKING:
    from typing_extensions import Self


@dataclass(frozen=True)
class ServerState:
    """What the driver reads back: the iteration the model is at, model, momentum and bytes moved."""

    it: int
    weights: np.ndarray
    momentum: np.ndarray
    bytes_in: int
    bytes_out: int


class _Model:
    """The server's state, shared by the connection threads under one condition variable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.it = 0
        self.workers = 0
        self.w = np.zeros(0, dtype=np.float32)
        self.m = np.zeros(0, dtype=np.float32)
        self.opt: dict[str, float] = {}
        self.grads: dict[int, np.ndarray] = {}
        self.bytes_in = self.bytes_out = 0

    def reset(self, w: bytes, m: bytes, workers: int, start_it: int, opt: dict[str, float]) -> None:
        with self.cond:
            self.w, self.m = from_bytes(w).copy(), from_bytes(m).copy()
            self.workers, self.it, self.opt = workers, start_it, opt
            self.grads.clear()
            self.bytes_in = self.bytes_out = 0
            self.cond.notify_all()

    def pull(self, it: int, wait_s: float) -> bytes | None:
        """The model of iteration `it`, waiting up to `wait_s` for the step that produces it."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.it >= it, timeout=wait_s) or self.it != it:
                return None
            out = to_bytes(self.w)
            self.bytes_out += len(out)
            return out

    def push(self, it: int, role: int, grad: bytes) -> str:
        """Record worker `role`'s gradient of iteration `it`; the iteration's last push steps the model."""
        with self.cond:
            self.bytes_in += len(grad)
            if it != self.it or not 0 <= role < self.workers:
                return f"push of iteration {it} by worker {role}: server is at iteration {self.it}"
            self.grads[role] = from_bytes(grad)
            if len(self.grads) == self.workers:
                avg = average([self.grads[i] for i in range(self.workers)])
                self.w, self.m = sgd_step(self.w, self.m, avg, **self.opt)
                self.grads.clear()
                self.it += 1
                self.cond.notify_all()
            return ""


def _serve_client(conn: Connection, model: _Model, wait_s: float) -> None:
    with conn:
        while True:
            try:
                op, it, role = conn.recv()
                if op == "pull":
                    body = model.pull(it, wait_s)
                    if body is None:
                        conn.send(("error", f"model of iteration {it} not ready within {wait_s} s"))
                        continue
                    conn.send(("ok", ""))
                    conn.send_bytes(body)
                elif op == "push":
                    error = model.push(it, role, conn.recv_bytes())
                    conn.send(("error", error) if error else ("ok", ""))
                else:
                    conn.send(("error", f"unknown request {op!r}"))
            except (EOFError, OSError, ValueError, TypeError):
                return


def _accept(listener: Listener, model: _Model, wait_s: float, stopping: threading.Event) -> None:
    """Accept clients until the server stops; a client that fails the handshake (wrong key, reset, gone
    mid-way) is dropped and the loop goes on, so one bad client cannot stop the others from connecting."""
    while not stopping.is_set():
        try:
            conn = listener.accept()
        except (AuthenticationError, OSError, EOFError):
            continue  # after `stopping` is set, the closed listener ends the loop here
        threading.Thread(target=_serve_client, args=(conn, model, wait_s), daemon=True).start()


def serve(control: Connection, authkey: bytes, wait_s: float) -> None:
    """Process entry point: listen on a free loopback port, report it, serve until `stop` or the driver's
    pipe closes."""
    # a deep backlog: n workers connect at once while the accept thread is busy with one handshake
    listener = Listener(("127.0.0.1", 0), backlog=1024, authkey=authkey)
    model, stopping = _Model(), threading.Event()
    threading.Thread(target=_accept, args=(listener, model, wait_s, stopping), daemon=True).start()
    control.send(listener.address)
    try:
        while True:
            try:
                msg = control.recv()
            except (EOFError, OSError):
                return
            if msg[0] == "init":
                model.reset(*msg[1:])
                control.send("ok")
            elif msg[0] == "state":
                with model.cond:
                    control.send(
                        (model.it, to_bytes(model.w), to_bytes(model.m), model.bytes_in, model.bytes_out)
                    )
            else:
                return
    finally:
        stopping.set()
        listener.close()


class ParameterServer:
    """Driver-side handle of the parameter-server process (a context manager that always stops it)."""

    def __init__(self, *, wait_s: float = 60.0, start_method: str = "forkserver") -> None:
        self.authkey = os.urandom(32)
        self.wait_s = wait_s
        self._ctx = mp.get_context(start_method)
        self._control: Connection | None = None
        self.process: Any = None
        self.address: tuple[str, int] | None = None

    def start(self) -> tuple[str, int]:
        """Start the process; returns the loopback address workers connect to."""
        parent, child = self._ctx.Pipe(duplex=True)
        self.process = self._ctx.Process(
            target=serve, args=(child, self.authkey, self.wait_s), daemon=True, name="parameter-server"
        )
        self.process.start()
        child.close()
        self._control = parent
        if not parent.poll(60.0):
            self.stop()
            raise RuntimeError("parameter server did not start within 60 s")
        self.address = tuple(parent.recv())  # type: ignore[assignment]
        return self.address  # type: ignore[return-value]

    def _call(self, *msg: Any) -> Any:
        if self._control is None or not self.alive:
            raise RuntimeError("parameter server is not running")
        self._control.send(msg)
        return self._control.recv()

    def init(
        self,
        weights: np.ndarray,
        momentum: np.ndarray,
        *,
        workers: int,
        start_it: int,
        lr: float,
        momentum_coef: float,
        weight_decay: float,
    ) -> None:
        """Load the model and momentum of iteration `start_it` for a job of `workers` workers."""
        opt = {"lr": lr, "momentum": momentum_coef, "weight_decay": weight_decay}
        self._call("init", to_bytes(weights), to_bytes(momentum), workers, start_it, opt)

    def state(self) -> ServerState:
        it, w, m, bytes_in, bytes_out = self._call("state")
        return ServerState(it, from_bytes(w).copy(), from_bytes(m).copy(), bytes_in, bytes_out)

    @property
    def alive(self) -> bool:
        return self.process is not None and bool(self.process.is_alive())

    def stop(self) -> None:
        """Ask the process to exit, kill it if it does not within 5 s; idempotent."""
        if self._control is not None:
            try:
                self._control.send(("stop",))
            except OSError:
                pass
        if self.process is not None:
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)
        if self._control is not None:
            self._control.close()
            self._control = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
