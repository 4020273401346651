"""Graders for lesson 13, the asyncio server under attack.  Run: pytest exercises -k lesson13

The coroutines are graded first without any socket (a StreamReader the grader feeds by hand),
then the server on 127.0.0.1, port 0, against uncooperative peers. Each defence is timed
against its own clock, set short (0.4-0.6 s) with the other clocks far away, so a deadline
twice too long fails and a machine three times slower passes. The last graders time an
honest client while another request does slow blocking work: that work must run off the
event loop.
"""
import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
import time

import pytest

from graderkit import WAIT, describe, run_in_thread, short
from httpkit import (ReadError, Reader, check_drop_time, check_protected, check_status, clocks,
                     closed_within, exchange, expect_response, health, request, slow_reader,
                     trickler, wait_for_active)

FILE = b"hello from the grader's site\n"
BOOM = "boom (raised on purpose by the grader's route)"
STALL = 0.6  # seconds of blocking work in the grader's slow route and slow file


@pytest.fixture
def lesson(graded):
    return graded("lesson13_asyncio")


@pytest.fixture
def root(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(b"<h1>grader</h1>\n")
    (site / "hello.txt").write_bytes(FILE)
    (tmp_path / "secret.txt").write_bytes(b"TOP SECRET\n")
    return site


class SlowFile:
    """A file whose every read blocks for STALL seconds, like a cold disk or a network share."""

    def __init__(self, file):
        self.file = file

    def read(self, n=-1):
        time.sleep(STALL)
        return self.file.read(n)

    def close(self):
        self.file.close()


def make_server(lesson, story, root, **kwargs):
    """Your AsyncHTTPServer, wrapped so a NotImplementedError raised inside the event loop (or
    in a worker thread) reaches the test, with three planted routes: GET /boom raises,
    GET /slow blocks for STALL s (like scrypt or a huge json.loads), and /slowfile.txt is a
    file whose reads block for STALL s each."""

    class Graded(lesson.AsyncHTTPServer):
        not_implemented = None

        async def on_connection(self, reader, writer):
            try:
                await super().on_connection(reader, writer)
            except NotImplementedError as exc:
                self.not_implemented = exc
                writer.transport.abort()

        def route(self, req, body):
            try:
                if req.target == "/boom":
                    raise RuntimeError(BOOM)
                if req.target == "/slow":
                    time.sleep(STALL)  # blocking work: fine in a worker thread, not on the loop
                reply = super().route(req, body)
            except NotImplementedError as exc:
                self.not_implemented = exc
                raise
            if req.target == "/slowfile.txt" and isinstance(reply, tuple):
                head, file, size = reply
                return head, SlowFile(file), size
            return reply

    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "logger")
    story.step(f"created AsyncHTTPServer(<site>, {args})")
    return Graded(root, **kwargs)


@contextlib.contextmanager
def serving(server, story):
    """start() the server (its loop in a thread), yield its address, stop() it: stop() must
    return within 3 s and leave no thread of the server running."""
    before = set(threading.enumerate())
    try:
        server.start()
        address = tuple(server.address)
    except Exception as exc:
        story.fail("start() to listen and return", describe(exc))
    story.step("started your server with start()")
    ok = False
    try:
        yield address
        ok = True
    finally:
        stopping = run_in_thread(server.stop, name="grader-stop")
        try:
            stopping.result(timeout=3.0)
        except Exception as exc:
            if ok and getattr(server, "not_implemented", None) is None:
                story.fail("stop() to return within 3 s", describe(exc))
        stub = getattr(server, "not_implemented", None)
        if stub is not None:
            raise stub
    story.step("called stop()")
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()
            and not t.name.startswith("grader-")]
    story.check(not left, "no thread of the server left once stop() returns",
                ", ".join(left))


def logged(logs, start, *parts, wait=1.0):
    """The first log line that starts with `start` and contains every part (the server logs a
    moment after the client sees the effect, so look more than once); or None."""
    ends = time.monotonic() + wait
    while True:
        for line in logs.lines():
            if line.startswith(start) and all(part in line for part in parts):
                return line
        if time.monotonic() > ends:
            return None
        time.sleep(0.02)


def me(sock):
    return "%s:%s" % sock.getsockname()[:2]


def check_no_crash(story, logs):
    errors = [line for line in logs.lines(logging.ERROR)]
    story.check(not errors, "no error logged while dropping a slow client", short(errors, 300))


def check_optional_408(story, data, head_only=False):
    """Nothing, or one whole 408 with Connection: close, before the server hangs up (with no
    body when the request was HEAD)."""
    if not data:
        return
    story.check(data.startswith(b"HTTP/1.1 408 ") and b"\r\nConnection: close\r\n" in data,
                "nothing, or a 408 with Connection: close, before the close", short(data, 200))
    if head_only:
        story.check(data.endswith(b"\r\n\r\n"), "no body after the 408's head (the request "
                    "was HEAD)", short(data, 300))


