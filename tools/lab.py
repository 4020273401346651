"""Lab helpers for the lesson notebooks: test harness, not teaching.

The notebooks import these so that their code cells show only the idea being taught. Each
helper is small, uses loopback and timeouts, and never prints (notebook cells print).
One section per group of lessons; each helper says which lesson uses it.
"""
from __future__ import annotations

import random
import socket
import struct
import threading
import time

# -- lessons 01-03 ---------------------------------------------------------------------------


def tcp_pair(timeout: float = 2.0) -> tuple[socket.socket, socket.socket]:
    """A real loopback TCP connection: (client, server_side), both with `timeout`.

    No thread needed: connect() completes in the listener's backlog, then we accept()."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(timeout)
        client = socket.create_connection(listener.getsockname(), timeout=timeout)
        server_side, _ = listener.accept()
    server_side.settimeout(timeout)
    return client, server_side


def hung_up(sock: socket.socket, within: float) -> bool:
    """Wait up to `within` seconds without sending. True if the peer closed or reset."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:  # a reset is a hang-up too
        return True


def echo(sock: socket.socket, data: bytes) -> bytes:
    """Send `data` to an echo server and read back as many bytes (or fewer, if it closes)."""
    sock.sendall(data)
    reply = bytearray()
    while len(reply) < len(data):
        chunk = sock.recv(len(data) - len(reply))
        if not chunk:
            break
        reply += chunk
    return bytes(reply)


def leave_time_wait() -> int:
    """Lesson 01: serve one client with the server closing first, then close the listener.
    Returns the port, which is left holding a connection in TIME_WAIT."""
    with socket.create_server(("127.0.0.1", 0)) as old:
        old.settimeout(2.0)
        port = old.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as client:
            conn, _ = old.accept()
            conn.close()  # the server hangs up first: its side goes to TIME_WAIT
            client.recv(1)  # b"": the client sees it and closes too
    return port


def second_client_wait(address, hold: float = 1.0) -> tuple[float, bytes]:
    """Lesson 02: a first client gets one echo, then stays connected and silent for `hold`
    seconds; meanwhile a second client sends one byte. Returns (its wait in s, its reply)."""
    with socket.create_connection(address, timeout=5.0) as first:
        echo(first, b"1")
        leave = threading.Timer(hold, first.close)
        with socket.create_connection(address, timeout=5.0) as second:
            leave.start()
            started = time.monotonic()
            reply = echo(second, b"2")
            waited = time.monotonic() - started
        leave.cancel()
        leave.join()
    return waited, reply


class Spy:
    """Lesson 03: wraps a socket and records every recv() (size asked, bytes returned).

    A safety net refuses any single recv() over 64 MiB, so a reader that trusts a forged
    length cannot make the notebook reserve gigabytes."""

    SAFETY_NET = 64 * 1024 * 1024

    def __init__(self, sock):
        self.sock, self.asked, self.got = sock, [], 0

    def recv(self, n):
        self.asked.append(n)
        if n > self.SAFETY_NET:
            raise MemoryError(f"lab safety net: refused a recv({n:,})")
        data = self.sock.recv(n)
        self.got += len(data)
        return data


def trickle(sock: socket.socket, data: bytes, pause: float = 0.005) -> threading.Thread:
    """Lesson 03: send `data` one byte at a time from a daemon thread; returns the thread."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each byte its own packet

    def run():
        try:
            for i in range(len(data)):
                sock.sendall(data[i:i + 1])
                time.sleep(pause)
        except OSError:
            pass  # the reader hung up: nothing to report from a background thread

    thread = threading.Thread(target=run, name="lab-trickle", daemon=True)
    thread.start()
    return thread


def check_decoder(make_decoder, trials: int = 200, seed: int = 3) -> str:
    """Lesson 03 mini-challenge: feed three "!I" frames to a fresh decoder in random-sized
    pieces (seeded: the same cuts every run); say whether every way decoded correctly."""
    texts = ["hello", "", "héllo ✓ " * 30]
    stream = b"".join(struct.pack("!I", len(t.encode())) + t.encode() for t in texts)
    rng = random.Random(seed)
    for trial in range(trials):
        decoder, got, at = make_decoder(), [], 0
        try:
            while at < len(stream):
                step = rng.randint(1, 40)
                got += decoder.feed(stream[at:at + step])
                at += step
        except Exception as exc:
            return f"trial {trial}: {type(exc).__name__}: {exc}"
        if got != texts:
            return f"trial {trial}: wrong messages: {got!r:.70}"
    return f"all {trials} ways of cutting the stream decoded correctly"
