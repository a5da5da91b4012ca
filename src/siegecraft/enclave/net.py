"""The network transport: roles reach the relay over TCP instead of an inherited pipe.

The relay listens on `host:port` (127.0.0.1 and a free port by default). A role process, wherever it
runs, connects and sends one hello frame naming its role and the admission ticket the host issued for
it (`TicketBook.issue`, carried in the role's launch options); once admitted, the socket is an ordinary
`multiprocessing.connection.Connection` - the same `send_bytes`/`recv_bytes`/`poll` framing as the
pipes - and the relay attaches it exactly like a pipe end. Everything that crosses it is the same
envelope as on the pipes, sealed end to end; bulk bodies never use shared memory here (no shared
segment exists across machines), and the weights broadcast travels inline (see broadcast.py).

Why tickets when the channels are sealed anyway: the host is the adversary and can inject whatever it
likes, so the listener adds no security *for the enclaves*. It keeps an outsider on the network from
doing what only the host could: a ticket is a 256-bit random per role, compared in constant time, and
used once, so a stranger, a role claiming another role's name, or a replayed hello is refused before
its bytes reach the relay. The hello is read on the raw socket with a deadline and a size cap, so a
silent, slow, truncated or garbage connection cannot stall or exhaust the listener. The transport is
not confidential: confidentiality and integrity come from the sealed channels.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection
from typing import Any

from siegecraft.enclave.errors import CitadelError

log = logging.getLogger("siegecraft.enclave")

DEFAULT_HOST = "127.0.0.1"
TICKET_BYTES = 32
MAX_HELLO_BYTES = 4096
HELLO_TIMEOUT_S = 5.0
ACCEPT_POLL_S = 0.2
_HEADER = struct.Struct("!i")  # multiprocessing's frame header for frames under 2 GiB
ADMITTED = b"admitted"


class AdmissionError(CitadelError):
    """The relay refused a role's connection (bad ticket, name taken, no answer)."""


@dataclass(frozen=True)
class NetAddress:
    """Where a role finds the relay, and the ticket that admits it once."""

    host: str
    port: int
    ticket: str

    def to_options(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "ticket": self.ticket}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> NetAddress:
        return cls(str(options["host"]), int(options["port"]), str(options["ticket"]))


class TicketBook:
    """One single-use random ticket per role name."""

    def __init__(self) -> None:
        self._tickets: dict[str, bytes] = {}
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def issue(self, role: str) -> str:
        ticket = os.urandom(TICKET_BYTES)
        with self._lock:
            if role in self._tickets:
                raise AdmissionError(f"a ticket for {role!r} was already issued")
            self._tickets[role] = ticket
        return ticket.hex()

    def redeem(self, role: str, ticket: str) -> str | None:
        """None if `ticket` admits `role` now (and never again), else why not."""
        try:
            given = bytes.fromhex(ticket)
        except (TypeError, ValueError):
            return "malformed ticket"
        with self._lock:
            expected = self._tickets.get(role)
            if expected is None:
                return f"no ticket was issued for {role!r}"
            if not hmac.compare_digest(given, expected):
                return f"wrong ticket for {role!r}"
            if role in self._used:
                return f"the ticket of {role!r} was already used"
            self._used.add(role)
        return None


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def read_hello(sock: socket.socket, timeout: float = HELLO_TIMEOUT_S) -> tuple[str, str]:
    """(role, ticket) from the first frame on `sock`, read with a deadline and a size cap; raises
    AdmissionError for anything else (silence, truncation, oversize, garbage)."""
    sock.settimeout(timeout)
    try:
        (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
        if not 0 < size <= MAX_HELLO_BYTES:
            raise AdmissionError(f"hello of {size} bytes (at most {MAX_HELLO_BYTES})")
        body = json.loads(_recv_exact(sock, size))
        role, ticket = body["role"], body["ticket"]
        if not isinstance(role, str) or not isinstance(ticket, str):
            raise AdmissionError("hello fields must be strings")
    except (OSError, ConnectionError) as exc:
        raise AdmissionError(f"no complete hello: {exc}") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise AdmissionError(f"malformed hello: {exc}") from None
    return role, ticket


class NetListener:
    """The relay's TCP front door: admits each ticket holder once and hands its connection to `attach`."""

    def __init__(self, attach: Callable[[str, Connection], None], host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.attach = attach
        self.tickets = TicketBook()
        self.refused: list[str] = []
        self._admitted: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        try:
            self._sock = socket.create_server((host, port))
        except OSError as exc:
            raise AdmissionError(f"listen_host={host!r}: the relay cannot listen on {host}:{port} ({exc})") from None
        self._sock.settimeout(ACCEPT_POLL_S)
        self.host, self.port = self._sock.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_loop, name="relay-listener", daemon=True)
        self._thread.start()

    def address(self, role: str) -> NetAddress:
        """Issue `role`'s ticket: what its launch options carry."""
        with self._lock:
            self._admitted.setdefault(role, threading.Event())
        return NetAddress(self.host, self.port, self.tickets.issue(role))

    def wait_admitted(self, roles: list[str], timeout: float) -> list[str]:
        """Wait until every role in `roles` has connected; returns those that did not within `timeout`."""
        deadline = time.monotonic() + timeout
        missing = []
        for role in roles:
            with self._lock:
                event = self._admitted.setdefault(role, threading.Event())
            if not event.wait(max(0.0, deadline - time.monotonic())):
                missing.append(role)
        return missing

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            threading.Thread(target=self._admit, args=(sock, peer), name="relay-admit", daemon=True).start()

    def _admit(self, sock: socket.socket, peer: Any) -> None:
        try:
            role, ticket = read_hello(sock, HELLO_TIMEOUT_S)
            why = self.tickets.redeem(role, ticket)
            if why is not None:
                raise AdmissionError(why)
            sock.settimeout(None)
            sock.sendall(_HEADER.pack(len(ADMITTED)) + ADMITTED)
        except (AdmissionError, OSError) as exc:
            log.warning("relay: refused a connection from %s: %s", peer, exc)
            with self._lock:
                self.refused.append(str(exc))
            sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.attach(role, Connection(sock.detach()))
        with self._lock:
            event = self._admitted.setdefault(role, threading.Event())
        event.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2 * ACCEPT_POLL_S + 1.0)
        self._sock.close()


def connect(address: NetAddress, role: str, timeout: float = HELLO_TIMEOUT_S) -> Connection:
    """A role's side: connect to the relay, present its ticket, return the admitted connection."""
    try:
        conn = Client((address.host, address.port), family="AF_INET")
    except OSError as exc:
        raise AdmissionError(f"{role}: cannot reach the relay at {address.host}:{address.port}: {exc}") from None
    try:
        conn.send_bytes(json.dumps({"role": role, "ticket": address.ticket}).encode())
        if not conn.poll(timeout) or conn.recv_bytes(64) != ADMITTED:
            raise AdmissionError(f"{role}: the relay did not admit this connection")
    except (EOFError, OSError) as exc:
        conn.close()
        raise AdmissionError(f"{role}: the relay refused this connection ({exc})") from None
    except AdmissionError:
        conn.close()
        raise
    _nodelay(conn)
    return conn


def _nodelay(conn: Connection) -> None:
    """Small frames (handshakes, acks) must not wait for Nagle's algorithm."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