def run(coroutine, wait=WAIT):
    """Run a coroutine of the lesson in a fresh event loop, for at most `wait` s."""
    async def bounded():
        return await asyncio.wait_for(coroutine, wait)
    return asyncio.run(bounded())


async def outcome(awaitable):
    """(value, None, seconds) or (None, exception, seconds); a stub's NotImplementedError
    is raised as is."""
    started = time.monotonic()
    try:
        value, error = await awaitable, None
    except NotImplementedError:
        raise
    except Exception as exc:  # handed back to the grader
        value, error = None, exc
    return value, error, time.monotonic() - started


def fed(data: bytes = b"", eof: bool = False) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    if data:
        reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def feed_slowly(reader, data: bytes, interval: float):
    for i in range(len(data)):
        reader.feed_data(data[i:i + 1])
        await asyncio.sleep(interval)


HEAD = b"GET /hello.txt HTTP/1.1\r\nHost: grader.test\r\nX-Pad: " + b"p" * 40 + b"\r\n\r\n"


# --------------------------------------------------------------------------- 13.deadlines


@pytest.mark.task("13.deadlines")
def test_read_head_by_returns_the_head_and_keeps_the_rest(lesson, story):
    async def scenario():
        buffer = bytearray()
        head, error, _ = await outcome(lesson.read_head_by(
            fed(HEAD + b"NEXT"), buffer, time.monotonic() + 2.0, lesson.Limits()))
        story.step("read_head_by(reader holding a head + b'NEXT', buffer, now + 2)")
        story.check(error is None and head == HEAD, f"the head {short(HEAD)}",
                    describe(error) if error else short(head))
        story.check(bytes(buffer) == b"NEXT", "b'NEXT' left in the buffer", short(bytes(buffer)))
        buffer = bytearray(HEAD + b"more")
        head, error, _ = await outcome(lesson.read_head_by(
            fed(), buffer, time.monotonic() - 1.0, lesson.Limits()))
        story.step("read_head_by with the whole head already in the buffer, deadline past")
        story.check(error is None and head == HEAD and bytes(buffer) == b"more",
                    "the head from the buffer, b'more' left (nothing to wait for)",
                    describe(error) if error else short(head))
        limits = lesson.Limits(max_request_line=100, max_header_bytes=200, max_headers=10)
        _, error, took = await outcome(lesson.read_head_by(
            fed(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 400), bytearray(),
            time.monotonic() + 2.0, limits))
        story.step("read_head_by on 400 bytes of one header, no blank line (200 allowed)")
        story.check(isinstance(error, lesson.HttpError) and error.status == 431 and took < 0.5,
                    "HttpError 431 at once", describe(error) if error else "a head")
        _, error, _ = await outcome(lesson.read_head_by(
            fed(b"GET / HTTP/1.1\r\nHo", eof=True), bytearray(), time.monotonic() + 2.0,
            lesson.Limits()))
        story.step("read_head_by on half a head, then end of stream")
        story.check(isinstance(error, ConnectionError) and "head" in str(error).lower(),
                    "ConnectionError naming the request head", describe(error) if error else "")
        _, error, _ = await outcome(lesson.read_head_by(
            fed(b"GET"), bytearray(), time.monotonic(), lesson.Limits()))
        story.step("read_head_by with no time left")
        story.check(isinstance(error, lesson.DeadlineExceeded), "DeadlineExceeded",
                    describe(error) if error else "a head")
        _, error, took = await outcome(lesson.read_head_by(
            fed(b"GET /hello.txt HTTP/1.1\r\n"), bytearray(), time.monotonic() + 0.3,
            lesson.Limits()))
        story.step("read_head_by(reader with half a head, then silence, deadline now + 0.3 s)")
        story.check(isinstance(error, lesson.DeadlineExceeded)
                    and str(error) == "request head: deadline passed",
                    "DeadlineExceeded('request head: deadline passed'): the read itself is "
                    "bounded by the time left (asyncio.wait_for)",
                    describe(error) if error else "a head")
        check_drop_time(story, took, 0.3, "the deadline")
    run(scenario())


@pytest.mark.task("13.deadlines")
def test_a_trickled_head_and_body_meet_one_deadline_each(lesson, story):
    async def scenario(what, call, data):
        reader = fed()
        feeder = asyncio.ensure_future(feed_slowly(reader, data, 0.05))
        _, error, took = await outcome(call(reader, time.monotonic() + 0.4))
        feeder.cancel()
        story.step(f"{what}, deadline now + 0.4 s, while the grader feeds a byte every 0.05 s")
        story.check(isinstance(error, TimeoutError), "a TimeoutError (DeadlineExceeded): each "
                    "byte comes within 0.05 s, so only a deadline stops this",
                    describe(error) if error else "it returned")
        story.check(what.split("_")[1] in str(error).lower(), f"a message naming the request "
                    f"{what.split('_')[1]}", repr(str(error)))
        check_drop_time(story, took, 0.4, "the deadline")

    run(scenario("read_head_by", lambda r, d: lesson.read_head_by(r, bytearray(), d,
                                                                 lesson.Limits()), HEAD))
    run(scenario("read_body_by", lambda r, d: lesson.read_body_by(r, bytearray(), 60, d),
                 b"x" * 60))


