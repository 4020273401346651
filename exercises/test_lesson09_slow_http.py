"""Graders for lesson 09, slow HTTP and a connection cap.  Run: pytest exercises -k lesson09

Each defence is timed against its own clock, set short here (0.5-0.6 s) with the other
clocks far away, so a deadline twice too long fails and a machine three times slower passes.

    python -m exercises.lesson09_slow_http ...  (the program graders; --against DIR: DIR's name)
"""
import contextlib
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from graderkit import WAIT, describe, run_in_thread, serving, short, signal_safety_net  # noqa: F401 (a fixture)
from httpkit import (ReadError, Reader, check_drop_time, check_protected, check_status, clocks,
                     closed_within, exchange, expect_response, health, request, reset,
                     slow_reader, trickler, wait_for_active)

REPO = Path(__file__).resolve().parent.parent
BOOM = "boom (raised on purpose by the grader's route)"
FILE = b"hello from the grader's site\n"


@pytest.fixture
def lesson(graded):
    return graded("lesson09_slow_http")


@pytest.fixture
def root(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(b"<h1>grader</h1>\n")
    (site / "hello.txt").write_bytes(FILE)
    (tmp_path / "secret.txt").write_bytes(b"TOP SECRET\n")
    return site


def make_http_server(lesson, story, root, **kwargs):
    """Your HardenedHTTPServer, wrapped so a NotImplementedError in the server's own threads
    (admit on the accept thread, the handler in a client thread) reaches the test, with a
    planted bug at GET /boom, and a count of connections that got a thread."""

    class Graded(lesson.HardenedHTTPServer):
        poll_interval = 0.05  # ThreadedServer's accept loop: stop() returns sooner
        not_implemented = None
        threads_started = 0

        def admit(self, conn, addr):
            try:
                return super().admit(conn, addr)
            except NotImplementedError as exc:
                self.not_implemented = exc
                return False

        def release(self, conn, addr):
            try:
                super().release(conn, addr)
            except NotImplementedError as exc:
                self.not_implemented = exc

        def process(self, conn, addr):
            type(self).threads_started += 1
            try:
                super().process(conn, addr)
            except NotImplementedError as exc:
                self.not_implemented = exc

        def route(self, req, body):
            if req.target == "/boom":
                raise RuntimeError(BOOM)
            return super().route(req, body)

    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "logger")
    story.step(f"created HardenedHTTPServer(<site>, {args})")
    return Graded(root, **kwargs)


class Held(Reader):
    """A Reader over bytes already received: no socket, so a short reply is an error."""

    def __init__(self, data: bytes):
        super().__init__(None)
        self.buffer = bytearray(data)

    def _more(self):
        raise ReadError(f"only {len(self.buffer)} bytes {short(bytes(self.buffer))}")


def check_no_crash(story, caplog):
    """A slow client is an everyday event: no ERROR record (a handler that crashed while
    dropping it, "handler failed ..." with a traceback) in any logger."""
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    story.check(not errors, "no error logged while dropping a slow client", short(errors, 300))


def check_optional_408(story, data, head_only=False):
    """A 408 before closing is optional; if anything is sent, it must be one whole, well-formed
    408 with the security headers and Connection: close (no body when the request was HEAD),
    and nothing after it."""
    if not data:
        return
    held = Held(data)
    try:
        reply = held.response(head_only)
    except ReadError as exc:
        story.fail("nothing, or one whole 408 response, before the close", str(exc))
    check_status(story, reply, 408, "the only answer a too-slow client may get")
    check_protected(story, reply, "the 408")
    story.check((reply.header("connection") or "").lower() == "close", "Connection: close on "
                "the 408 (the server hangs up)", short(reply.raw_head, 300))
    story.check(not held.buffer, "nothing after the 408" + (" (a response to HEAD has no body)"
                if head_only else ""), short(bytes(held.buffer)))


# --------------------------------------------------------------------------- 09.deadlines


def check_names(story, error, part):
    """The reader's exception says what was late or cut short: the log line then tells a
    slow head from a slow body."""
    story.check(part in str(error).lower(), f"a message naming the request {part} (e.g. "
                f"'request {part}: deadline passed')", repr(str(error)))


def pair():
    reader, writer = socket.socketpair()
    writer.settimeout(WAIT)
    return reader, writer


def call(story, what, function, *args, wait=WAIT):
    """Run function(*args) in a thread: (value, None, seconds) or (None, exception, seconds).
    A call still running after `wait` s fails the test (it never returned)."""
    story.step(f"called {what}")
    box = {}

    def runner():
        try:
            box["value"] = function(*args)
        except BaseException as exc:  # handed back to the grader
            box["error"] = exc
    started = time.monotonic()
    thread = threading.Thread(target=runner, name="grader-call", daemon=True)
    thread.start()
    thread.join(wait)
    took = time.monotonic() - started
    if thread.is_alive():
        story.fail(f"{what} to return or raise within {wait} s", "it was still waiting")
    error = box.get("error")
    if isinstance(error, NotImplementedError):
        raise error
    return box.get("value"), error, took


HEAD = b"GET /hello.txt HTTP/1.1\r\nHost: grader.test\r\nX-Pad: " + b"p" * 40 + b"\r\n\r\n"


@pytest.mark.task("09.deadlines")
def test_read_head_by_returns_the_head_and_keeps_the_rest(lesson, story):
    reader, writer = pair()
    with reader, writer:
        data = HEAD + b"NEXT"

        def send_in_pieces():
            for i in range(0, len(data), 7):
                writer.sendall(data[i:i + 7])
                time.sleep(0.005)
        run_in_thread(send_in_pieces, name="grader-send")
        story.step("the grader sent a head and 4 more bytes, 7 bytes at a time")
        buffer = bytearray()
        head, error, _ = call(story, "read_head_by(sock, buffer, now + 2, Limits())",
                              lesson.read_head_by, reader, buffer, time.monotonic() + 2.0,
                              lesson.Limits())
        story.check(error is None and head == HEAD, f"the head {short(HEAD)}",
                    describe(error) if error else short(head))
        time.sleep(0.1)
        reader.settimeout(0.2)
        with contextlib.suppress(OSError):
            buffer += reader.recv(100)  # whatever had not arrived yet when the head was whole
        story.check(bytes(buffer) == b"NEXT", "b'NEXT' left over (bytes after the head are "
                    "kept in the buffer, not dropped)", short(bytes(buffer)))
        buffer = bytearray(HEAD + b"more")
        head, error, _ = call(story, "read_head_by with the whole head already in the buffer "
                              "and the deadline already past", lesson.read_head_by, reader,
                              buffer, time.monotonic() - 1.0, lesson.Limits())
        story.check(error is None and head == HEAD, "the head from the buffer (nothing to "
                    "wait for, so no deadline to miss)",
                    describe(error) if error else short(head))
        story.check(bytes(buffer) == b"more", "b'more' left in the buffer", short(bytes(buffer)))


@pytest.mark.task("09.deadlines")
def test_read_head_by_drops_a_trickler_at_the_deadline(lesson, story):
    reader, writer = pair()
    with reader, writer:
        with trickler(writer, HEAD, interval=0.1) as state:
            story.step("the grader trickles a head, one byte every 0.1 s (it needs 6 s)")
            buffer = bytearray()
            deadline = state["first"] + 0.6
            head, error, _ = call(story, "read_head_by(sock, buffer, <first byte> + 0.6 s)",
                                  lesson.read_head_by, reader, buffer, deadline,
                                  lesson.Limits())
            took = time.monotonic() - state["first"]
        story.check(isinstance(error, TimeoutError), "a TimeoutError (DeadlineExceeded): "
                    "each byte comes within 0.1 s, so only a deadline stops this",
                    describe(error) if error else f"the head {short(head)}")
        check_names(story, error, "head")
        check_drop_time(story, took, 0.6, "the deadline")


