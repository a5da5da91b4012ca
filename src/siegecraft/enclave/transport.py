"""A role's end of its pipe to the relay.

A dedicated reader thread drains the pipe into an in-memory queue, so the relay never blocks on a
role that is busy (training, summing), and raw bytes are parsed with `Envelope.from_bytes` - the
transport never unpickles anything the host wrote.
"""

from __future__ import annotations

import logging
import queue
import threading
from multiprocessing.connection import Connection

from siegecraft.enclave.errors import ChannelError, CitadelError
from siegecraft.enclave.wire import Envelope

log = logging.getLogger("siegecraft.enclave")
POLL_S = 0.2


class RelayClosedError(CitadelError):
    """The relay closed this role's pipe (shutdown, or the host went away)."""


class Mailbox:
    """Send envelopes to the relay and receive the envelopes it delivers to this role."""

    def __init__(self, conn: Connection, name: str) -> None:
        self.conn = conn
        self.name = name
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._send_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"mailbox-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.conn.poll(POLL_S):
                    continue
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                break
            self._inbox.put(data)
        self._inbox.put(None)

    def close(self) -> None:
        """Stop the reader thread, then close the pipe (never while the reader may be inside recv)."""
        self._stop.set()
        self._reader.join(timeout=2 * POLL_S + 1.0)
        if not self._reader.is_alive():
            self.conn.close()

    def send(self, env: Envelope) -> None:
        with self._send_lock:
            try:
                self.conn.send_bytes(env.to_bytes())
            except (BrokenPipeError, OSError) as exc:
                raise RelayClosedError(f"{self.name}: relay pipe closed ({exc})") from None

    def receive(self, timeout: float | None) -> Envelope | None:
        """The next envelope, or None after `timeout` seconds; malformed bytes are dropped and logged."""
        if self._closed:
            raise RelayClosedError(f"{self.name}: relay pipe closed")
        try:
            data = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if data is None:
            self._closed = True
            raise RelayClosedError(f"{self.name}: relay pipe closed")
        try:
            return Envelope.from_bytes(data)
        except ChannelError as exc:
            log.warning("%s: dropped malformed bytes from the relay: %s", self.name, exc)
            return None