@pytest.mark.task("13.deadlines")
def test_read_body_by_uses_the_buffer_first(lesson, story):
    async def scenario():
        buffer = bytearray(b"01234")
        body, error, _ = await outcome(lesson.read_body_by(
            fed(b"56789NEXT"), buffer, 10, time.monotonic() + 2.0))
        story.step("read_body_by(reader with b'56789NEXT', bytearray(b'01234'), 10, now + 2)")
        story.check(error is None and body == b"0123456789" and bytes(buffer)[-4:] == b"NEXT",
                    "b'0123456789', b'NEXT' left", describe(error) if error else short(body))
        buffer = bytearray(b"abcdef")
        body, error, _ = await outcome(lesson.read_body_by(fed(), buffer, 3,
                                                           time.monotonic() - 1))
        story.check(error is None and body == b"abc" and bytes(buffer) == b"def",
                    "b'abc' from the buffer with b'def' left, even past the deadline",
                    describe(error) if error else short(body))
        _, error, _ = await outcome(lesson.read_body_by(fed(b"short", eof=True), bytearray(),
                                                        10, time.monotonic() + 2.0))
        story.step("read_body_by for 10 bytes when the peer sends 5 and closes")
        story.check(isinstance(error, ConnectionError) and "body" in str(error).lower(),
                    "ConnectionError naming the request body", describe(error) if error else "")
        _, error, _ = await outcome(lesson.read_body_by(fed(b"x"), bytearray(), 5,
                                                        time.monotonic()))
        story.check(isinstance(error, lesson.DeadlineExceeded), "DeadlineExceeded with no "
                    "time left", describe(error) if error else "a body")
    run(scenario())


# --------------------------------------------------------------------------- 13.send


@pytest.mark.task("13.send")
def test_send_by_gives_up_on_a_client_that_never_reads(lesson, story, monkeypatch):
    async def scenario():
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited on accept
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(WAIT)
        reader, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peer, _ = listener.accept()
        peer.settimeout(WAIT)
        try:
            _, error, _ = await outcome(lesson.send_by(writer, b"hello", time.monotonic() + 2))
            story.check(error is None and peer.recv(100) == b"hello",
                        "send_by(writer, b'hello', now + 2) delivers b'hello'",
                        describe(error) if error else "")
            now = time.monotonic()

            class Frozen:  # the lesson's clock stopped at `now`: exactly 0 s left
                @staticmethod
                def monotonic():
                    return now

            monkeypatch.setattr(lesson, "time", Frozen)
            _, error, _ = await outcome(lesson.send_by(writer, b"late", now))
            monkeypatch.undo()
            story.step("froze the lesson's clock; send_by(writer, b'late', deadline=now)")
            story.check(isinstance(error, lesson.DeadlineExceeded), "DeadlineExceeded when "
                        "no time is left (time left <= 0)", describe(error) if error else
                        "it returned")
            await asyncio.sleep(0.05)
            peer.settimeout(0.1)
            try:
                late = peer.recv(100)
            except (TimeoutError, socket.timeout):
                late = b""
            peer.settimeout(WAIT)
            story.check(late == b"", "nothing written once the deadline has passed",
                        short(late))
            story.step("the peer (4 KiB buffers) now never reads; send_by(writer, 1 MiB, "
                       "now + 0.4)")
            data = b"x" * (1 << 20)
            _, error, took = await outcome(lesson.send_by(writer, data, time.monotonic() + 0.4))
            story.check(isinstance(error, TimeoutError), "a TimeoutError (DeadlineExceeded): "
                        "drain() alone waits for ever", describe(error) if error else "it "
                        "returned")
            check_drop_time(story, took, 0.4, "the send deadline")
        finally:
            writer.transport.abort()
            peer.close()
            listener.close()
    run(scenario())