@pytest.mark.task("09.deadlines")
def test_read_head_by_refuses_an_oversized_head_early(lesson, story):
    limits = lesson.Limits(max_request_line=100, max_header_bytes=200, max_headers=10)
    reader, writer = pair()
    with reader, writer:
        writer.sendall(b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 400)
        story.step("the grader sent a request line and 408 bytes of one header, no blank line "
                   "(Limits: 100-byte line, 200 bytes of headers)")
        head, error, took = call(story, "read_head_by(sock, buffer, now + 5, limits)",
                                 lesson.read_head_by, reader, bytearray(),
                                 time.monotonic() + 5.0, limits)
        story.check(isinstance(error, lesson.HttpError) and error.status == 431,
                    "HttpError 431 at once (not after waiting for the rest)",
                    describe(error) if error else short(head))
        story.check(took < 1.0, "within 1 s", f"{took:.2f} s")
    reader, writer = pair()
    with reader, writer:
        writer.sendall(b"GET /" + b"a" * 300)
        story.step("the grader sent 305 bytes of a request line (limit 100), no CRLF")
        head, error, took = call(story, "read_head_by(sock, buffer, now + 5, limits)",
                                 lesson.read_head_by, reader, bytearray(),
                                 time.monotonic() + 5.0, limits)
        story.check(isinstance(error, lesson.HttpError) and error.status == 414,
                    "HttpError 414 at once", describe(error) if error else short(head))


@pytest.mark.task("09.deadlines")
def test_read_head_by_reports_a_closed_connection(lesson, story):
    reader, writer = pair()
    with reader:
        writer.sendall(b"GET / HTTP/1.1\r\nHo")
        writer.close()
        story.step("the grader sent half a head and closed")
        head, error, _ = call(story, "read_head_by(sock, buffer, now + 2)", lesson.read_head_by,
                              reader, bytearray(), time.monotonic() + 2.0, lesson.Limits())
        story.check(isinstance(error, ConnectionError), "ConnectionError",
                    describe(error) if error else short(head))
        check_names(story, error, "head")


@pytest.mark.task("09.deadlines")
def test_a_deadline_reached_exactly_now_has_passed(lesson, story, monkeypatch):
    now = time.monotonic()

    class Frozen:  # the lesson's clock stopped at `now`: time left is exactly 0
        @staticmethod
        def monotonic():
            return now

    monkeypatch.setattr(lesson, "time", Frozen)
    story.step("froze the lesson's time.monotonic() and gave a deadline equal to it (0 s left: "
               "settimeout(0) would make the socket non-blocking, not wait 0 s)")
    reader, writer = pair()
    with reader, writer:
        for what, function, args in [
                ("read_head_by(sock, bytearray(), deadline=now)", lesson.read_head_by,
                 (reader, bytearray(), now, lesson.Limits())),
                ("read_body_by(sock, bytearray(), 5, deadline=now)", lesson.read_body_by,
                 (reader, bytearray(), 5, now)),
                ("send_by(sock, b'x', deadline=now)", lesson.send_by, (writer, b"x", now))]:
            value, error, _ = call(story, what, function, *args)
            story.check(isinstance(error, lesson.DeadlineExceeded), "DeadlineExceeded: no "
                        "time is left (time left <= 0)", describe(error) if error else
                        f"it returned {short(value)}")
            if function is not lesson.send_by:
                check_names(story, error, "head" if function is lesson.read_head_by else "body")


@pytest.mark.task("09.deadlines")
def test_read_body_by_uses_the_buffer_first_then_its_deadline(lesson, story):
    reader, writer = pair()
    with reader, writer:
        writer.sendall(b"56789NEXT")
        buffer = bytearray(b"01234")
        story.step("buffer holds b'01234'; the socket has b'56789NEXT'")
        body, error, _ = call(story, "read_body_by(sock, buffer, 10, now + 2)",
                              lesson.read_body_by, reader, buffer, 10, time.monotonic() + 2.0)
        story.check(error is None and body == b"0123456789", "b'0123456789'",
                    describe(error) if error else short(body))
        story.check(bytes(buffer) == b"NEXT", "b'NEXT' left in the buffer", short(bytes(buffer)))
        buffer = bytearray(b"abcdef")
        body, error, _ = call(story, "read_body_by(sock, bytearray(b'abcdef'), 3, <past>)",
                              lesson.read_body_by, reader, buffer, 3, time.monotonic() - 1)
        story.check(error is None and body == b"abc" and bytes(buffer) == b"def",
                    "b'abc', with b'def' left", describe(error) if error else short(body))
        with trickler(writer, b"x" * 60, interval=0.1) as state:
            body, error, _ = call(story, "read_body_by(sock, buffer, 60, <first byte> + 0.6 s) "
                                  "while the grader trickles 60 bytes at 0.1 s each",
                                  lesson.read_body_by, reader, bytearray(), 60,
                                  state["first"] + 0.6)
            took = time.monotonic() - state["first"]
        story.check(isinstance(error, TimeoutError), "a TimeoutError (DeadlineExceeded)",
                    describe(error) if error else short(body))
        check_names(story, error, "body")
        check_drop_time(story, took, 0.6, "the deadline")
    reader, writer = pair()
    with reader:
        writer.sendall(b"short")
        writer.close()
        body, error, _ = call(story, "read_body_by(sock, buffer, 10, now + 2) when the peer "
                              "sends 5 bytes and closes", lesson.read_body_by, reader,
                              bytearray(), 10, time.monotonic() + 2.0)
        story.check(isinstance(error, ConnectionError), "ConnectionError",
                    describe(error) if error else short(body))


# --------------------------------------------------------------------------- 09.keepalive


@pytest.mark.task("09.keepalive")
def test_keep_alive_and_pipelining(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger, **clocks())
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        reader = Reader(sock)
        sock.sendall(request("GET", "/hello.txt") + request("GET", "/missing")
                     + request("HEAD", "/hello.txt"))
        story.step("sent three requests in one packet: GET /hello.txt, GET /missing, "
                   "HEAD /hello.txt")
        first = expect_response(reader, story, "the response to GET /hello.txt")
        story.check(first.status == 200 and first.body == FILE, f"200 with {short(FILE)}",
                    str(first))
        story.check((first.header("content-type") or "").startswith("text/plain"),
                    "Content-Type: text/plain for a .txt file (content_type from lesson 07)",
                    short(first.raw_head, 300))
        check_protected(story, first, "a 200")
        second = expect_response(reader, story, "the response to GET /missing (pipelined)")
        check_status(story, second, 404)
        check_protected(story, second, "a 404")
        third = expect_response(reader, story, "the response to HEAD", head_only=True)
        story.check(third.status == 200 and third.header("content-length") == str(len(FILE)),
                    f"200 with Content-Length {len(FILE)}", str(third))
        time.sleep(0.2)
        sock.sendall(request("GET", "/"))
        story.step("0.2 s later, sent GET / on the same connection")
        fourth = expect_response(reader, story, "the response to GET / (keep-alive)")
        check_status(story, fourth, 200)


@pytest.mark.task("09.keepalive")
@pytest.mark.parametrize("when", ["before-any-request", "between-requests"])
def test_idle_timeout(lesson, story, root, logs, when):
    server = make_http_server(lesson, story, root, logger=logs.logger,
                              **clocks(idle_timeout=0.5))
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        if when == "between-requests":
            sock.sendall(request("GET", "/hello.txt"))
            expect_response(Reader(sock), story, "the response to GET /hello.txt")
        story.step("the client then said nothing (idle_timeout 0.5 s; every other clock 5 s)")
        how, took, _ = closed_within(sock, 2.0)
        story.check(how in ("closed", "reset"), "the server to close the idle connection",
                    f"still open after {took:.2f} s")
        check_drop_time(story, took, 0.5, "idle_timeout")


@pytest.mark.task("09.keepalive")
@pytest.mark.parametrize("case", ["connection-close", "http-1.0", "smuggling", "bad-length",
                                  "too-large"])
