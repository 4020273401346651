"""Uncooperative peers: the clients and servers the graders set against your code.

Real peers go silent, trickle, reset, flood, lie about lengths and never read. Each function
here plays one of them, on loopback, with a timeout on every socket (a grader may fail, never
hang). Graders for any lesson may use them; add new peers at the end of the file.

Time limits are checked with graderkit.check_on_time: a defence with limit T must act between
0.9*T and 1.7*T after the right moment (twice too long fails; three times slower still passes).
"""
from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

LOOPBACK = "127.0.0.1"
PATIENCE = 2.0  # every peer socket's timeout: longer than any limit a grader tests
SMALL = 4096  # bytes: a socket buffer this small fills up after a few sends (back-pressure)


# --------------------------------------------------------------------------- clocks


def timed(call, *args, wait: float):
    """Run call(*args) in a helper thread and time it, as seen from outside.

    Returns (seconds until it returned or raised, its value, its exception), or
    (None, None, None) if it was still running after `wait` s. A stub's NotImplementedError
    is re-raised, so it is reported as "Not implemented yet" rather than as a wrong answer."""
    box: dict = {}
    done = threading.Event()

    def runner():
        try:
            box["value"] = call(*args)
        except BaseException as exc:  # handed back to the grader, which judges it
            box["error"] = exc
        finally:
            box["ended"] = time.monotonic()
            done.set()

    started = time.monotonic()
    threading.Thread(target=runner, daemon=True, name="grader-timed").start()
    if not done.wait(wait):
        return None, None, None
    if isinstance(box.get("error"), NotImplementedError):
        raise box["error"]
    return box["ended"] - started, box.get("value"), box.get("error")


# --------------------------------------------------------------------------- sockets


def small_buffers(sock: socket.socket, size: int = SMALL) -> socket.socket:
    """Shrink both kernel buffers. Call before connect/listen: TCP advertises its window then.
    A listener's sizes are inherited by every socket it accepts."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    return sock


def listener(small: bool = False) -> socket.socket:
    """A loopback listener on a free port (SO_REUSEADDR, like any server), with a timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if small:
        small_buffers(sock)
    sock.bind((LOOPBACK, 0))
    sock.listen(16)
    sock.settimeout(PATIENCE)
    return sock


def client(address, small: bool = False, timeout: float = PATIENCE) -> socket.socket:
    """A connected client. small=True: tiny buffers, so if it never reads, the peer's sends
    soon block (the 'never-reading client')."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if small:
            small_buffers(sock)
        sock.settimeout(timeout)
        sock.connect(tuple(address))
    except OSError:
        sock.close()
        raise
    return sock


def tcp_pair(small: bool = False, timeout: float = PATIENCE):
    """Two connected TCP sockets on loopback: (ours, yours). Real TCP, not socketpair(), so
    resets and back-pressure behave as they do between two machines."""
    with listener(small) as lst:
        ours = client(lst.getsockname(), small, timeout)
        try:
            yours, _ = lst.accept()
        except OSError:
            ours.close()
            raise
    yours.settimeout(timeout)
    return ours, yours


def reset(sock: socket.socket) -> None:
    """Close with a reset (RST) instead of a normal close (FIN): SO_LINGER on, 0 s. This is
    what a crashed peer, or a firewall, looks like to the other side."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def forged_header(length: int) -> bytes:
    """A frame header that announces `length` bytes, whatever follows it (a lying peer)."""
    return struct.pack("!I", length)


# --------------------------------------------------------------------------- behaviours


def send_in_pieces(sock: socket.socket, pieces, pause: float = 0.02) -> None:
    """Send each piece separately, pausing between them: a receiver that calls recv once sees
    only the first piece."""
    for i, piece in enumerate(pieces):
        if i:
            time.sleep(pause)
        sock.sendall(piece)


def read_slowly(sock: socket.socket, limit: int, pause: float = 0.001,
                size: int = SMALL) -> tuple[bytes, str]:
    """Read until the peer closes, `size` bytes at a time with a pause after each: a slow
    reader keeps the sender's buffer full, so a `send` that writes only part shows up as
    missing data. Never reads past `limit` bytes.
    Returns (data, 'closed' | 'reset' | 'timeout' | 'limit')."""
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = sock.recv(min(size, limit - len(data)))
        except (TimeoutError, socket.timeout):
            return bytes(data), "timeout"
        except ConnectionError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "closed"
        data += chunk
        time.sleep(pause)
    return bytes(data), "limit"


def flood_until_stuck(sock: socket.socket, stall: float = 0.2, limit: int = 64 << 20) -> float:
    """Send as fast as the peer takes it, never reading, until nothing more goes out for
    `stall` s (both sides' buffers are full) or the peer hangs up. Returns the monotonic time
    of the last byte that went out."""
    chunk = b"x" * 65536
    sent, last = 0, time.monotonic()
    sock.setblocking(False)
    try:
        while sent < limit and time.monotonic() - last < stall:
            try:
                sent += sock.send(chunk)
                last = time.monotonic()
            except BlockingIOError:
                time.sleep(0.005)
            except OSError:  # the peer hung up: nothing more will go out
                break
    finally:
        sock.settimeout(PATIENCE)
    return last


def wait_for_hangup(sock: socket.socket, wait: float) -> float | None:
    """For a client that cannot read (its buffers are full): poke the connection with one
    byte every 10 ms until the server's hang-up makes sending fail. Returns the monotonic time
    the hang-up was seen, or None if the connection was still up after `wait` s."""
    ends = time.monotonic() + wait
    sock.setblocking(False)
    try:
        while time.monotonic() < ends:
            try:
                sock.send(b"x")
            except BlockingIOError:
                pass
            except OSError:  # reset or broken pipe: the server has closed it
                return time.monotonic()
            time.sleep(0.01)
        return None
    finally:
        sock.settimeout(PATIENCE)


@contextlib.contextmanager
def silent_server(read: bool = True):
    """A server that accepts every client and never replies. read=True: it reads and throws
    away what arrives (so your sends succeed and your recv waits); read=False: it never reads
    either. Yields its address; `received` on the listener counts bytes read."""
    lst = listener(small=not read)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = lst.accept()
            except OSError:  # a timeout (or the listener closed): look at the stop flag
                continue
            conns.append(conn)
            if read:
                threading.Thread(target=_drain, args=(conn, stop), daemon=True,
                                 name="grader-silent").start()

    accepter = threading.Thread(target=serve, daemon=True, name="grader-silent")
    lst.settimeout(0.05)
    accepter.start()
    try:
        yield lst.getsockname()
    finally:
        stop.set()
        accepter.join(PATIENCE)
        for conn in conns:
            conn.close()
        lst.close()


def _drain(conn: socket.socket, stop: threading.Event) -> None:
    conn.settimeout(0.05)
    while not stop.is_set():
        try:
            if not conn.recv(65536):
                return
        except (TimeoutError, socket.timeout):
            continue
        except OSError:
            return


def port_in_time_wait() -> int:
    """A free port that still holds a connection in TIME_WAIT: the server side closed first
    (as a server that is stopped does), so the port is 'in use' for a minute or so to any
    bind() that has not set SO_REUSEADDR."""
    with listener() as old:
        port = old.getsockname()[1]
        with client(old.getsockname()) as peer:
            conn, _ = old.accept()
            conn.close()  # the server's side closes first: TIME_WAIT sits on `port`
            peer.recv(1)  # wait for that close to arrive, then close our side too
    return port