@pytest.mark.task("13.send")
def test_a_client_that_never_reads_is_dropped_while_others_are_served(lesson, story, root,
                                                                       logs):
    (root / "big.bin").write_bytes(os.urandom(1024) * (16 * 1024))  # 16 MiB
    server = make_server(lesson, story, root, logger=logs.logger, **clocks(send_timeout=0.5))
    with serving(server, story) as address:
        with slow_reader(address) as sock:
            sock.sendall(request("GET", "/big.bin"))
            sent_at = time.monotonic()
            story.step("a client with a 4 KiB receive buffer asked for a 16 MiB file and "
                       "never read (send_timeout 0.5 s)")
            started = time.monotonic()
            reply = exchange(address, request("GET", "/hello.txt"), story, "a 200",
                             who="an honest client")
            took = time.monotonic() - started
            story.check(reply.status == 200 and reply.body == FILE and took < 0.3,
                        "the honest client served within 0.3 s meanwhile",
                        f"{reply} after {took:.2f} s")
            wait_for_active(address, story, 1, within=3.0)
            took = time.monotonic() - sent_at
            check_drop_time(story, took, 0.5, "send_timeout")
            line = logged(logs, me(sock) + " ", "dropped")
            story.check(line is not None, f"a log line '{me(sock)} dropped (...)'",
                        repr(logs.lines()[-3:]))
            _, _, data = closed_within(sock, 2.0)
            story.check(len(data) < 16 * 1024 * 1024, "the response cut short (the server "
                        "gave up on this client)", f"all {len(data)} bytes were delivered")


# --------------------------------------------------------------------------- 13.keepalive


@pytest.mark.task("13.keepalive")
def test_keep_alive_pipelining_and_static_files(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger, **clocks())
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        reader = Reader(sock)
        sock.sendall(request("GET", "/hello.txt") + request("GET", "/missing")
                     + request("HEAD", "/hello.txt") + request("GET", "/../secret.txt"))
        story.step("sent four requests in one packet: GET /hello.txt, GET /missing, "
                   "HEAD /hello.txt, GET /../secret.txt")
        first = expect_response(reader, story, "the response to GET /hello.txt")
        story.check(first.status == 200 and first.body == FILE, f"200 with {short(FILE)}",
                    str(first))
        story.check((first.header("content-type") or "").startswith("text/plain"),
                    "Content-Type text/plain (lesson 07's content_type)",
                    short(first.raw_head, 300))
        check_protected(story, first, "a 200")
        second = expect_response(reader, story, "the response to GET /missing")
        check_status(story, second, 404)
        third = expect_response(reader, story, "the response to HEAD", head_only=True)
        story.check(third.status == 200 and third.header("content-length") == str(len(FILE)),
                    f"200 with Content-Length {len(FILE)} and no body", str(third))
        fourth = expect_response(reader, story, "the response to GET /../secret.txt")
        story.check(fourth.status == 404 and b"SECRET" not in fourth.body,
                    "404 for a path outside the site (lesson 07's safe_path)", str(fourth))
        time.sleep(0.1)
        sock.sendall(request("POST", "/echo", [("Content-Type", "application/json")],
                             b'{"a": [1, 2]}'))
        story.step("0.1 s later, POST /echo {\"a\": [1, 2]} on the same connection")
        fifth = expect_response(reader, story, "the echo (keep-alive)")
        story.check(fifth.status == 200 and fifth.json() == {"received": {"a": [1, 2]}},
                    "200 with {'received': {'a': [1, 2]}}", str(fifth))
        sock.sendall(request("GET", "/boom"))
        sixth = expect_response(reader, story, "a 500 for a route that raises")
        story.check(sixth.status == 500 and b"boom" not in sixth.body,
                    "500 without the exception's text (lesson 08's safe_call)", str(sixth))


@pytest.mark.task("13.keepalive")
@pytest.mark.parametrize("case,status", [
    ("no-host", 400), ("bad-length", 400), ("smuggling", 400), ("no-length", 411),
    ("too-large", 413), ("bad-type", 415), ("put", 405), ("unknown", 501), ("http2", 505),
    ("long-line", 414), ("many-headers", 431), ("head-too-large", 413)])
def test_bad_requests_get_lesson_08s_status(lesson, story, root, logs, case, status):
    json_type = ("Content-Type", "application/json")
    data = {
        "no-host": request("GET", "/", host=False),
        "bad-length": request("POST", "/echo", [json_type, ("Content-Length", "+2")],
                              length=False) + b"{}",
        "smuggling": request("POST", "/echo", [json_type, ("Content-Length", "2"),
                                               ("Transfer-Encoding", "chunked")],
                             length=False) + b"{}",
        "no-length": request("POST", "/echo", [json_type], length=False),
        "too-large": request("POST", "/echo", [json_type, ("Content-Length", "2000")],
                             length=False),
        "bad-type": request("POST", "/echo", [("Content-Type", "text/plain")], b"{}"),
        "put": request("PUT", "/echo", [json_type], b"{}"),
        "unknown": request("BREW", "/"),
        "http2": request("GET", "/", version="HTTP/2.0"),
        "long-line": b"GET /" + b"a" * 200,  # no CRLF, ever: refused as soon as it is too long
        "many-headers": request("GET", "/", [(f"X-{i}", "1") for i in range(5)]),
        "head-too-large": request("HEAD", "/hello.txt", [("Content-Length", "2000")],
                                  length=False),
    }[case]
    limits = lesson.Limits(max_request_line=100, max_headers=4)
    server = make_server(lesson, story, root, logger=logs.logger, max_body=1000, limits=limits,
                         **clocks())
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        sock.sendall(data)
        story.step(f"sent {short(data, 160)}")
        reader = Reader(sock)
        reply = expect_response(reader, story, f"a {status} response (the server's own Limits: "
                                f"100-byte request line, 4 headers; max_body 1000)",
                                head_only=case.startswith("head"))
        check_status(story, reply, status)
        check_protected(story, reply, f"the {status}")
        if case == "put":
            story.check(reply.header("allow") == "GET, HEAD, POST", "Allow: GET, HEAD, POST "
                        "(the 405's own header)", short(reply.raw_head, 300))
        story.check((reply.header("connection") or "").lower() == "close",
                    f"Connection: close on the {status}", short(reply.raw_head, 300))
        how, took, extra = closed_within(sock, 1.0)
        story.check(how in ("closed", "reset"), "the connection closed after the error",
                    f"still open after {took:.2f} s")
        line = logged(logs, f"ACCESS {me(sock)} ", f" {status} ")
        story.check(line is not None, f"the {status} in the access log: ACCESS {me(sock)} ... "
                    f"{status} ...", repr(logs.lines()[-3:]))
        check_no_crash(story, logs)
        if case.startswith("head"):
            extra = bytes(reader.buffer) + extra
            story.check(not extra, "nothing after the head (a response to HEAD has no body, "
                        "errors included)", short(extra))