def test_close_when_asked_or_in_doubt(lesson, story, root, logs, case):
    data, status = {
        "connection-close": (request("GET", "/hello.txt", [("Connection", "close")]), 200),
        "http-1.0": (request("GET", "/hello.txt", version="HTTP/1.0", host=False), 200),
        "smuggling": (request("POST", "/echo", [("Content-Type", "application/json"),
                                                ("Content-Length", "2"),
                                                ("Transfer-Encoding", "chunked")],
                              length=False) + b"{}", 400),
        "bad-length": (request("POST", "/echo", [("Content-Type", "application/json"),
                                                 ("Content-Length", "+2")],
                               length=False) + b"{}", 400),
        "too-large": (request("POST", "/echo", [("Content-Type", "application/json"),
                                                ("Content-Length", "2000")],
                              length=False) + b"{}", 413),
    }[case]
    server = make_http_server(lesson, story, root, logger=logs.logger, max_body=1000,
                              **clocks())
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        sock.sendall(data)
        story.step(f"sent {short(data, 200)}")
        reply = expect_response(Reader(sock), story, f"a {status} response")
        check_status(story, reply, status)
        check_protected(story, reply, f"a {status}")
        if status != 200:
            story.check((reply.header("connection") or "").lower() == "close",
                        f"Connection: close on the {status} (the server hangs up after it)",
                        short(reply.raw_head, 300))
        how, took, extra = closed_within(sock, 1.0)
        story.check(how in ("closed", "reset"), "the server to close the connection right "
                    "after this response", f"still open after {took:.2f} s")


@pytest.mark.task("09.keepalive")
def test_small_responses_are_not_held_back(lesson, story, root, logs):
    (root / "one.txt").write_bytes(b"k" * 1024)
    server = make_http_server(lesson, story, root, logger=logs.logger, **clocks())
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        reader = Reader(sock)
        started = time.monotonic()
        for _ in range(50):
            sock.sendall(request("GET", "/one.txt"))
            reply = expect_response(reader, story, "the response to GET /one.txt")
            check_status(story, reply, 200)
        took = time.monotonic() - started
        story.step(f"sent 50 GETs of a 1 KiB file one after another on one connection: "
                   f"{took:.2f} s ({50 / took:.0f} requests/s)")
        story.check(took < 1.0, "50 small responses within 1 s (a head and a body sent "
                    "apart meet Nagle's algorithm and the client's delayed ACK: ~40 ms each, "
                    "2 s in all; send them in one sendall)", f"{took:.2f} s")


@pytest.mark.task("09.keepalive")
def test_a_file_is_sent_as_announced_even_if_it_grows(lesson, story, root, logs):
    log_file = root / "app.log"
    log_file.write_bytes(b"line 1\n")
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
    base = make_http_server(lesson, story, root, logger=logs.logger, **clocks())

    class Growing(type(base)):
        def route(self, req, body):
            reply = super().route(req, body)
            if req.target == "/app.log":  # the file grows after its size was announced
                with open(log_file, "ab") as out:
                    out.write(forged)
            return reply

    server = Growing(root, logger=logs.logger, **clocks())
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        reader = Reader(sock)
        sock.sendall(request("GET", "/app.log") + request("GET", "/missing"))
        story.step("sent GET /app.log and GET /missing in one packet; the file grows by a "
                   "forged response between the head and the body")
        first = expect_response(reader, story, "the response to GET /app.log")
        story.check(first.status == 200 and first.body == b"line 1\n",
                    "200 with exactly the 7 bytes announced", str(first))
        second = expect_response(reader, story, "the response to GET /missing")
        check_status(story, second, 404, "(the file's new bytes must not pass for the next "
                     "response: send exactly Content-Length bytes)")


@pytest.mark.task("09.keepalive")
def test_a_file_that_shrinks_while_sent_ends_the_connection(lesson, story, root, logs):
    log_file = root / "app.log"
    log_file.write_bytes(b"0123456789" * 10)
    base = make_http_server(lesson, story, root, logger=logs.logger, **clocks())

    class Shrinking(type(base)):
        def route(self, req, body):
            reply = super().route(req, body)
            if req.target == "/app.log":  # the file shrinks after its size was announced
                with open(log_file, "r+b") as out:
                    out.truncate(30)
            return reply

    server = Shrinking(root, logger=logs.logger, **clocks())
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        sock.sendall(request("GET", "/app.log") + request("GET", "/missing"))
        story.step("sent GET /app.log (100 bytes) and GET /missing in one packet; the file "
                   "is cut to 30 bytes between the head and the body")
        how, took, data = closed_within(sock, 2.0)
        story.check(how in ("closed", "reset"), "the connection closed: the body can never "
                    "reach its Content-Length, so no next response can follow it",
                    f"still open after {took:.2f} s, got {short(data)}")
        story.check(data.startswith(b"HTTP/1.1 200") and b"Content-Length: 100" in data
                    and data.endswith(b"\r\n\r\n" + b"0123456789" * 3),
                    "the 200 head (Content-Length: 100), the 30 bytes left, then the close",
                    short(data, 300))
        story.check(b"404" not in data, "no response to GET /missing after the short body",
                    short(data, 300))


@pytest.mark.task("09.keepalive")
def test_limits_and_a_file_that_cannot_be_opened(lesson, story, root, logs, monkeypatch):
    limits = lesson.Limits(max_request_line=100, max_header_bytes=2000, max_headers=3)
    checked = lesson.safe_path
    monkeypatch.setattr(lesson, "safe_path", lambda base, target: (
        Path(base) / "vanished.txt" if target == "/vanished.txt" else checked(base, target)))
    story.step("safe_path answers /vanished.txt with a file that is gone by the time the "
               "server opens it (deleted in between)")
    server = make_http_server(lesson, story, root, logger=logs.logger, limits=limits,
                              **clocks())
    with serving(server, story) as address:
        reply = exchange(address, request("GET", "/vanished.txt"), story, "a 404")
        check_status(story, reply, 404, "the file could not be opened: a 404 like any other")
        check_protected(story, reply, "the 404")
        headers = [(f"X-{i}", "1") for i in range(4)]
        reply = exchange(address, request("GET", "/hello.txt", headers), story,
                         "431 (4 headers + Host; the server's Limits allow 3)")
        check_status(story, reply, 431, "the server's own Limits(max_headers=3)")
        with socket.create_connection(address, WAIT) as sock:
            sock.sendall(b"GET /" + b"a" * 150)
            story.step("sent 155 bytes of a request line, no CRLF (Limits: 100-byte line)")
            started = time.monotonic()
            reply = expect_response(Reader(sock), story, "414 at once")
            check_status(story, reply, 414, "the server's own Limits(max_request_line=100)")
            story.check(time.monotonic() - started < 1.0, "the 414 within 1 s (the head "
                        "reader checks the server's limits as bytes arrive)",
                        f"{time.monotonic() - started:.2f} s")


@pytest.mark.task("09.keepalive")
def test_empty_and_one_byte_files(lesson, story, root, logs):
    (root / "empty.txt").write_bytes(b"")
    (root / "one.txt").write_bytes(b"1")
    server = make_http_server(lesson, story, root, logger=logs.logger, **clocks())
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        reader = Reader(sock)
        for name, content in [("/empty.txt", b""), ("/one.txt", b"1"), ("/empty.txt", b"")]:
            sock.sendall(request("GET", name))
            reply = expect_response(reader, story, f"the response to GET {name} (keep-alive)")
            story.check(reply.status == 200 and reply.body == content,
                        f"200 with {content!r}", str(reply))


@pytest.mark.task("09.keepalive")
def test_a_head_error_has_no_body(lesson, story, root, logs, caplog):
    server = make_http_server(lesson, story, root, logger=logs.logger, max_body=1000,
                              **clocks(body_timeout=0.3))
    with serving(server, story) as address:
        with socket.create_connection(address, WAIT) as sock:
            sock.sendall(request("HEAD", "/hello.txt", [("Content-Length", "2000")],
                                 length=False))
            story.step("sent HEAD /hello.txt announcing a 2000-byte body (max_body 1000)")
            reader = Reader(sock)
            reply = expect_response(reader, story, "a 413 head", head_only=True)
            check_status(story, reply, 413)
            how, took, extra = closed_within(sock, 1.0)
            extra = bytes(reader.buffer) + extra  # what came with the head, then the rest
            story.check(not extra, "nothing after the head (a response to HEAD has no body, "
                        "errors included: error_response(..., head=True))", short(extra))
        with socket.create_connection(address, WAIT) as sock:
            sock.sendall(request("HEAD", "/hello.txt", [("Content-Length", "5")], length=False)
                         + b"ab")
            story.step("sent HEAD /hello.txt announcing a 5-byte body, and 2 bytes of it "
                       "(body_timeout 0.3 s)")
            how, took, data = closed_within(sock, 2.0)
            story.check(how in ("closed", "reset"), "the server to hang up at the body "
                        "deadline", f"still open after {took:.2f} s")
            check_optional_408(story, data, head_only=True)
    check_no_crash(story, caplog)


