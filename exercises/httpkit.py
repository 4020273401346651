"""HTTP helpers the lesson 07-09 graders share: raw requests over plain sockets, a small
independent response reader, and uncooperative peers (tricklers, non-readers, resetters).

Graders never use your parser to check your parser: every byte they send is written out
here by hand, and every response is read by the few lines below. Every socket has a timeout.
"""
from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from graderkit import WAIT, Transcript, describe, run_in_thread, short

HEAD_LIMIT = 64 * 1024  # a grader never buffers a response head larger than this


def request(method: str = "GET", target: str = "/", headers=(), body: bytes = b"",
            version: str = "HTTP/1.1", host: bool = True, length: bool | None = None) -> bytes:
    """The bytes of a request. host=False leaves out Host; length=True adds Content-Length
    (the default: only when there is a body)."""
    lines = [f"{method} {target} {version}"]
    if host:
        lines.append("Host: grader.test")
    lines += [f"{name}: {value}" for name, value in headers]
    if length or (length is None and body):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Response:
    status: int
    version: str
    headers: list = field(default_factory=list)  # [(lower-case name, value)]
    body: bytes = b""
    raw_head: bytes = b""

    def header(self, name: str, default=None):
        values = self.all(name)
        return values[0] if values else default

    def all(self, name: str) -> list:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __str__(self):
        return f"{self.status} with body {short(self.body)}"


class ReadError(Exception):
    """The server's reply could not be read as an HTTP response (text says why)."""


class Reader:
    """Reads responses from one socket; bytes after a response stay for the next one."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def _more(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            raise ReadError(f"nothing more within {self.sock.gettimeout()} s "
                            f"({len(self.buffer)} bytes so far)") from None
        except ConnectionError as exc:
            raise ReadError(f"the connection was reset ({describe(exc)}) after "
                            f"{len(self.buffer)} bytes") from None
        if not chunk:
            raise ReadError(f"the server closed the connection after {len(self.buffer)} "
                            f"bytes {short(bytes(self.buffer))}")
        self.buffer += chunk

    def response(self, head_only: bool = False) -> Response:
        while (end := self.buffer.find(b"\r\n\r\n")) == -1:
            if len(self.buffer) > HEAD_LIMIT:
                raise ReadError("a response head over 64 KiB")
            self._more()
        raw = bytes(self.buffer[:end])
        del self.buffer[:end + 4]
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ReadError(f"a status line like 'HTTP/1.1 200 OK', got {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ReadError(f"a malformed header line {line!r}")
            headers.append((name.strip().lower(), value.strip()))
        reply = Response(int(parts[1]), parts[0], headers, b"", raw)
        if head_only:
            return reply
        length = reply.header("content-length")
        if length is None:
            raise ReadError(f"a Content-Length header (got headers {raw!r})")
        n = int(length)
        while len(self.buffer) < n:
            self._more()
        reply.body = bytes(self.buffer[:n])
        del self.buffer[:n]
        return reply


def read_response(sock, head_only: bool = False) -> Response:
    """One response from a fresh socket (see Reader for several on one connection)."""
    return Reader(sock).response(head_only)


def exchange(address, data: bytes, story: Transcript, expected: str = "a response",
             head_only: bool = False, who: str = "the client") -> Response:
    """Connect, send data, read one response (failing with the story if there is none)."""
    with socket.create_connection(address, timeout=WAIT) as sock:
        sock.sendall(data)
        story.step(f"{who} sent {short(data, 120)}")
        return expect_response(Reader(sock), story, expected, head_only)


def expect_response(reader: Reader, story: Transcript, expected: str = "a response",
                    head_only: bool = False) -> Response:
    try:
        reply = reader.response(head_only)
    except (ReadError, OSError) as exc:
        story.fail(expected, str(exc))
    story.step(f"got {reply}")
    return reply


def check_status(story: Transcript, reply: Response, status: int, why: str = "") -> None:
    story.check(reply.status == status, f"status {status}" + (f" ({why})" if why else ""),
                f"{reply.status}, head {short(reply.raw_head, 200)}")


def closed_within(sock: socket.socket, wait: float) -> tuple[str, float, bytes]:
    """Read until the peer closes or `wait` s pass: ('closed'|'reset'|'open', seconds, data)."""
    started = time.monotonic()
    data = bytearray()
    while True:
        left = wait - (time.monotonic() - started)
        if left <= 0:
            return "open", time.monotonic() - started, bytes(data)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return "open", time.monotonic() - started, bytes(data)
        except ConnectionError:
            return "reset", time.monotonic() - started, bytes(data)
        if not chunk:
            return "closed", time.monotonic() - started, bytes(data)
        data += chunk


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST instead of a polite FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def slow_reader(address, rcvbuf: int = 4096) -> socket.socket:
    """A client whose receive buffer is tiny: once it stops reading, the server's sends
    block almost at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: it counts
    sock.settimeout(WAIT)
    sock.connect(address)
    return sock


