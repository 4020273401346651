"""Lesson 05 (reference): Slowloris and other resource attacks.

A client can hurt a server without sending anything "bad", just by holding on to it:

    silence     connect and say nothing       -> the idle timeout (lessons 02 and 04)
    trickling   send one byte every few s     -> a deadline per MESSAGE: recv_msg_by()
    crowding    open hundreds of connections  -> a cap on clients, with a busy reply

A per-recv timeout starts again with every byte, so it cannot stop a trickling client: one
byte every 29 s beats a 30 s timeout for ever. A deadline is absolute: once a message has
begun, all of it must arrive by a fixed time on the clock (time.monotonic()).

    with GuardedServer(max_clients=10, idle_timeout=30, message_deadline=10) as server:
        ...
"""
from __future__ import annotations

import socket
import struct
import threading
import time

from solutions.lesson03_framing import MessageTooLarge
from solutions.lesson04_message_server import MessageServer

BUSY = "server busy, try later"
BUSY_FRAME = struct.pack("!I", len(BUSY)) + BUSY.encode("utf-8")  # lesson 03's frame, ready-made
CHUNK = 64 * 1024  # the most we ask recv() for at once: recv(n) reserves n bytes up front


class DeadlineExceeded(TimeoutError):
    """A message did not arrive in full by its deadline."""


def recv_exact_by(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    """Read exactly n bytes, all of them by `deadline` (a time.monotonic() value).

    Before EACH recv the socket's timeout is set to the time that is left, so waiting can
    never run past the deadline however the bytes are spread out. deadline=None means no
    deadline: each recv then waits up to the socket's own timeout (the weak version).
    """
    buffer = bytearray()
    while len(buffer) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"deadline passed after {len(buffer)} of {n} bytes")
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - len(buffer), CHUNK))
        except TimeoutError:
            if deadline is None:
                raise
            raise DeadlineExceeded(f"deadline passed after {len(buffer)} of {n} bytes") from None
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buffer)} of {n} bytes")
        buffer += chunk
    return bytes(buffer)


def recv_msg_by(sock: socket.socket, max_msg: int, idle_timeout: float,
                message_deadline: float | None) -> str:
    """Read one message: wait up to idle_timeout for it to begin, then give the rest of the
    frame message_deadline seconds in all.

    The cap is checked as soon as the header is complete, before one byte of the body is
    read. Raises TimeoutError (idle), DeadlineExceeded (too slow), MessageTooLarge,
    ConnectionError (closed) or UnicodeDecodeError.
    """
    sock.settimeout(idle_timeout)  # between messages a client may think, but not for ever
    first = sock.recv(1)
    if not first:
        raise ConnectionError("peer closed the connection")
    # The clock starts at the first byte: time spent idle is not held against the message.
    deadline = None if message_deadline is None else time.monotonic() + message_deadline
    (length,) = struct.unpack("!I", first + recv_exact_by(sock, 3, deadline))
    if length > max_msg:  # checked before one byte of the body is read
        raise MessageTooLarge(f"announced {length} bytes; the limit is {max_msg}")
    return recv_exact_by(sock, length, deadline).decode("utf-8")


class GuardedServer(MessageServer):
    """The lesson 04 message server, plus a deadline per message and a cap on clients.

    The cap is checked in admit(), on the accept thread, BEFORE a thread is started: a flood
    of 200 connections against a cap of 3 starts 3 client threads, not 200. A client over the
    cap is told "server busy, try later" at once and disconnected. That is kinder than making
    it wait, and it keeps the waiting out of our memory: a queue of waiting clients is exactly
    what a flood of connections is trying to build.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_clients: int = 10,
                 message_deadline: float | None = 10.0, **kwargs):
        super().__init__(host, port, **kwargs)  # max_msg, idle_timeout, logger
        self.max_clients = max_clients
        self.message_deadline = message_deadline
        # Bounded: releasing more often than acquiring raises ValueError, instead of
        # silently raising the cap by one each time.
        self.slots = threading.BoundedSemaphore(max_clients)

    def admit(self, conn: socket.socket, addr) -> bool:
        if self.slots.acquire(blocking=False):  # never wait for a slot: refuse at once
            return True
        self.reject(conn, addr)
        return False

    def release(self, conn: socket.socket, addr) -> None:
        # Runs once per admitted client, after quit, drop, timeout, reset or a bug alike.
        self.slots.release()

    def reject(self, conn: socket.socket, addr) -> None:
        """Log the refusal and send BUSY without ever blocking the accept thread."""
        self.log.warning("REJECT %s:%s at capacity (%d clients)", addr[0], addr[1],
                         self.max_clients)
        # A single non-blocking send: the 26-byte frame fits in any fresh socket's send
        # buffer, and a client that never reads cannot make the accept loop wait on it.
        conn.setblocking(False)
        try:
            conn.send(BUSY_FRAME)
        except OSError:  # already reset by the client, or (in theory) no buffer space
            pass

    def read_message(self, conn: socket.socket) -> str:
        return recv_msg_by(conn, self.max_msg, self.idle_timeout, self.message_deadline)