@pytest.mark.task("09.keepalive")
def test_check_before_body_gets_the_peer_and_refuses_before_the_body(lesson, story, root,
                                                                     logs):
    server = make_http_server(lesson, story, root, logger=logs.logger,
                              **clocks(body_timeout=3.0))
    seen = []
    given = server.check_before_body

    def hook(req, peer):  # what lessons 10-12 override: refusals keyed on the client
        seen.append((req.target, peer))
        if req.target == "/limited":
            raise lesson.HttpError(429, "the grader's limit", [("Retry-After", "7")])
        return given(req, peer)

    server.check_before_body = hook
    story.step("check_before_body(request, peer) replaced by a hook that records the peer "
               "and refuses /limited with 429")
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        me = "%s:%s" % sock.getsockname()[:2]
        reader = Reader(sock)
        sock.sendall(request("GET", "/hello.txt"))
        check_status(story, expect_response(reader, story, "the response to GET /hello.txt"),
                     200)
        story.check(seen == [("/hello.txt", me)], f"the hook called once with peer {me!r} "
                    "(the client's ip:port)", repr(seen))
        sock.sendall(request("POST", "/limited", [("Content-Type", "application/json"),
                                                  ("Content-Length", "100")], length=False))
        story.step("sent POST /limited announcing a 100-byte body, and none of it")
        started = time.monotonic()
        reply = expect_response(reader, story, "429 at once, before any body")
        took = time.monotonic() - started
        check_status(story, reply, 429)
        story.check(reply.header("retry-after") == "7", "the hook's Retry-After: 7",
                    short(reply.raw_head, 300))
        story.check(took < 1.0, "the 429 within 1 s (the body timeout is 3 s: the hook runs "
                    "before the body is read)", f"{took:.2f} s")
        how, took, _ = closed_within(sock, 1.0)
        story.check(how in ("closed", "reset"), "the connection closed after the refusal "
                    "(its announced body was never read)", f"still open after {took:.2f} s")


# --------------------------------------------------------------------------- 09.cap


def admitted(address, story, who, within=2.0, body=None):
    """A client that made one request and was served (retrying while the server says 503: a
    connection that just closed gives its slot back a moment later). Stays connected."""
    ends = time.monotonic() + within
    while True:
        sock = socket.create_connection(address, WAIT)
        sock.sendall(request("GET", "/hello.txt"))
        reply = expect_response(Reader(sock), story, f"{who} to be served")
        if reply.status != 503 or time.monotonic() > ends:
            break
        sock.close()
        time.sleep(0.05)
    if reply.status != 200 or (body is not None and reply.body != body):
        sock.close()
        story.check(reply.status == 200 and body in (None, reply.body),
                    f"{who}: 200" + (f" with {short(body)}" if body else ""), str(reply))
    return sock


def holders(address, story, n):
    """n clients that each made one request and stay connected (kept alive)."""
    socks = []
    try:
        for i in range(n):
            socks.append(admitted(address, story, f"holder {i}"))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    story.step(f"{n} clients connected, made a request each, and stayed")
    return socks


def expect_503(address, story, who):
    """Connect, send a request, expect 503 + Retry-After + close, fast. Returns seconds."""
    started = time.monotonic()
    with socket.create_connection(address, WAIT) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request("GET", "/hello.txt"))
        try:
            reply = Reader(sock).response()
        except (ReadError, OSError) as exc:
            story.fail(f"{who}: a 503 response at once", str(exc))
        took = time.monotonic() - started
        story.check(reply.status == 503, f"{who}: 503 Service Unavailable", str(reply))
        story.check((reply.header("retry-after") or "").isdigit(),
                    f"{who}: a Retry-After header (seconds)", short(reply.raw_head, 300))
        story.check((reply.header("connection") or "").lower() == "close",
                    f"{who}: Connection: close", short(reply.raw_head, 300))
        check_protected(story, reply, "the 503")
        how, _, _ = closed_within(sock, 1.0)
        story.check(how in ("closed", "reset"), f"{who}: the connection closed after the 503",
                    how)
    return took


@pytest.mark.task("09.cap")
def test_the_connection_over_the_cap_gets_503_at_once(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger, max_clients=2,
                              **clocks())
    with serving(server, story) as address:
        socks = holders(address, story, 2)
        try:
            took = expect_503(address, story, "a third client")
            story.check(took < 0.5, "the 503 within 0.5 s (a refusal must not wait for a slot)",
                        f"{took:.2f} s")
            rejects = [line for line in logs.lines(logging.WARNING) if "REJECT" in line]
            story.check(any(re.fullmatch(r"REJECT 127\.0\.0\.1:\d+ at capacity \(2 "
                                         r"connections\)", line) for line in rejects),
                        "a warning 'REJECT 127.0.0.1:PORT at capacity (2 connections)'",
                        repr(rejects[-3:]))
            socks.pop().close()
            story.step("one holder left")
            admitted(address, story, "a new client (once the slot is back)").close()
        finally:
            for sock in socks:
                sock.close()


@pytest.mark.task("09.cap")
def test_a_flood_costs_no_threads_and_no_slots(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger, max_clients=2,
                              **clocks())
    with serving(server, story) as address:
        socks = holders(address, story, 2)
        try:
            before = type(server).threads_started
            story.step("then 20 more clients connected, one after another")
            slowest = max(expect_503(address, story, f"flood client {i}") for i in range(20))
            story.check(slowest < 0.5, "every 503 within 0.5 s",
                        f"the slowest took {slowest:.2f} s")
            spent = type(server).threads_started - before
            story.check(spent == 0, "no thread for a refused connection (admit() refuses on "
                        "the accept thread, before a thread exists)",
                        f"{spent} connections reached a client thread")
            line = next((m for m in logs.lines(logging.WARNING) if "REJECT" in m), None)
            story.check(line is not None, "a REJECT warning in the log",
                        repr(logs.lines(logging.WARNING)[:3]))
        finally:
            for sock in socks:
                sock.close()
        wait_for_active(address, story, 1)
        story.step("the holders left: a health check sees only itself")
        socks = holders(address, story, 2)  # both slots free again: not one leaked
        for sock in socks:
            sock.close()


@pytest.mark.task("09.cap")
def test_a_silent_refused_client_does_not_block_the_next_refusal(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger, max_clients=1,
                              **clocks())
    with serving(server, story) as address:
        socks = holders(address, story, 1)
        try:
            silent = socket.create_connection(address, WAIT)
            socks.append(silent)
            story.step("a client over the cap connected, sent nothing, and stays connected "
                       "without closing")
            reply = expect_response(Reader(silent), story, "a 503 for the silent client too")
            check_status(story, reply, 503)
            took = expect_503(address, story, "the next client over the cap")
            story.check(took < 0.5, "its 503 within 0.5 s (reject() must never block the "
                        "accept thread: a non-blocking send, and a drain that does not wait "
                        "for the silent client)", f"{took:.2f} s")
        finally:
            for sock in socks:
                sock.close()