@pytest.mark.task("13.keepalive")
def test_an_idle_keep_alive_connection_is_closed_at_the_idle_timeout(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger, **clocks(idle_timeout=0.5))
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        sock.sendall(request("GET", "/hello.txt"))
        expect_response(Reader(sock), story, "the response to GET /hello.txt")
        story.step("the client then said nothing (idle_timeout 0.5 s; every other clock 5 s)")
        how, took, data = closed_within(sock, 2.0)
        story.check(how in ("closed", "reset") and not data, "the server to close the idle "
                    "connection, sending nothing", f"{how} after {took:.2f} s, {short(data)}")
        check_drop_time(story, took, 0.5, "idle_timeout")
        line = logged(logs, me(sock) + " ", "idle", "0.5")
        story.check(line is not None, f"a log line '{me(sock)} idle ... 0.5 s ...' (who, and the "
                    f"idle timeout)", repr(logs.lines()[-3:]))
        wait_for_active(address, story, 1)


@pytest.mark.task("13.keepalive")
def test_trickled_headers_are_dropped_at_the_header_deadline(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger,
                         **clocks(header_timeout=0.5, idle_timeout=3.0))
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        with trickler(sock, HEAD, interval=0.1) as state:
            story.step("the client trickles a request head, one byte every 0.1 s "
                       "(header_timeout 0.5 s, idle_timeout 3 s)")
            how, _, data = closed_within(sock, 3.0)
            took = time.monotonic() - state["first"]
        story.check(how in ("closed", "reset"), "the server to hang up on the trickler",
                    f"still open after {took:.2f} s")
        check_drop_time(story, took, 0.5, "header_timeout, counted from the first byte")
        check_optional_408(story, data)
        line = logged(logs, me(sock) + " ", "request head: deadline passed")
        story.check(line is not None, f"a log line '{me(sock)} ... request head: deadline "
                    f"passed ...'", repr(logs.lines()[-3:]))
        if data:
            line = logged(logs, f'ACCESS {me(sock)} "" 408 "-"')
            story.check(line is not None, f'the 408 in the access log: ACCESS {me(sock)} "" '
                        f'408 "-" (no request line was complete)', repr(logs.lines()[-3:]))
        wait_for_active(address, story, 1)
    check_no_crash(story, logs)


@pytest.mark.task("13.keepalive")
@pytest.mark.parametrize("method", ["POST", "HEAD"])
def test_a_slow_body_is_dropped_at_the_body_deadline(lesson, story, root, logs, method):
    server = make_server(lesson, story, root, logger=logs.logger,
                         **clocks(body_timeout=0.5, header_timeout=3.0, idle_timeout=3.0))
    target = "/echo" if method == "POST" else "/hello.txt"
    head = request(method, target, [("Content-Type", "application/json"),
                                    ("Content-Length", "60")], length=False)
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        sock.sendall(head)
        sent_at = time.monotonic()
        with trickler(sock, b'{"a": "' + b"x" * 60, interval=0.1):
            story.step(f"sent a {method} head announcing 60 bytes of body, then trickled it one "
                       "byte every 0.1 s (body_timeout 0.5 s, others 3 s)")
            how, _, data = closed_within(sock, 3.0)
        took = time.monotonic() - sent_at
        story.check(how in ("closed", "reset"), "the server to hang up",
                    f"still open after {took:.2f} s")
        check_drop_time(story, took, 0.5, "body_timeout, counted from the end of the head")
        check_optional_408(story, data, head_only=method == "HEAD")
        line = logged(logs, me(sock) + " ", "request body: deadline passed")
        story.check(line is not None, f"a log line '{me(sock)} ... request body: deadline "
                    f"passed ...'", repr(logs.lines()[-3:]))
    check_no_crash(story, logs)