@contextlib.contextmanager
def trickler(sock: socket.socket, data: bytes, interval: float = 0.1):
    """Send data one byte every `interval` s in a background thread. Yields a dict with
    'first' (monotonic time of the first byte) and 'sent' (bytes so far)."""
    stop = threading.Event()
    state = {"first": None, "sent": 0}

    def run():
        try:
            for i in range(len(data)):
                if stop.is_set():
                    return
                sock.send(data[i:i + 1])
                if state["first"] is None:
                    state["first"] = time.monotonic()
                state["sent"] += 1
                stop.wait(interval)
        except OSError:
            pass

    handle = run_in_thread(run, name="grader-trickle")
    while state["first"] is None and not stop.is_set():
        time.sleep(0.005)
        if handle_done(handle):
            break
    try:
        yield state
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            handle.result(timeout=WAIT)


def handle_done(handle) -> bool:
    try:
        handle.result(timeout=0)
        return True
    except TimeoutError:
        return False
    except Exception:
        return True


@contextlib.contextmanager
def serve_forever(server, story: Transcript):
    """Run a socketserver/http.server server in a daemon thread; shut it down afterwards."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="grader-serve-forever", daemon=True)
    thread.start()
    story.step("started the server with serve_forever() in a thread")
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


# --------------------------------------------------------------------------- servers under test
# (shared by the graders of lesson 09's threaded server and lesson 13's asyncio server)


def clocks(**overrides):
    """Every clock far from the one under test (which the test sets short)."""
    values = dict(header_timeout=5.0, body_timeout=5.0, idle_timeout=5.0, send_timeout=5.0)
    values.update(overrides)
    return values


def health(address, story, within=2.0):
    """GET /healthz as JSON, retrying while the server says 503 (slots of connections that
    just closed come back a moment after the close)."""
    ends = time.monotonic() + within
    while True:
        reply = exchange(address, request("GET", "/healthz"), story, "a /healthz response",
                         who="a health check")
        if reply.status != 503 or time.monotonic() > ends:
            break
        time.sleep(0.05)
    check_status(story, reply, 200)
    try:
        return reply.json()
    except ValueError:
        story.fail("a JSON body from /healthz", short(reply.body))


def wait_for_active(address, story, expected, within=2.0):
    """Poll /healthz until active_connections == expected; returns the seconds it took."""
    started = time.monotonic()
    while True:
        got = health(address, story).get("active_connections")
        if got == expected:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            story.fail(f"active_connections to come back to {expected} within {within} s",
                       f"still {got!r}")
        time.sleep(0.05)


def check_protected(story, reply, what):
    story.check(reply.header("x-content-type-options", "").lower() == "nosniff"
                and "frame-ancestors" in reply.header("content-security-policy", ""),
                f"the security headers (nosniff, a CSP with frame-ancestors) on {what}",
                short(reply.raw_head, 400))


def check_drop_time(story, took, clock, name):
    low, high = clock * 0.9, clock * 1.7 + 0.1
    story.check(low <= took <= high, f"the drop {low:.2f}-{high:.2f} s after the clock started "
                f"({name} = {clock} s)", f"{took:.2f} s")