@pytest.mark.task("09.cap")
def test_active_connections_counts_connections_not_threads(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger, max_clients=10,
                              **clocks())
    with serving(server, story) as address:
        helpers = [threading.Thread(target=time.sleep, args=(1.0,), daemon=True,
                                    name="grader-busy") for _ in range(5)]
        for t in helpers:
            t.start()
        story.step("(5 unrelated threads are running in the process)")
        first = health(address, story).get("uptime_s")
        time.sleep(0.15)
        with socket.create_connection(address, WAIT) as sock:
            sock.sendall(request("HEAD", "/healthz?probe=1") + request("GET", "/healthz?a=1?b=2"))
            reader = Reader(sock)
            head = expect_response(reader, story, "a response to HEAD /healthz", head_only=True)
            check_status(story, head, 200)
            story.check((head.header("content-length") or "0") not in ("0", ""),
                        "HEAD /healthz with the Content-Length of the JSON a GET would get "
                        "(not 0)", short(head.raw_head, 300))
            reply = expect_response(reader, story, "GET /healthz right after (a HEAD answer "
                                    "carries no body)")
            story.check(reply.header("content-type") == "application/json",
                        "Content-Type: application/json", short(reply.raw_head, 300))
            later = reply.json().get("uptime_s")
        story.check(isinstance(first, (int, float)) and isinstance(later, (int, float))
                    and 0 <= first < 60 and later >= first + 0.1,
                    "uptime_s: seconds since the server started, growing (0.15 s between reads)",
                    f"{first!r} then {later!r}")
        socks = holders(address, story, 3)
        try:
            data = health(address, story)
            story.check(data.get("active_connections") == 4, "active_connections 4 (three "
                        "holders and the health check itself)", repr(data))
            story.check(data.get("max_clients") == 10 and data.get("status") == "ok",
                        "status 'ok' and max_clients 10", repr(data))
            story.check(isinstance(data.get("uptime_s"), (int, float)) and data["uptime_s"] >= 0,
                        "uptime_s, a number of seconds", repr(data))
        finally:
            for sock in socks:
                sock.close()
        wait_for_active(address, story, 1)


# --------------------------------------------------------------------------- 09.slow_peers


@pytest.mark.task("09.slow_peers")
def test_trickled_headers_are_dropped_at_the_header_deadline(lesson, story, root, logs,
                                                             caplog):
    server = make_http_server(lesson, story, root, logger=logs.logger,
                              **clocks(header_timeout=0.6, idle_timeout=3.0))
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        with trickler(sock, HEAD, interval=0.1) as state:
            story.step("the client trickles a request head, one byte every 0.1 s "
                       "(header_timeout 0.6 s, idle_timeout 3 s)")
            how, _, data = closed_within(sock, 3.0)
            took = time.monotonic() - state["first"]
        story.check(how in ("closed", "reset"), "the server to hang up on the trickler",
                    f"still open after {took:.2f} s")
        check_drop_time(story, took, 0.6, "header_timeout, counted from the first byte")
        check_optional_408(story, data)
        me = "%s:%s" % sock.getsockname()[:2]
    check_no_crash(story, caplog)
    said = [line for line in logs.lines() if not line.startswith("ACCESS ")]
    story.check(any(me in line and "head" in line.lower() for line in said),
                f"a log line naming the client ({me}) and why it was dropped (the "
                "DeadlineExceeded message: request head)", repr(said[-3:]))
    if data:
        access = [line for line in logs.lines() if line.startswith("ACCESS ")]
        story.check(any(line.startswith(f"ACCESS {me} ") and " 408 " in line
                        for line in access), f"the 408 in the access log: ACCESS {me} ... 408",
                    repr(access[-3:]))


@pytest.mark.task("09.slow_peers")
@pytest.mark.parametrize("how", ["trickled", "shorter-than-announced", "pause-then-trickle"])
def test_slow_bodies_are_dropped_at_the_body_deadline(lesson, story, root, logs, how, caplog):
    server = make_http_server(lesson, story, root, logger=logs.logger,
                              **clocks(body_timeout=0.6, header_timeout=3.0, idle_timeout=3.0))
    head = request("POST", "/echo", [("Content-Type", "application/json"),
                                     ("Content-Length", "60")], length=False)
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        if how == "pause-then-trickle":
            health(address, story)  # a quick request first: a stub fails here, not after 0.5 s
        sock.sendall(head)
        sent_at = time.monotonic()
        story.step("sent a head announcing 60 bytes of body (body_timeout 0.6 s, others 3 s)")
        if how == "trickled":
            with trickler(sock, b'{"a": "' + b"x" * 60, interval=0.1):
                story.step("then trickled the body, one byte every 0.1 s")
                result, _, data = closed_within(sock, 3.0)
        elif how == "pause-then-trickle":
            time.sleep(0.5)
            with trickler(sock, b'{"a": "' + b"x" * 60, interval=0.1):
                story.step("then waited 0.5 s and trickled the body, one byte every 0.1 s")
                result, _, data = closed_within(sock, 3.0)
            took = time.monotonic() - sent_at
            story.check(result in ("closed", "reset"), "the server to hang up",
                        f"still open after {took:.2f} s")
            story.check(0.54 <= took <= 0.95, "the drop 0.54-0.95 s after the head "
                        "(body_timeout 0.6 s counted from the END OF THE HEAD; from the first "
                        "body byte it would be 1.1 s)", f"{took:.2f} s")
            check_optional_408(story, data)
            check_no_crash(story, caplog)
            return
        else:
            sock.sendall(b'{"a": 1}')
            story.step("then sent 8 bytes of it and waited")
            result, _, data = closed_within(sock, 3.0)
        took = time.monotonic() - sent_at
        story.check(result in ("closed", "reset"), "the server to hang up",
                    f"still open after {took:.2f} s")
        check_drop_time(story, took, 0.6, "body_timeout, counted from the end of the head")
        check_optional_408(story, data)
    check_no_crash(story, caplog)


@pytest.mark.task("09.slow_peers")
def test_thinking_before_a_request_is_not_trickling(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger,
                              **clocks(header_timeout=0.6, idle_timeout=3.0))
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        health(address, story)  # a quick request first: a stub fails here, not after the wait
        time.sleep(0.8)
        data = request("GET", "/hello.txt")
        sock.sendall(data[:10])
        time.sleep(0.1)
        sock.sendall(data[10:])
        story.step("waited 0.8 s (idle_timeout 3 s), then sent a head in two parts 0.1 s "
                   "apart (header_timeout 0.6 s)")
        reply = expect_response(Reader(sock), story, "200: the header deadline starts at the "
                                "request's FIRST byte, not when the wait for it began")
        check_status(story, reply, 200)


@pytest.mark.task("09.slow_peers")
def test_a_slow_reader_gets_one_deadline_for_the_whole_response(lesson, story, root, logs):
    (root / "big.bin").write_bytes(os.urandom(1024) * (16 * 1024))  # 16 MiB
    server = make_http_server(lesson, story, root, logger=logs.logger,
                              **clocks(send_timeout=0.6))
    stop = threading.Event()
    with serving(server, story) as address:
        sock = slow_reader(address)

        def sip():  # 64 KiB, then a 0.3 s pause, again and again
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    taken = 0
                    while taken < 64 * 1024:
                        chunk = sock.recv(64 * 1024 - taken)
                        if not chunk:
                            return
                        taken += len(chunk)
                    stop.wait(0.3)

        with sock:
            sock.sendall(request("GET", "/big.bin"))
            sent_at = time.monotonic()
            handle = run_in_thread(sip, name="grader-sip")
            story.step("a client asked for a 16 MiB file and read it 64 KiB every 0.3 s "
                       "(send_timeout 0.6 s)")
            try:
                wait_for_active(address, story, 1, within=3.0)
                took = time.monotonic() - sent_at
            finally:
                stop.set()
                sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(Exception):
                    handle.result(timeout=WAIT)
            check_drop_time(story, took, 0.6, "send_timeout, for the WHOLE response: a "
                            "deadline renewed for every chunk never ends for this client")