@pytest.mark.task("13.keepalive")
def test_thinking_before_a_request_is_not_trickling(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger,
                         **clocks(header_timeout=0.4, idle_timeout=3.0))
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        health(address, story)  # a stub fails here, before the wait
        time.sleep(0.5)
        data = request("GET", "/hello.txt")
        sock.sendall(data[:10])
        time.sleep(0.1)
        sock.sendall(data[10:])
        story.step("waited 0.5 s (idle_timeout 3 s), then sent a head in two parts 0.1 s "
                   "apart (header_timeout 0.4 s)")
        reply = expect_response(Reader(sock), story, "200: the header deadline starts at the "
                                "request's FIRST byte, not when the wait for it began")
        check_status(story, reply, 200)


# --------------------------------------------------------------------------- 13.cap


def held(address, story, n):
    """n clients that each made one request and stay connected (kept alive)."""
    socks = []
    try:
        for i in range(n):
            sock = socket.create_connection(address, WAIT)
            socks.append(sock)
            sock.sendall(request("GET", "/hello.txt"))
            reply = expect_response(Reader(sock), story, f"holder {i} to be served")
            check_status(story, reply, 200, f"holder {i}")
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    story.step(f"{n} clients connected, made a request each, and stayed")
    return socks


REJECT_GRACE = 0.6  # seconds after which no refused connection may still hold a task


def connection_tasks(server):
    """How many on_connection tasks the server's event loop runs right now."""
    async def count():
        return sum("on_connection" in task.get_coro().__qualname__
                   for task in asyncio.all_tasks())
    return asyncio.run_coroutine_threadsafe(count(), server.loop).result(WAIT)


def expect_503(address, story, who, send=True):
    started = time.monotonic()
    with socket.create_connection(address, WAIT) as sock:
        if send:
            sock.sendall(request("GET", "/hello.txt"))
        try:
            reply = Reader(sock).response()
        except (ReadError, OSError) as exc:
            story.fail(f"{who}: a 503 response at once", str(exc))
        took = time.monotonic() - started
        story.check(reply.status == 503 and (reply.header("retry-after") or "").isdigit(),
                    f"{who}: 503 with Retry-After", str(reply) + " " + short(reply.raw_head))
        story.check((reply.header("connection") or "").lower() == "close",
                    f"{who}: Connection: close", short(reply.raw_head, 300))
        how, _, _ = closed_within(sock, 1.0)
        story.check(how in ("closed", "reset"), f"{who}: the connection closed after the 503",
                    how)
    return took


@pytest.mark.task("13.cap")
def test_over_the_cap_503_at_once_and_slots_come_back(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger, max_clients=2, **clocks())
    with serving(server, story) as address:
        socks = held(address, story, 2)
        try:
            silent = socket.create_connection(address, WAIT)
            socks.append(silent)
            story.step("a third client connected and sent nothing (max_clients 2)")
            reply = expect_response(Reader(silent), story, "a 503 for the third client at once")
            check_status(story, reply, 503, "two clients are connected: the third is one too many")
            how, took, _ = closed_within(silent, 1.0)
            story.check(how in ("closed", "reset") and took < 0.5, "the silent refused client "
                        "disconnected within 0.5 s (its request is awaited only briefly)",
                        f"{how} after {took:.2f} s")
            took = max(expect_503(address, story, f"flood client {i}") for i in range(10))
            story.check(took < 0.5, "every 503 within 0.5 s (a refusal never waits: not for "
                        "a slot, not for a client that does not read)", f"{took:.2f} s")
            time.sleep(REJECT_GRACE)
            left = connection_tasks(server)
            story.check(left == 2, "2 on_connection tasks left once the refusals are over (the "
                        "holders': a refused connection's task ends soon, even if its client "
                        "never closes)", repr(left))
            rejects = [line for line in logs.lines(logging.WARNING) if "REJECT" in line]
            story.check(any(re.fullmatch(r"REJECT 127\.0\.0\.1:\d+ at capacity \(2 "
                                         r"connections\)", line) for line in rejects),
                        "a warning 'REJECT 127.0.0.1:PORT at capacity (2 connections)'",
                        repr(rejects[-3:]))
        finally:
            for sock in socks:
                sock.close()
        story.step("every client left")
        wait_for_active(address, story, 1)
        for sock in held(address, story, 2):  # both slots free again: not one leaked
            sock.close()
    check_no_crash(story, logs)


