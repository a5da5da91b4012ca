"""The untrusted host: routes envelopes between role processes and sees only what is on the wire.

SIMULATION: the relay runs as threads of the launching process and holds no keys. It routes by the
public header, can record every envelope it forwards (the transcript the leak tests inspect) and,
for tests, can run a `tamper` hook that drops, alters, duplicates or replays envelopes - everything
a hostile host could do. When a role's pipe closes (the process died) it tells the admin and the
model owner with a plaintext PEER_DOWN notice; trusting it costs nothing, since the host can always
cause a dropout by withholding messages.

Bulk bodies travel in shared-memory segments (shm.py) and the relay forwards only their reference
frames, remembering every segment name it saw so that `close()` can unlink whatever a receiver never
consumed. A recording relay stores the segment's bytes too (the host can read them), so the
transcript shows everything a host sees. The tamper hook receives the frame as it is on the pipe.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from siegecraft.enclave import shm
from siegecraft.enclave.errors import ChannelError
from siegecraft.enclave.transport import POLL_S
from siegecraft.enclave.wire import PLAINTEXT_SEQ, BodyRef, Envelope, frame_header, pack

log = logging.getLogger("siegecraft.enclave")

HOST = "host"
MAX_TRACKED = 4096
#: test hook: (parsed header with an empty body, raw frame bytes: an inline envelope or a reference frame)
#: -> the byte strings to deliver instead
Tamper = Callable[[Envelope, bytes], list[bytes]]


@dataclass(frozen=True)
class TranscriptEntry:
    """One envelope as the relay saw it."""

    time: float
    src: str
    dst: str
    kind: str
    seq: int
    size: int
    data: bytes


class Relay:
    """Routes raw envelopes between attached roles through per-role reader and writer threads."""

    def __init__(self, *, record: bool = False, tamper: Tamper | None = None,
                 notify: tuple[str, ...] = ("admin", "owner"), shm_prefix: str | None = None) -> None:
        self.record = record
        self.shm_prefix = shm_prefix
        self.segments: set[str] = set()
        self.tamper = tamper
        self.notify = notify
        self._writers: dict[str, queue.Queue[bytes | None]] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._transcript: list[TranscriptEntry] = []
        self.down: set[str] = set()
        self.dropped = 0
        self._stop = threading.Event()
        self._conns: list[Connection] = []

    def expect(self, role: str) -> None:
        """Queue what arrives for `role` until it attaches (the network transport: it connects later)."""
        self._writers.setdefault(role, queue.Queue())

    def attach(self, role: str, conn: Connection) -> None:
        """Start relaying for `role` over the relay's end `conn` of its pipe (or its admitted socket)."""
        out = self._writers.setdefault(role, queue.Queue())
        self._conns.append(conn)
        for target, name in ((self._read, "read"), (self._write, "write")):
            thread = threading.Thread(target=target, args=(role, conn) if name == "read" else (role, conn, out),
                                      name=f"relay-{name}-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def transcript(self) -> list[TranscriptEntry]:
        with self._lock:
            return list(self._transcript)

    def send_plaintext(self, dst: str, kind: str, meta: dict) -> None:
        """A host-originated notice (PEER_DOWN, STOP); never trusted for anything security-relevant."""
        env = Envelope(kind, HOST, dst, PLAINTEXT_SEQ, pack(meta))
        self._deliver(dst, env.to_bytes())

    def _read(self, role: str, conn: Connection) -> None:
        while not self._stop.is_set():
            try:
                if not conn.poll(POLL_S):
                    continue
                data = conn.recv_bytes()
            except (EOFError, OSError):
                break
            try:
                env, ref = frame_header(data)
            except ChannelError as exc:
                log.warning("relay: dropped malformed bytes from %s: %s", role, exc)
                continue
            if ref is not None:
                self._track(ref.segment)
            if self.record:
                seen = data if ref is None else env.header_bytes() + self._peek(ref)
                with self._lock:
                    self._transcript.append(TranscriptEntry(time.monotonic(), env.src, env.dst, env.kind,
                                                            env.seq, len(seen), seen))
            for item in self._tampered(env, data):
                self._deliver(env.dst, item)
        self.down.add(role)
        if not self._stop.is_set():
            for dst in self.notify:
                if dst != role and dst not in self.down:
                    self.send_plaintext(dst, "PEER_DOWN", {"role": role})

    def _track(self, segment: str) -> None:
        """Remember a segment of this session for close(); forget consumed ones now and then."""
        if self.shm_prefix is None:
            return
        try:
            shm.check_name(segment, self.shm_prefix)
        except ChannelError:
            return
        with self._lock:
            self.segments.add(segment)
            if len(self.segments) > MAX_TRACKED:
                self.segments.intersection_update(shm.live(self.shm_prefix))

    def _peek(self, ref: BodyRef) -> bytes:
        """What the host reads in a referenced segment (empty if it is gone or not this session's)."""
        if self.shm_prefix is None:
            return b""
        try:
            return bytes(shm.read(ref.segment, ref.size, self.shm_prefix))
        except ChannelError:
            return b""

    def _tampered(self, env: Envelope, data: bytes) -> list[bytes]:
        if self.tamper is None:
            return [data]
        try:
            return self.tamper(env, data)
        except Exception:  # a broken test hook must not kill the relay thread
            log.exception("relay: tamper hook failed; the envelope is dropped")
            return []

    def _deliver(self, dst: str, data: bytes) -> None:
        out = self._writers.get(dst)
        if out is None or dst in self.down:
            self.dropped += 1
            return
        out.put(data)

    def _write(self, role: str, conn: Connection, out: queue.Queue[bytes | None]) -> None:
        while True:
            data = out.get()
            if data is None:
                return
            try:
                conn.send_bytes(data)
            except (BrokenPipeError, OSError):
                self.down.add(role)
                return

    def close(self, timeout: float = 3.0) -> None:
        """Stop every relay thread, then close the relay's pipe ends."""
        self._stop.set()
        for out in self._writers.values():
            out.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if not any(t.is_alive() for t in self._threads):
            for conn in self._conns:
                conn.close()
        with self._lock:
            shm.unlink_all(self.segments)
            self.segments.clear()