@pytest.mark.task("09.slow_peers")
def test_a_client_that_never_reads_is_dropped(lesson, story, root, logs):
    (root / "big.bin").write_bytes(os.urandom(1024) * (16 * 1024))  # 16 MiB
    server = make_http_server(lesson, story, root, logger=logs.logger,
                              **clocks(send_timeout=0.5))
    with serving(server, story) as address:
        sock = slow_reader(address)
        with sock:
            sock.sendall(request("GET", "/big.bin"))
            sent_at = time.monotonic()
            story.step("a client with a 4 KiB receive buffer asked for a 16 MiB file and "
                       "never read (send_timeout 0.5 s)")
            wait_for_active(address, story, 1, within=3.0)
            took = time.monotonic() - sent_at
            check_drop_time(story, took, 0.5, "send_timeout")
            _, _, data = closed_within(sock, 2.0)
            story.check(len(data) < 16 * 1024 * 1024, "the response cut short (the server gave "
                        "up on this client)", f"all {len(data)} bytes were delivered")


@pytest.mark.task("09.slow_peers")
def test_the_body_cap_is_checked_before_reading(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger, max_body=1000,
                              **clocks(body_timeout=3.0))
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        sock.sendall(request("POST", "/echo", [("Content-Type", "application/json"),
                                               ("Content-Length", "1000000000")], length=False))
        story.step("announced a 1 GB body (max_body 1000) and sent none of it")
        started = time.monotonic()
        reply = expect_response(Reader(sock), story, "413 at once, before any body")
        took = time.monotonic() - started
        check_status(story, reply, 413)
        story.check(took < 1.0, "the 413 within 1 s (the body timeout is 3 s: a server that "
                    "waits for the body is late)", f"{took:.2f} s")


@pytest.mark.task("09.slow_peers")
def test_resets_and_garbage_leave_the_server_healthy(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger, max_clients=5,
                              **clocks())
    with serving(server, story) as address:
        for data, what in [(b"GET /hello.txt HTTP/1.1\r\nHo", "half a head"),
                           (request("POST", "/echo", [("Content-Type", "application/json"),
                                                      ("Content-Length", "100")],
                                    length=False) + b'{"a":', "a head and half a body"),
                           (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40),
                            "a TLS hello (binary garbage)")]:
            sock = socket.create_connection(address, WAIT)
            sock.sendall(data)
            time.sleep(0.05)
            reset(sock)
            story.step(f"a client sent {what}, then reset the connection")
        wait_for_active(address, story, 1)
        reply = exchange(address, request("POST", "/echo", [("Content-Type", "application/json")],
                                          b'{"still": ["alive", 1]}'), story, "an echo")
        check_status(story, reply, 200)
        story.check(reply.json() == {"received": {"still": ["alive", 1]}},
                    "{'received': {'still': ['alive', 1]}}", short(reply.body))


@pytest.mark.task("09.slow_peers")
def test_echo_and_its_refusals(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger, max_json_depth=4,
                              **clocks())
    json_type = [("Content-Type", "application/json")]
    with serving(server, story) as address:
        for data, status in [
            (request("POST", "/echo", json_type, b"[[[[1]]]]"), 200),
            (request("POST", "/echo", json_type, b"[[[[[1]]]]]"), 400),
            (request("POST", "/echo", [("Content-Type", "text/plain")], b"hi"), 415),
            (request("POST", "/echo", json_type), 411),
            (request("POST", "/echo?debug=1", json_type, b"[[[[1]]]]"), 200),
            (request("POST", "/echo?a=1?b=2", json_type, b"[[[[1]]]]"), 200),
            (request("GET", "/echo"), 405),
            (request("POST", "/hello.txt", json_type, b"{}"), 405),
            (request("DELETE", "/hello.txt"), 405),
            (request("BREW", "/"), 501),
            (request("GET", "/", host=False), 400),
            (request("GET", "/../secret.txt"), 404),
            (request("GET", "/%2e%2e/secret.txt"), 404),
        ]:
            reply = exchange(address, data, story, f"a {status}")
            check_status(story, reply, status)
            check_protected(story, reply, f"a {status}")
            story.check(b"TOP SECRET" not in reply.body, "no secret", short(reply.body))
            if status == 200:
                story.check(reply.json() == {"received": [[[[1]]]]}, "{'received': [[[[1]]]]}",
                            short(reply.body))
                story.check(reply.header("content-type") == "application/json",
                            "Content-Type: application/json", short(reply.raw_head, 300))
            if status == 405:
                allow = {"/echo": "POST"}.get(data.split(b" ")[1].decode(), "GET, HEAD")
                if data.startswith(b"DELETE"):
                    allow = None  # a method the server does not serve anywhere: any Allow list
                story.check(reply.header("allow") is not None and
                            (allow is None or reply.header("allow") == allow),
                            f"an Allow header ({allow or 'any list'}) on a 405",
                            short(reply.raw_head, 300))


@pytest.mark.task("09.slow_peers")
def test_a_bug_is_a_500_and_logs_are_escaped(lesson, story, root, logs):
    server = make_http_server(lesson, story, root, logger=logs.logger, **clocks())
    with serving(server, story) as address:
        reply = exchange(address, request("GET", "/boom", [("User-Agent", "grader\x85agent")]),
                         story, "a 500 (the grader's route raises for /boom)")
        check_status(story, reply, 500)
        check_protected(story, reply, "the 500")
        story.check(b"boom" not in reply.raw_head + reply.body and b"Traceback" not in reply.body,
                    "nothing of the exception in the response", short(reply.body, 200))
        forged = b"GET /x\n127.0.0.1 FORGED 200 HTTP/1.1\r\nHost: a\r\n\r\n"
        reply = exchange(address, forged, story, "a 400 for a bare LF in the request line")
        check_status(story, reply, 400)
        reply = exchange(address, request("GET", "/hello.txt"), story, "a 200 afterwards")
        check_status(story, reply, 200)
        time.sleep(0.1)
        lines = logs.lines()
        story.check(any("incident" in line for line in lines), "an incident line in the log",
                    repr(lines[-5:]))
        story.check(any("FORGED" in line for line in lines), "the refused request in the log",
                    repr(lines[-5:]))
        access = [line for line in lines if line.startswith("ACCESS 127.0.0.1:")]
        story.check(any('"GET /boom HTTP/1.1" 500 "grader\\x85agent"' in line for line in access)
                    and any('"GET /hello.txt HTTP/1.1" 200 "-"' in line for line in access)
                    and any(line.endswith('" 400 "-"') for line in access),
                    'access lines like ACCESS 127.0.0.1:PORT "GET /boom HTTP/1.1" 500 '
                    '"grader\\x85agent" (peer, request line, status, escaped User-Agent; "-" '
                    'when there is none, as for the 400)',
                    repr(access[-4:]))
        for line in lines:
            story.check(line.isprintable(), "every log line printable: CR, LF and other "
                        "controls from a request escaped (log_safe)", repr(line))


# --------------------------------------------------------------------------- 09.program


def raise_if_not_implemented(stderr: str) -> None:
    for line in reversed(stderr.splitlines()):
        if line.startswith("NotImplementedError"):
            raise NotImplementedError(line.partition(":")[2].strip() or "see the traceback")