@pytest.mark.task("13.cap")
def test_active_connections_counts_connections_not_tasks_or_threads(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger, max_clients=10, **clocks())
    with serving(server, story) as address:
        helpers = [threading.Thread(target=time.sleep, args=(1.0,), daemon=True,
                                    name="grader-busy") for _ in range(3)]
        for thread in helpers:
            thread.start()
        chores = [asyncio.run_coroutine_threadsafe(asyncio.sleep(1.0), server.loop)
                  for _ in range(5)]
        try:
            story.step("(3 unrelated threads run in the process, 5 unrelated tasks in the loop)")
            socks = held(address, story, 3)
            try:
                with socket.create_connection(address, WAIT) as slow:
                    slow.sendall(b"GET /hel")
                    story.step("a fourth client sent half a request line and waits")
                    time.sleep(0.05)
                    data = health(address, story)
                    story.check(data.get("active_connections") == 5, "active_connections 5 (three "
                                "holders, the half request, the health check itself)", repr(data))
                    story.check(data.get("max_clients") == 10 and data.get("status") == "ok",
                                "status 'ok' and max_clients 10", repr(data))
            finally:
                for sock in socks:
                    sock.close()
            wait_for_active(address, story, 1)
            ends = time.monotonic() + 1.0
            while server.active_connections != 0 and time.monotonic() < ends:
                time.sleep(0.01)  # the health check's own connection ends just after its reply
            story.check(server.active_connections == 0, "server.active_connections 0 once every "
                        "client has gone", repr(server.active_connections))
        finally:
            for chore in chores:
                chore.cancel()
            time.sleep(0.05)  # the loop runs the cancellations before stop() ends it


@pytest.mark.task("13.cap")
def test_stop_is_quick_with_slow_clients_connected(lesson, story, root, logs):
    (root / "big.bin").write_bytes(b"b" * (16 << 20))
    server = make_server(lesson, story, root, logger=logs.logger, **clocks(
        header_timeout=30.0, body_timeout=30.0, idle_timeout=30.0, send_timeout=30.0))
    server.start()
    address = server.address
    socks = []
    try:
        idle = socket.create_connection(address, WAIT)
        socks.append(idle)
        trickling = socket.create_connection(address, WAIT)
        socks.append(trickling)
        trickling.sendall(b"GET /hello.txt HTTP/1.1\r\nHo")
        reader = slow_reader(address)
        socks.append(reader)
        reader.sendall(request("GET", "/big.bin"))
        story.step("three clients: one silent, one halfway through a head, one that asked for "
                   "16 MiB and does not read (every clock 30 s)")
        data = health(address, story)
        story.check(data.get("active_connections") == 4, "all four connections admitted "
                    "(the three and the health check)", repr(data))
        started = time.monotonic()
        stopping = run_in_thread(server.stop, name="grader-stop")
        try:
            stopping.result(timeout=3.0)
        except Exception as exc:
            story.fail("stop() to return", describe(exc))
        took = time.monotonic() - started
        story.check(took < 1.0, "stop() within 1 s (it aborts slow connections, it does not "
                    "wait for their clocks)", f"{took:.2f} s")
        for sock, who in zip(socks, ("silent", "trickling", "non-reading")):
            how, _, _ = closed_within(sock, 1.0)
            story.check(how in ("closed", "reset"), f"the {who} client disconnected", how)
        with contextlib.suppress(OSError):
            socket.create_connection(address, 0.5).close()
            story.fail("the port closed after stop()", "a connection was accepted")
    finally:
        for sock in socks:
            sock.close()
        server.stop()
        if server.not_implemented is not None:
            raise server.not_implemented


# --------------------------------------------------------------------------- 13.offload


def latency_during(address, story, slow_target, what):
    """Start a request for slow_target (STALL s of blocking work), then time a /healthz on
    another connection while it runs. Returns (seconds, the slow request's reply)."""
    slow = socket.create_connection(address, WAIT)
    with slow:
        slow.sendall(request("GET", slow_target))
        story.step(f"a client asked for {slow_target} ({what}: {STALL} s of blocking work)")
        time.sleep(0.1)
        started = time.monotonic()
        reply = exchange(address, request("GET", "/healthz"), story, "a /healthz response",
                         who="meanwhile, another client")
        took = time.monotonic() - started
        check_status(story, reply, 200)
        slow_reply = expect_response(Reader(slow), story, f"the response to {slow_target}")
    return took, slow_reply


@pytest.mark.task("13.offload")
def test_blocking_application_code_runs_off_the_loop(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger, **clocks())
    with serving(server, story) as address:
        health(address, story)  # a stub fails here at once
        took, slow_reply = latency_during(address, story, "/slow", "the route sleeps, as "
                                          "scrypt or a huge json.loads would")
        story.check(took < 0.3, f"the other client answered within 0.3 s (a route called on "
                    f"the loop freezes every client for its {STALL} s: asyncio.to_thread)",
                    f"{took:.2f} s")
        story.check(slow_reply.status == 404, "the slow request answered too (404: no file)",
                    str(slow_reply))


