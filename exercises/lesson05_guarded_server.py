"""Lesson 05 exercise: the guarded server.  Notebook: lessons/05_slowloris.ipynb

Defend the lesson 04 message server against clients that attack by holding on:

    trickling  one byte every 0.1 s: a per-recv timeout never fires  -> a per-MESSAGE deadline
    crowding   more clients than threads we want to spend             -> a cap, with a busy reply

Grade yourself with:

    pytest exercises -k lesson05

GuardedServer extends the REFERENCE MessageServer from lesson 04, and the framing helpers
are the reference ones from lesson 03, so this lesson does not depend on your earlier work
(swap in your own if you like):
"""
from __future__ import annotations

import socket
import struct
import threading
import time

from solutions.lesson03_framing import MessageTooLarge  # or yours
from solutions.lesson04_message_server import MessageServer  # or your own from lesson 04

BUSY = "server busy, try later"
BUSY_FRAME = struct.pack("!I", len(BUSY)) + BUSY.encode("utf-8")  # lesson 03's frame, ready-made
CHUNK = 64 * 1024  # ask recv() for at most this much at once: recv(n) reserves n bytes up front


class DeadlineExceeded(TimeoutError):
    """A message did not arrive in full by its deadline."""


def recv_exact_by(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    """Read exactly n bytes, all of them by `deadline` (a time.monotonic() value).

    Like lesson 03's recv_exact, but before EACH recv: work out the time left
    (deadline - time.monotonic()); if none is left raise DeadlineExceeded; else
    sock.settimeout(time_left). A recv that times out also means DeadlineExceeded.
    b"" before n bytes -> ConnectionError. deadline=None: no deadline, plain recv_exact.
    """
    raise NotImplementedError("recv_exact_by(): like recv_exact, but settimeout(deadline - "
                              "time.monotonic()) before each recv; DeadlineExceeded when "
                              "no time is left")


def recv_msg_by(sock: socket.socket, max_msg: int, idle_timeout: float,
                message_deadline: float | None) -> str:
    """Read one framed message with two clocks:

    1. sock.settimeout(idle_timeout) and wait for the FIRST byte (b"" -> ConnectionError);
    2. then the rest of the frame must arrive by time.monotonic() + message_deadline:
       the other 3 bytes of the "!I" header, the size check (over max_msg: raise
       MessageTooLarge) BEFORE any of the body, then the body; decode it as UTF-8.
    message_deadline=None means no deadline (the weak version, for comparison).
    Give every exception a message an operator can act on (the server logs it): e.g.
    MessageTooLarge("announced 70000 bytes; the limit is 65536"), ConnectionError("peer
    closed after 2 of 4 bytes").
    """
    raise NotImplementedError("recv_msg_by(): idle timeout for the first byte, then "
                              "recv_exact_by with one deadline for header and body")


class GuardedServer(MessageServer):
    """MessageServer + at most max_clients at once + a deadline for every message."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_clients: int = 10,
                 message_deadline: float | None = 10.0, **kwargs):
        super().__init__(host, port, **kwargs)  # max_msg, idle_timeout, logger
        self.max_clients = max_clients
        self.message_deadline = message_deadline
        # Add the slots here: a semaphore with max_clients permits. Which kind of semaphore
        # complains if it is released more often than acquired? (See the notebook.)

    def admit(self, conn: socket.socket, addr) -> bool:
        """Called by ThreadedServer ON THE ACCEPT THREAD, before a thread is started for this
        client (so a flood of refused clients costs no threads). Take a slot WITHOUT
        blocking and return True; no slot free: self.reject(conn, addr) and return False
        (the accept loop then closes conn)."""
        raise NotImplementedError("admit(): acquire(blocking=False) a slot and return True, "
                                  "or reject() and return False")

    def release(self, conn: socket.socket, addr) -> None:
        """Called in the client's thread after the connection ends, however it ended (quit,
        timeout, reset, a bug): give the slot back."""
        raise NotImplementedError("release(): give the slot back")

    def reject(self, conn: socket.socket, addr) -> None:
        """Log a warning "REJECT <ip>:<port> at capacity (<max_clients> clients)" with
        self.log, and send BUSY_FRAME WITHOUT ever blocking: this runs on the accept thread,
        and a client that never reads must not stall it (conn.setblocking(False), then one
        conn.send(), ignoring OSError)."""
        raise NotImplementedError("reject(): log a REJECT warning naming the peer, send "
                                  "BUSY_FRAME without blocking")

    def read_message(self, conn: socket.socket) -> str:
        """One message, with the server's cap, idle timeout and message deadline."""
        raise NotImplementedError("read_message(): return recv_msg_by(conn, ...) with the "
                                  "server's max_msg, idle_timeout and message_deadline")