class Program:
    """`python -m <package>.lesson09_slow_http` (the lesson 07-09 server) as a subprocess,
    never outliving the test."""
    FIRST_LINE = re.compile(r"listening on http://(\d{1,3}(?:\.\d{1,3}){3}):(\d+)\s*$")

    def __init__(self, folder: Path, tmp_path: Path, story):
        self.package, self.tmp_path, self.story = folder.name, tmp_path, story
        paths = [str(folder.parent), str(REPO), os.environ.get("PYTHONPATH", "")]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        self.env.pop("PYTHONUNBUFFERED", None)  # a real pipe: the first line must be flushed
        self.procs = []

    def command(self, *flags):
        return [sys.executable, "-m", f"{self.package}.lesson09_slow_http", *flags]

    def run(self, *flags):
        self.story.step(f"ran: python -m {self.package}.lesson09_slow_http {' '.join(flags)}")
        try:
            done = subprocess.run(self.command(*flags), capture_output=True, text=True,
                                  env=self.env, cwd=REPO, timeout=10)
        except subprocess.TimeoutExpired:
            self.story.fail("the program to exit", "still running after 10 s")
        raise_if_not_implemented(done.stderr)
        return done

    def start(self, *flags):
        flags = ("--port", "0", *flags)
        self.story.step(f"started: python -m {self.package}.lesson09_slow_http "
                        f"{' '.join(flags)}")
        stderr_path = self.tmp_path / f"server-{len(self.procs)}.stderr"
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(self.command(*flags), env=self.env, cwd=REPO,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=stderr, text=True)
        self.procs.append(proc)
        box = {}
        reader = run_in_thread(lambda: box.setdefault("line", proc.stdout.readline()),
                               name="grader-stdout")
        try:
            reader.result(timeout=8.0)
        except TimeoutError:
            self.story.fail("a first line 'listening on http://HOST:PORT' within 8 s (flush "
                            "it: through a pipe, stdout is buffered)", "nothing on stdout")
        first = box.get("line", "")
        if not first:
            proc.wait(timeout=WAIT)
            text = stderr_path.read_text(errors="replace")
            raise_if_not_implemented(text)
            self.story.fail("the program to keep running", f"it exited with {proc.returncode}; "
                            f"stderr ends {short(text[-300:], 300)}")
        match = self.FIRST_LINE.match(first)
        self.story.check(match is not None, "the first line 'listening on http://HOST:PORT'",
                         repr(first))
        proc.address = (match.group(1), int(match.group(2)))
        proc.stderr_path = stderr_path
        return proc

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=WAIT)
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def program(lesson, request, tmp_path, story):
    folder = Path(request.config.getoption("against")).resolve()
    runner = Program(folder, tmp_path, story)
    yield runner
    runner.close()


FLAGS = ["--host", "--port", "--root", "--max-body", "--max-json-depth", "--header-timeout",
         "--body-timeout", "--idle-timeout", "--send-timeout", "--max-clients", "--log-level"]


@pytest.mark.task("09.program")
def test_help_and_bad_values(lesson, program, story):
    done = program.run("--help")
    story.check(done.returncode == 0, "--help to exit 0",
                f"{done.returncode}: {done.stderr[-300:]}")
    missing = [flag for flag in FLAGS if flag not in done.stdout]
    story.check(not missing, "every flag in the help", f"missing: {missing}")
    done = program.run("--port", "0", "--max-clients", "0")
    story.check(done.returncode == 2 and "listening" not in done.stdout,
                "--max-clients 0 refused with exit status 2, before listening",
                f"status {done.returncode}, stdout {short(done.stdout)}")
    for flags in [("--header-timeout", "-1"), ("--idle-timeout", "0"), ("--body-timeout", "0"),
                  ("--send-timeout", "-5"), ("--max-body", "0"), ("--max-json-depth", "-1"),
                  ("--port", "70000"), ("--max-body", "lots"), ("--max-clients", "-3"),
                  ("--log-level", "LOUD")]:
        story.step(f"build_parser().parse_args({list(flags)!r}) (in this process)")
        with contextlib.redirect_stderr(io.StringIO()):
            try:
                args = lesson.build_parser().parse_args(list(flags))
            except SystemExit as exc:
                code = exc.code
            else:
                code = f"no error: {args}"
        story.check(code == 2, f"{' '.join(flags)} refused (argparse exits with status 2)",
                    str(code))


@pytest.mark.task("09.program")
def test_the_parser_has_the_safe_defaults(lesson, story):
    story.step("build_parser().parse_args([]) (in this process)")
    args = lesson.build_parser().parse_args([])
    expected = {"host": "127.0.0.1", "port": 0, "max_body": 1048576, "max_json_depth": 32,
                "header_timeout": 10.0, "body_timeout": 30.0, "idle_timeout": 5.0,
                "send_timeout": 10.0, "max_clients": 100, "log_level": "INFO"}
    got = {name: getattr(args, name, None) for name in expected}
    story.check(got == expected, f"the defaults {expected}", repr(got))
    flags = ["--port", "8080", "--max-body", "10", "--max-json-depth", "3", "--header-timeout",
             "0.5", "--body-timeout", "0.25", "--idle-timeout", "1.5", "--send-timeout", "2.5",
             "--max-clients", "7", "--log-level", "DEBUG", "--host", "127.0.0.2", "--root", "x"]
    story.step(f"build_parser().parse_args({flags})")
    args = lesson.build_parser().parse_args(flags)
    got = {name: getattr(args, name, None) for name in expected}
    want = {"host": "127.0.0.2", "port": 8080, "max_body": 10, "max_json_depth": 3,
            "header_timeout": 0.5, "body_timeout": 0.25, "idle_timeout": 1.5, "send_timeout": 2.5,
            "max_clients": 7, "log_level": "DEBUG"}
    story.check(got == want and str(args.root) == "x", f"every flag parsed: {want}, root 'x'",
                f"{got}, root {getattr(args, 'root', None)!r}")
    parser = lesson.build_parser()
    story.check(parser.prog == f"python -m {lesson.__package__}.lesson09_slow_http"
                and bool(parser.description),
                f"prog 'python -m {lesson.__package__}.lesson09_slow_http' and a description",
                f"{parser.prog!r}, {parser.description!r}")
    text = parser.format_help()
    missing = [flag for flag in FLAGS if flag not in text]
    story.check(not missing, "every flag in the help", f"missing: {missing}")
    shown = {"--host": "127.0.0.1", "--port": "0", "--max-body": "1048576",
             "--max-json-depth": "32", "--header-timeout": "10.0", "--body-timeout": "30.0",
             "--idle-timeout": "5.0", "--send-timeout": "10.0", "--max-clients": "100",
             "--log-level": "INFO"}
    for flag, default in shown.items():
        after = text.split(f"  {flag} ", 1)[-1].split("\n  -", 1)[0]
        story.check(f"(default: {default})" in " ".join(after.split()),
                    f"{flag} explained in --help with its default (default: {default}) "
                    "(ArgumentDefaultsHelpFormatter and a help= text)", short(after, 200))
    story.check("demo site" in " ".join(text.split("  --root ", 1)[-1].split()[:20]),
                "--root explained in --help (the demo site is the default)", short(text, 300))
    for level in ("DEBUG", "INFO", "WARNING", "ERROR"):
        got = getattr(parser.parse_args(["--log-level", level]), "log_level", None)
        story.check(got == level, f"--log-level {level} accepted", repr(got))


@pytest.mark.task("09.program")
def test_the_server_class_has_the_safe_defaults(lesson, story, root):
    story.step("HardenedHTTPServer(<site>) with no other argument (not started)")
    server = lesson.HardenedHTTPServer(root)
    story.check(server.active_connections == 0, "active_connections 0 before any client",
                repr(server.active_connections))
    want = {"host": "127.0.0.1", "port": 0, "max_clients": 100, "header_timeout": 10.0,
            "body_timeout": 30.0, "idle_timeout": 5.0, "send_timeout": 10.0,
            "max_body": 1 << 20, "max_json_depth": 32}
    got = {name: getattr(server, name, None) for name in want}
    story.check(got == want, f"the safe defaults {want}", repr(got))


@pytest.mark.task("09.program")
def test_the_program_serves_with_safe_defaults(program, story):
    proc = program.start()
    story.check(proc.address[0] == "127.0.0.1", "127.0.0.1 by default", proc.address[0])
    data = health(proc.address, story)
    story.check(data.get("status") == "ok" and data.get("max_clients") == 100
                and data.get("active_connections") == 1,
                "status ok, max_clients 100 (the default), active_connections 1", repr(data))
    reply = exchange(proc.address, request("GET", "/"), story, "the demo site's index.html")
    check_status(story, reply, 200)
    story.check((reply.header("content-type") or "").startswith("text/html"), "text/html",
                repr(reply.header("content-type")))
    check_protected(story, reply, "the index page")
    reply = exchange(proc.address, request("POST", "/echo", [("Content-Type", "application/json")],
                                           b'{"n": 1}'), story, "an echo")
    story.check(reply.status == 200 and reply.json() == {"received": {"n": 1}},
                "200 {'received': {'n': 1}}", str(reply))


