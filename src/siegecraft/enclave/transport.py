"""A role's end of its pipe to the relay.

A dedicated reader thread drains the pipe into an in-memory queue, so the relay never blocks on a
role that is busy (training, summing), and raw bytes are parsed with `Envelope.from_bytes` - the
transport never unpickles anything the host wrote.

Sealed bodies of at least `bulk_threshold` bytes go through a fresh shared-memory segment (shm.py)
and only a reference frame crosses the pipe; the receiving mailbox copies the segment into private
memory, unlinks it and hands the channel the same ciphertext it would have read from the pipe. A
segment that is missing or has the wrong size yields an empty body, which the channel then rejects
like any other altered message (or drops as a replay, if its sequence number was already accepted).
"""

from __future__ import annotations

import logging
import queue
import threading
from multiprocessing.connection import Connection

from siegecraft.enclave import shm
from siegecraft.enclave.channel import SecureChannel
from siegecraft.enclave.errors import ChannelError, CitadelError
from siegecraft.enclave.wire import REF_MAGIC, BodyRef, Envelope, frame_header, ref_frame

log = logging.getLogger("siegecraft.enclave")
POLL_S = 0.2
#: sealed bodies this large or larger travel through shared memory (0 disables it)
DEFAULT_BULK_THRESHOLD = 64 * 1024
#: frames a mailbox holds unread before it drops new ones (a flood from the host must not exhaust memory);
#: bulk bodies do not count, only the frames on the pipe (their headers and the inline bodies)
MAX_PENDING_FRAMES = 8192
MAX_PENDING_BYTES = 256 << 20


class RelayClosedError(CitadelError):
    """The relay closed this role's pipe (shutdown, or the host went away)."""


class Mailbox:
    """Send envelopes to the relay and receive the envelopes it delivers to this role."""

    def __init__(self, conn: Connection, name: str, *, shm_prefix: str | None = None,
                 bulk_threshold: int = DEFAULT_BULK_THRESHOLD) -> None:
        self.conn = conn
        self.name = name
        self.shm_prefix = shm.check_prefix(shm_prefix) if shm_prefix else None
        self.bulk_threshold = int(bulk_threshold) if shm_prefix and bulk_threshold > 0 else 0
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        #: frames dropped unread because the inbox was full: count and bytes
        self.overflow = {"count": 0, "bytes": 0}
        self._send_lock = threading.Lock()
        self._scratch = bytearray()  # sealed bulk bodies are built here, then copied into their segment
        self._scratch_lock = threading.Lock()
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
            with self._pending_lock:
                full = (self._inbox.qsize() >= MAX_PENDING_FRAMES
                        or self._pending_bytes + len(data) > MAX_PENDING_BYTES)
                if full:
                    self.overflow["count"] += 1
                    self.overflow["bytes"] += len(data)
                else:
                    self._pending_bytes += len(data)
            if full:
                if self.overflow["count"] & (self.overflow["count"] - 1) == 0:
                    log.warning("%s: inbox full, dropped %d frame(s) unread", self.name, self.overflow["count"])
                continue
            self._inbox.put(data)
        self._inbox.put(None)

    def close(self) -> None:
        """Stop the reader thread, then close the pipe (never while the reader may be inside recv)."""
        self._stop.set()
        self._reader.join(timeout=2 * POLL_S + 1.0)
        if not self._reader.is_alive():
            self.conn.close()

    def send(self, env: Envelope) -> None:
        """Send `env`; a large sealed body goes through a shared-memory segment (see the module doc)."""
        segment = None
        if self.bulk_threshold and env.sealed and len(env.body) >= self.bulk_threshold:
            assert self.shm_prefix is not None
            segment = shm.write(self.shm_prefix, env.body)
            frame = ref_frame(env, BodyRef(segment, len(env.body)))
        else:
            frame = env.to_bytes()
        self._send_frame(frame, segment)

    def send_sealed(self, channel: SecureChannel, kind: str, payload: bytes | bytearray | memoryview,
                    epoch: int = 0) -> None:
        """Seal `payload` on `channel` and send it. A bulk body is encrypted into this mailbox's reusable
        scratch buffer and written from there into its segment: no fresh multi-megabyte allocation (and
        its page faults) per message. A small one travels inline, exactly as `send` would send it."""
        size = channel.sealed_size(len(payload))
        if not (self.bulk_threshold and size >= self.bulk_threshold):
            self.send(channel.seal(kind, payload, epoch))
            return
        assert self.shm_prefix is not None
        with self._scratch_lock:
            if len(self._scratch) < size:
                self._scratch = bytearray(size)
            with memoryview(self._scratch)[:size] as body:
                env = channel.seal_into(kind, payload, body, epoch)
                segment = shm.write(self.shm_prefix, body)
        self._send_frame(ref_frame(env, BodyRef(segment, size)), segment)

    def _send_frame(self, frame: bytes, segment: str | None) -> None:
        with self._send_lock:
            try:
                self.conn.send_bytes(frame)
            except (BrokenPipeError, OSError) as exc:
                if segment is not None:
                    shm.unlink(segment)
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
        with self._pending_lock:
            self._pending_bytes -= len(data)
        try:
            if data.startswith(REF_MAGIC):
                return self._resolve(*frame_header(data))
            return Envelope.from_bytes(data)
        except ChannelError as exc:
            log.warning("%s: dropped malformed bytes from the relay: %s", self.name, exc)
            return None

    def _resolve(self, env: Envelope, ref: BodyRef | None) -> Envelope:
        """The envelope with its body copied out of (and the segment then unlinked from) shared memory."""
        assert ref is not None
        if self.shm_prefix is None:
            raise ChannelError(f"{self.name}: reference frame received, but shared memory is not enabled")
        body: bytes | bytearray | memoryview = b""
        try:
            shm.check_name(ref.segment, self.shm_prefix)
            try:
                body = shm.read(ref.segment, ref.size, self.shm_prefix)
            finally:
                shm.unlink(ref.segment)
        except shm.SegmentError as exc:
            log.warning("%s: body of %s from %s unavailable: %s", self.name, env.kind, env.src, exc)
        return env.with_body(body)