@pytest.mark.task("13.offload")
def test_file_reads_run_off_the_loop(lesson, story, root, logs):
    (root / "slowfile.txt").write_bytes(FILE)
    server = make_server(lesson, story, root, logger=logs.logger, **clocks())
    with serving(server, story) as address:
        health(address, story)
        took, slow_reply = latency_during(address, story, "/slowfile.txt", "every read of "
                                          "this file blocks, like a cold disk")
        story.check(took < 0.3, "the other client answered within 0.3 s (file.read() on the "
                    "loop freezes every client: read in a worker thread)", f"{took:.2f} s")
        story.check(slow_reply.status == 200 and slow_reply.body == FILE,
                    f"the slow file served in full: 200 with {short(FILE)}", str(slow_reply))


@pytest.mark.task("13.keepalive")
def test_the_given_defaults(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger)
    expected = dict(host="127.0.0.1", port=0, max_clients=100, header_timeout=10.0,
                    body_timeout=30.0, idle_timeout=5.0, send_timeout=10.0, max_body=1 << 20,
                    max_json_depth=32)
    got = {name: getattr(server, name, None) for name in expected}
    story.check(got == expected, f"lesson 09's safe defaults {expected}", repr(got))
    with serving(server, story) as address:
        data = health(address, story)
        story.check(data.get("max_clients") == 100 and data.get("active_connections") == 1,
                    "/healthz: max_clients 100, active_connections 1", repr(data))


@pytest.mark.task("13.keepalive")
def test_the_access_log(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger, **clocks())
    with serving(server, story) as address, socket.create_connection(address, WAIT) as sock:
        reader = Reader(sock)
        sock.sendall(request("GET", "/hello.txt", [("User-Agent", "grader-agent")])
                     + request("GET", "/missing"))
        story.step("sent GET /hello.txt with User-Agent: grader-agent, then GET /missing "
                   "without one")
        expect_response(reader, story, "the response to GET /hello.txt")
        expect_response(reader, story, "the response to GET /missing")
        for wanted in [f'ACCESS {me(sock)} "GET /hello.txt HTTP/1.1" 200 "grader-agent"',
                       f'ACCESS {me(sock)} "GET /missing HTTP/1.1" 404 "-"']:
            story.check(logged(logs, wanted) == wanted, f"the log line {wanted}",
                        repr([line for line in logs.lines() if line.startswith("ACCESS")][-3:]))


@pytest.mark.task("13.offload")
def test_empty_one_byte_and_growing_files(lesson, story, root, logs):
    (root / "empty.txt").write_bytes(b"")
    (root / "one.txt").write_bytes(b"1")
    log_file = root / "app.log"
    log_file.write_bytes(b"line 1\n")
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
    base = make_server(lesson, story, root, logger=logs.logger, **clocks())

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
        for name, content in [("/empty.txt", b""), ("/one.txt", b"1"), ("/empty.txt", b"")]:
            sock.sendall(request("GET", name))
            reply = expect_response(reader, story, f"the response to GET {name} (keep-alive)")
            story.check(reply.status == 200 and reply.body == content,
                        f"200 with {content!r}", str(reply))
        sock.sendall(request("GET", "/app.log") + request("GET", "/missing"))
        story.step("sent GET /app.log and GET /missing; the file grows by a forged response "
                   "between the head and the body")
        first = expect_response(reader, story, "the response to GET /app.log")
        story.check(first.status == 200 and first.body == b"line 1\n",
                    "200 with exactly the 7 bytes announced", str(first))
        second = expect_response(reader, story, "the response to GET /missing")
        check_status(story, second, 404, "(send exactly Content-Length bytes of a file)")


@pytest.mark.task("13.cap")
def test_start_and_stop_like_a_threaded_server(lesson, story, root, logs):
    server = make_server(lesson, story, root, logger=logs.logger, **clocks())
    with pytest.raises(RuntimeError):
        server.address  # noqa: B018 (a property that must refuse)
    story.step("server.address before start() raised RuntimeError")
    with serving(server, story) as address:
        story.check(address[0] == "127.0.0.1", "listening on 127.0.0.1 (loopback, as given)",
                    repr(address))
        health(address, story)
        with pytest.raises(RuntimeError):
            server.start()
        story.step("a second start() raised RuntimeError")

        async def loop_thread():
            return threading.current_thread()
        thread = asyncio.run_coroutine_threadsafe(loop_thread(), server.loop).result(WAIT)
        story.check(thread.daemon and thread is not threading.main_thread(),
                    "the event loop runs in a daemon thread of its own", repr(thread))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = make_server(lesson, story, root, logger=logs.logger, port=port, **clocks())
        with pytest.raises(OSError):
            server.start()
        story.step("start() on a port already in use raised OSError")
    story.step("the port was freed; start() again on the same server object")
    with serving(server, story) as address:
        story.check(address[1] == port, "the port given to the constructor", repr(address))
        health(address, story)