@pytest.mark.task("09.program")
def test_flags_take_effect(program, story, root):
    proc = program.start("--root", str(root), "--max-clients", "1", "--max-body", "10",
                         "--header-timeout", "0.6", "--idle-timeout", "3",
                         "--max-json-depth", "2")
    with socket.create_connection(proc.address, WAIT) as sock:
        sock.sendall(request("POST", "/echo", [("Content-Type", "application/json"),
                                               ("Content-Length", "11")], length=False))
        reply = expect_response(Reader(sock), story, "413 (--max-body 10)")
        check_status(story, reply, 413)
    json_type = [("Content-Type", "application/json")]
    with admitted(proc.address, story, "a client (its slot free again)") as sock:
        reader = Reader(sock)
        sock.sendall(request("POST", "/echo", json_type, b"[[1]]"))
        reply = expect_response(reader, story, "200 (depth 2, --max-json-depth 2)")
        check_status(story, reply, 200)
        sock.sendall(request("POST", "/echo", json_type, b"[[[1]]]"))
        reply = expect_response(reader, story, "400 (depth 3, --max-json-depth 2)")
        check_status(story, reply, 400)
    with admitted(proc.address, story, "a client of --root", body=FILE) as holder:
        story.step("it got the file from --root; then it trickled its next request")
        with trickler(holder, HEAD, interval=0.1) as state:
            time.sleep(0.1)
            expect_503(proc.address, story, "a second client (--max-clients 1)")
            how, _, _ = closed_within(holder, 3.0)
            took = time.monotonic() - state["first"]
        story.check(how in ("closed", "reset"), "the trickler dropped", how)
        check_drop_time(story, took, 0.6, "--header-timeout")


@pytest.mark.task("09.program")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_it_even_with_slow_clients(program, story, signum):
    proc = program.start("--header-timeout", "30", "--idle-timeout", "30")
    slow = [socket.create_connection(proc.address, WAIT) for _ in range(3)]
    try:
        with contextlib.ExitStack() as stack:
            for sock in slow:
                stack.enter_context(trickler(sock, HEAD, interval=0.2))
            time.sleep(0.2)
            story.step(f"3 clients trickle headers; then sent {signum.name}")
            started = time.monotonic()
            proc.send_signal(signum)
            try:
                status = proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                story.fail(f"the program to exit within 2 s of {signum.name}", "still running "
                           "after 3 s")
            took = time.monotonic() - started
    finally:
        for sock in slow:
            sock.close()
    story.check(status == 0, f"exit status 0 after {signum.name}",
                f"{status}; stderr ends {short(proc.stderr_path.read_text()[-300:], 300)}")
    story.check(took <= 2.0, "the exit within 2 s", f"{took:.2f} s")


# -- main() and build_parser() in this process (the graders above run them as a program) ----


class FirstLineOut(io.StringIO):
    """A stand-in for sys.stdout that notices when a whole first line has been flushed."""

    def __init__(self):
        super().__init__()
        self.line_flushed = threading.Event()

    def flush(self):
        super().flush()
        if "\n" in self.getvalue():
            self.line_flushed.set()


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def drive_main(out, made, seen):
    """The helper thread of the in-process main() test: once the first line is flushed, one
    request to the server main() made, then SIGTERM to this process."""
    try:
        if not out.line_flushed.wait(5.0):
            seen["problem"] = f"no flushed first line within 5 s (stdout: {out.getvalue()!r})"
            return
        seen["first"] = out.getvalue().splitlines()[0]
        if not made:
            seen["problem"] = "main() did not create a HardenedHTTPServer"
            return
        with socket.create_connection(made[-1].address, WAIT) as sock:
            sock.sendall(request("GET", "/hello.txt"))
            seen["reply"] = str(Reader(sock).response())
    except Exception as exc:
        seen["problem"] = describe(exc)
    finally:
        seen["signalled"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.task("09.program")
@pytest.mark.timeout(20)
def test_main_passes_every_flag_on_then_returns_0_on_sigterm(
        lesson, story, root, signal_safety_net, monkeypatch, caplog):
    made = []

    class Recorded(lesson.HardenedHTTPServer):
        poll_interval = 0.05  # ThreadedServer's accept loop: stop() returns sooner

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(lesson, "HardenedHTTPServer", Recorded)
    out = FirstLineOut()
    monkeypatch.setattr(sys, "stdout", out)
    caplog.set_level(logging.INFO)
    port, seen = free_port(), {}
    argv = ["--port", str(port), "--root", str(root), "--max-clients", "3", "--max-body", "10",
            "--max-json-depth", "2", "--header-timeout", "0.7", "--body-timeout", "0.8",
            "--idle-timeout", "0.9", "--send-timeout", "1.1"]
    story.step(f"called main({argv}) in this process's main thread; a helper thread made one "
               "request once the first line was flushed, then sent this process SIGTERM")
    driver = threading.Thread(target=drive_main, args=(out, made, seen), name="grader-driver",
                              daemon=True)
    driver.start()
    try:
        status = lesson.main(argv)
    except NotImplementedError:
        raise
    except BaseException as exc:  # SystemExit, or the safety net's RuntimeError
        story.fail("main() to return 0 after SIGTERM", describe(exc))
    returned = time.monotonic()
    driver.join(WAIT)
    story.check("problem" not in seen, "a flushed first line and a server that answers",
                seen.get("problem", ""))
    story.check(seen.get("first") == f"listening on http://127.0.0.1:{port}",
                f"the first line 'listening on http://127.0.0.1:{port}' (the --port asked for)",
                repr(seen.get("first")))
    served = f"200 with body {short(FILE)}"
    story.check(seen.get("reply") == served, f"GET /hello.txt: {served} (the file from --root)",
                repr(seen.get("reply")))
    server = made[-1]
    want = {"root": root.resolve(), "max_clients": 3, "max_body": 10, "max_json_depth": 2,
            "header_timeout": 0.7, "body_timeout": 0.8, "idle_timeout": 0.9,
            "send_timeout": 1.1}
    got = {name: getattr(server, name, None) for name in want}
    story.check(got == want, f"the server main() made has every flag: {want}", repr(got))
    story.check(status == 0, "main() to return 0 after SIGTERM", repr(status))
    story.check(returned - seen["signalled"] < 3.0, "main() to return within 3 s of SIGTERM",
                f"{returned - seen['signalled']:.2f} s")
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        still = "a connection was accepted"
    except OSError:
        still = ""
    story.check(not still, "the server stopped when main() returns (server.stop())", still)
    story.check(signal.getsignal(signal.SIGTERM) is signal_safety_net,
                "the previous SIGTERM handler back after main()", "it was not restored")
    said = [r.getMessage() for r in caplog.records]
    story.check(any(line == "SIGTERM: stopping" for line in said),
                "the log line 'SIGTERM: stopping'", short(said[-3:], 300))


@pytest.mark.task("09.program")
@pytest.mark.timeout(15)
def test_main_refuses_a_missing_root_and_reports_a_port_in_use(
        lesson, story, tmp_path, signal_safety_net, capsys):
    missing = tmp_path / "no-such-folder"
    story.step("called main(['--root', '<tmp>/no-such-folder'])")
    status = lesson.main(["--root", str(missing)])
    captured = capsys.readouterr()
    story.check(status == 2, "main() to return 2 (a usage error, before listening)",
                repr(status))
    story.check(captured.err == f"error: --root {missing}: not a folder\n"
                and "listening" not in captured.out,
                "'error: --root <folder>: not a folder' on stderr, nothing on stdout",
                f"stderr {short(captured.err, 200)}; stdout {short(captured.out, 120)}")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        story.step("the grader listens on a port itself, then called main(['--port', <that "
                   "port>])")
        rescue = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
        rescue.name = "grader-rescue"
        rescue.start()
        try:
            status = lesson.main(["--port", str(port)])
        finally:
            rescue.cancel()
    captured = capsys.readouterr()
    story.check(status == 1, "main() to return 1 at once (the flags were fine, the port was "
                "not: 2 means a usage error)", repr(status))
    story.check(captured.err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
                and "listening" not in captured.out,
                f"'error: cannot listen on 127.0.0.1:{port}: <why>' on stderr, no 'listening'",
                f"stderr {short(captured.err, 200)}; stdout {short(captured.out, 120)}")
