"""The relay's TCP front door on its own: who gets a connection attached, and who is refused."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from multiprocessing.connection import Client, Connection

import pytest

from siegecraft.enclave import net
from siegecraft.enclave.wire import Envelope

from .round_oracle import wait_until


class Attached:
    """Stands in for Relay.attach: records which role got which connection."""

    def __init__(self) -> None:
        self.conns: dict[str, list[Connection]] = {}
        self.lock = threading.Lock()

    def __call__(self, role: str, conn: Connection) -> None:
        with self.lock:
            self.conns.setdefault(role, []).append(conn)


@pytest.fixture
def door(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[net.NetListener, Attached]]:
    monkeypatch.setattr(net, "HELLO_TIMEOUT_S", 0.5)  # a silent stranger is dropped quickly
    attached = Attached()
    listener = net.NetListener(attached)
    yield listener, attached
    listener.close()
    for conns in attached.conns.values():
        for conn in conns:
            conn.close()


def raw_connect(listener: net.NetListener) -> socket.socket:
    return socket.create_connection((listener.host, listener.port), timeout=5.0)


def send_hello(sock: socket.socket, role: str, ticket: str) -> None:
    body = json.dumps({"role": role, "ticket": ticket}).encode()
    sock.sendall(struct.pack("!i", len(body)) + body)


def closed_by_listener(sock: socket.socket) -> bool:
    """The listener closed the socket without admitting it (EOF, or a reset)."""
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True


def refusals(listener: net.NetListener, n: int) -> bool:
    return wait_until(lambda: len(listener.refused) >= n, 5.0)


def test_a_role_with_its_ticket_is_attached_and_its_connection_carries_frames(door) -> None:
    listener, attached = door
    conn = net.connect(listener.address("te-0"), "te-0")
    assert listener.wait_admitted(["te-0"], 5.0) == []
    relay_end = attached.conns["te-0"][0]
    frame = Envelope("HELLO", "te-0", "admin", 0, b"x" * 100_000).to_bytes()
    conn.send_bytes(frame)
    assert relay_end.poll(5.0) and relay_end.recv_bytes() == frame
    conn.close()


def test_a_stranger_without_a_ticket_is_refused(door) -> None:
    listener, attached = door
    listener.address("te-0")
    with raw_connect(listener) as sock:
        send_hello(sock, "te-0", "00" * net.TICKET_BYTES)
        assert closed_by_listener(sock)
    assert refusals(listener, 1) and "wrong ticket for 'te-0'" in listener.refused[0]
    with pytest.raises(net.AdmissionError):  # the same through the role's own client
        net.connect(net.NetAddress(listener.host, listener.port, "ab" * net.TICKET_BYTES), "te-0")
    assert not attached.conns


def test_a_role_claiming_another_roles_name_is_refused(door) -> None:
    listener, attached = door
    mine, theirs = listener.address("te-0"), listener.address("te-1")
    with pytest.raises(net.AdmissionError):
        net.connect(net.NetAddress(mine.host, mine.port, mine.ticket), "te-1")
    with pytest.raises(net.AdmissionError):
        net.connect(net.NetAddress(mine.host, mine.port, theirs.ticket), "admin")  # no ticket was issued for it
    assert refusals(listener, 2)
    assert "wrong ticket for 'te-1'" in listener.refused[0] and "no ticket was issued for 'admin'" in listener.refused[1]
    assert not attached.conns
    net.connect(theirs, "te-1").close()  # te-1's own ticket still works: the failed tries did not burn it
    assert listener.wait_admitted(["te-1"], 5.0) == []


def test_a_replayed_hello_is_refused_once_the_ticket_was_used(door) -> None:
    listener, attached = door
    address = listener.address("agg-1-0")
    first = net.connect(address, "agg-1-0")
    with raw_connect(listener) as sock:  # the recorded hello, sent again by someone on the network
        send_hello(sock, "agg-1-0", address.ticket)
        assert closed_by_listener(sock)
    assert refusals(listener, 1) and "already used" in listener.refused[0]
    assert len(attached.conns["agg-1-0"]) == 1
    first.close()


def test_a_recorded_envelope_sent_instead_of_a_hello_is_refused(door) -> None:
    """A frame captured from a role's connection, replayed over a new one: it is no hello, so nothing reaches
    the relay (and had the host replayed it itself, the receiving channel drops it as a replay)."""
    listener, attached = door
    conn = Client((listener.host, listener.port), family="AF_INET")
    conn.send_bytes(Envelope("MASKED", "te-0", "agg-1-0", 3, b"\x01" * 64).to_bytes())
    assert refusals(listener, 1) and "malformed hello" in listener.refused[0]
    conn.close()
    assert not attached.conns


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xff\xff\xff" + b"garbage", "hello of -1 bytes"),
    (struct.pack("!i", 1 << 30), "hello of 1073741824 bytes"),
    (struct.pack("!i", 100) + b"{\"role\": ", "no complete hello"),  # truncated, then silent
    (b"", "no complete hello"),  # connects and says nothing
    (struct.pack("!i", 5) + b"\x00\x01\x02\x03\x04", "malformed hello"),
])
def test_garbage_truncated_oversized_or_silent_connections_are_dropped(door, payload: bytes, reason: str) -> None:
    listener, attached = door
    address = listener.address("te-0")
    with raw_connect(listener) as sock:
        sock.sendall(payload)
        assert closed_by_listener(sock)
    assert refusals(listener, 1) and reason in listener.refused[0]
    net.connect(address, "te-0").close()  # the listener is still serving, and the role's ticket still works
    assert listener.wait_admitted(["te-0"], 5.0) == [] and len(attached.conns["te-0"]) == 1


def test_a_ticket_is_issued_once_per_role(door) -> None:
    listener, _ = door
    listener.address("admin")
    with pytest.raises(net.AdmissionError, match="already issued"):
        listener.address("admin")


def test_wait_admitted_names_the_roles_that_never_connected(door) -> None:
    listener, _ = door
    listener.address("te-0")
    assert listener.wait_admitted(["te-0"], 0.2) == ["te-0"]
