"""Graders for lesson 03, framing.  Run: pytest exercises -k lesson03

The grader builds frames by hand (graderkit.frame / read_frame), so your send_msg is never
checked with your own recv_msg alone: a mistake that both halves share would cancel out.
"""
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import peers
from graderkit import (LATE, LOOPBACK, WAIT, check_on_time, describe, frame, read_frame,
                       run_in_thread, short)

# The socket timeout the graders set when they time a call: short, and far from WAIT.
LIMIT = 0.5


@pytest.fixture
def lesson(graded):
    return graded("lesson03_framing")


@pytest.fixture
def pair():
    """Two connected TCP sockets: `ours` (the grader's end) and `yours` (handed to your code)."""
    ours, yours = peers.tcp_pair(timeout=WAIT)
    with ours, yours:
        yield ours, yours


def expect_raise(story, call, wanted, wanted_text):
    """Run call(); it must raise `wanted`. Returns the exception."""
    try:
        value = call()
    except wanted as exc:
        return exc
    except NotImplementedError:
        raise
    except Exception as exc:
        story.fail(wanted_text, describe(exc))
    story.fail(wanted_text, f"it returned {short(value)}")


def unread(sock, n: int) -> bytes:
    """What is still waiting in the socket (up to n bytes), without blocking long."""
    sock.settimeout(0.2)
    try:
        return sock.recv(n)
    except (TimeoutError, socket.timeout):
        return b""


# --------------------------------------------------------------------------- 03.recv_exact


@pytest.mark.task("03.recv_exact")
def test_recv_exact_collects_bytes_that_arrive_in_pieces(lesson, pair, story):
    ours, yours = pair
    pieces = [b"f", b"ra", b"min", b"g!more"]
    run_in_thread(peers.send_in_pieces, ours, pieces)
    story.step(f"sent {pieces!r} as four separate sends, 20 ms apart")
    story.step("called recv_exact(sock, 8)")
    got = run_in_thread(lesson.recv_exact, yours, 8).result_for(story, "b'framing!'")
    story.check(got == b"framing!", "b'framing!' (exactly 8 bytes, however they arrive)",
                short(got))
    rest = unread(yours, 16)
    story.check(rest == b"more", "the 4 bytes after them left unread (b'more'): ask recv() only "
                "for what is still missing", short(rest))


@pytest.mark.task("03.recv_exact")
def test_recv_exact_gives_up_on_a_silent_peer(lesson, pair, story):
    ours, yours = pair
    ours.sendall(b"abc")
    yours.settimeout(LIMIT)
    story.step(f"sent b'abc' and then nothing more; the socket's timeout is {LIMIT} s")
    story.step("called recv_exact(sock, 8)")
    expect_timeout(story, lesson.recv_exact, (yours, 8), "recv_exact")


@pytest.mark.task("03.recv_exact")
def test_recv_exact_of_zero_bytes_is_empty(lesson, pair, story):
    _, yours = pair
    story.step("called recv_exact(sock, 0) with nothing sent")
    got = lesson.recv_exact(yours, 0)
    story.check(got == b"", "b'' at once", short(got))


@pytest.mark.parametrize("how", ["closed", "reset"])
@pytest.mark.task("03.recv_exact")
def test_recv_exact_raises_if_the_peer_leaves_early(lesson, pair, story, how):
    ours, yours = pair
    ours.sendall(b"abc")
    time.sleep(0.05)  # the bytes arrive before the goodbye
    if how == "closed":
        ours.shutdown(socket.SHUT_WR)
        story.step("sent b'abc' and closed the sending side")
    else:
        peers.reset(ours)
        story.step("sent b'abc' and reset the connection (an RST)")
    story.step("called recv_exact(sock, 8)")
    expect_raise(story, lambda: lesson.recv_exact(yours, 8), ConnectionError,
                 f"ConnectionError: only 3 of 8 bytes arrived before the connection was {how}")


def expect_timeout(story, call, args, what):
    """call(*args) on a socket with timeout LIMIT and a silent peer: TimeoutError, on time."""
    elapsed, value, error = peers.timed(call, *args, wait=LATE * LIMIT + 1)
    story.check(elapsed is not None, f"{what} to give up with TimeoutError after about {LIMIT} s",
                f"still waiting after {LATE * LIMIT + 1:.1f} s")
    story.check(isinstance(error, TimeoutError),
                f"{what} to raise TimeoutError (a part is not the whole: never return it)",
                describe(error) if error else f"it returned {short(value)}")
    story.step(f"it raised TimeoutError after {elapsed:.2f} s")
    check_on_time(story, f"{what} to give up", elapsed, LIMIT)


# --------------------------------------------------------------------------- 03.send_msg


@pytest.mark.parametrize("text", ["", "hello", "héllo ✓ 你好 🚀"], ids=["empty", "ascii", "utf8"])
@pytest.mark.task("03.send_msg")
def test_send_msg_writes_a_big_endian_length_then_utf8(lesson, pair, story, text):
    ours, yours = pair
    story.step(f"called send_msg(sock, {text!r})")
    lesson.send_msg(yours, text)
    body = text.encode("utf-8")
    header = ours.recv(4)
    story.step(f"read the 4-byte header: {header!r}")
    story.check(header == struct.pack("!I", len(body)),
                f"{struct.pack('!I', len(body))!r} (length {len(body)}, big-endian: the UTF-8 "
                "byte count, not the character count)", repr(header))
    got = read_frame_body(ours, len(body))
    story.check(got == body, f"the UTF-8 body {short(body)}", short(got))


def read_frame_body(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


# No shrinking: a hung example would be replayed again and again while the timeout ticks.
@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
@pytest.mark.task("03.send_msg")
def test_send_msg_then_recv_msg_round_trips_any_text(lesson, story, text):
    ours, yours = socket.socketpair()
    with ours, yours:
        ours.settimeout(WAIT)
        yours.settimeout(WAIT)
        # Your code runs in a helper thread, so code that blocks forever fails this example
        # after WAIT seconds instead of freezing the run.
        run_in_thread(lesson.send_msg, ours, text).result_for(story, f"send_msg({text!r}) to return")
        sent = read_frame(yours)
        if sent != text.encode("utf-8"):
            story.fail(f"send_msg({text!r}) to send the body {short(text.encode())}", short(sent))
        yours.sendall(frame(text))
        got = run_in_thread(lesson.recv_msg, ours).result_for(
            story, f"recv_msg to return {text!r} for a frame holding it")
        if got != text:
            story.fail(f"recv_msg to return {text!r} for a frame holding it", short(got))


@pytest.mark.task("03.send_msg")
def test_send_msg_sends_a_large_message_to_a_slow_reader(lesson, story):
    text = "välkommen ✓ " * 20_000  # about 280 KB of UTF-8
    body = text.encode("utf-8")
    ours, yours = peers.tcp_pair(small=True)
    with ours, yours:
        story.step("both sockets have 4 KiB buffers; the grader reads 4 KiB at a time, slowly")
        story.step(f"called send_msg(sock, <{len(text)} characters, {len(body)} bytes of UTF-8>)")
        sender = run_in_thread(lesson.send_msg, yours, text)
        sender.raise_if_failed()
        data, how = peers.read_slowly(ours, limit=4 + len(body))
        sender.result_for(story, "send_msg to return once everything is sent")
    story.check(data[:4] == struct.pack("!I", len(body)), f"the header for {len(body)} bytes",
                short(data[:4]))
    story.check(data[4:] == body, f"the whole {len(body)}-byte body (sendall, not send: send "
                "may write only part when the buffer is full)",
                f"{len(data) - 4} body bytes, then the connection {how}")


# --------------------------------------------------------------------------- 03.recv_msg


@pytest.mark.task("03.recv_msg")
def test_recv_msg_reads_back_to_back_frames_one_at_a_time(lesson, pair, story):
    ours, yours = pair
    ours.sendall(frame("first") + frame("sécond") + frame(""))
    story.step("sent three frames in ONE sendall: 'first', 'sécond', ''")
    for want in ["first", "sécond", ""]:
        got = lesson.recv_msg(yours)
        story.step(f"recv_msg returned {got!r}")
        story.check(got == want, repr(want), repr(got))


@pytest.mark.task("03.recv_msg")
def test_recv_msg_refuses_a_forged_4gib_length_without_reading_on(lesson, pair, story):
    ours, yours = pair
    ours.sendall(peers.forged_header(0xFFFFFFFF) + b"NEXT")
    story.step("sent a header announcing 4294967295 bytes (4 GiB), then b'NEXT'")
    story.step("called recv_msg(sock, max_size=1024)")
    exc = expect_raise(story, lambda: lesson.recv_msg(yours, max_size=1024), ValueError,
                       "MessageTooLarge, raised right after the 4-byte header")
    story.check(isinstance(exc, lesson.MessageTooLarge), "a MessageTooLarge exception",
                describe(exc))
    rest = unread(yours, 16)
    story.check(rest == b"NEXT", "the bytes after the header left unread (b'NEXT'): the cap is "
                "checked before any body is read", short(rest))


@pytest.mark.task("03.recv_msg")
def test_recv_msg_checks_the_cap_before_reading_a_sent_body(lesson, pair, story):
    ours, yours = pair
    body = b"x" * 2049
    ours.sendall(frame(body))
    story.step("sent a complete frame whose body is 2049 bytes")
    story.step("called recv_msg(sock, max_size=2048)")
    expect_raise(story, lambda: lesson.recv_msg(yours, max_size=2048), ValueError,
                 "MessageTooLarge (2049 > 2048)")
    rest = unread(yours, 4096)
    story.check(rest.startswith(b"x"), "the body still unread in the socket: read the header, "
                "compare with the cap, and only then read the body",
                f"{len(rest)} body bytes left unread")


@pytest.mark.task("03.recv_msg")
def test_recv_msg_accepts_a_body_exactly_at_the_cap(lesson, pair, story):
    ours, yours = pair
    ours.sendall(frame("y" * 2048))
    story.step("sent a frame of exactly 2048 bytes; called recv_msg(sock, max_size=2048)")
    got = lesson.recv_msg(yours, max_size=2048)
    story.check(got == "y" * 2048, "the 2048-character text (the cap is inclusive)", short(got))


@pytest.mark.parametrize("how", ["closed", "reset"])
@pytest.mark.parametrize("partial", [struct.pack("!I", 10) + b"abc", b"\x00\x00"],
                         ids=["mid-body", "mid-header"])
@pytest.mark.task("03.recv_msg")
def test_recv_msg_raises_when_the_stream_ends_mid_frame(lesson, pair, story, partial, how):
    ours, yours = pair
    ours.sendall(partial)
    time.sleep(0.05)  # the bytes arrive before the goodbye
    if how == "closed":
        ours.shutdown(socket.SHUT_WR)
    else:
        peers.reset(ours)
    story.step(f"sent {partial!r} (an unfinished frame), then the connection was {how}")
    expect_raise(story, lambda: lesson.recv_msg(yours), ConnectionError,
                 "ConnectionError: a half frame is not a message (never return '')")


@pytest.mark.task("03.recv_msg")
def test_recv_msg_gives_up_on_a_peer_that_stops_mid_frame(lesson, pair, story):
    ours, yours = pair
    ours.sendall(peers.forged_header(10) + b"abc")
    yours.settimeout(LIMIT)
    story.step(f"sent a header announcing 10 bytes, then only b'abc', then nothing (a peer "
               f"that lies about the length); the socket's timeout is {LIMIT} s")
    story.step("called recv_msg(sock)")
    expect_timeout(story, lesson.recv_msg, (yours,), "recv_msg")


@pytest.mark.task("03.recv_msg")
def test_recv_msg_decodes_strictly(lesson, pair, story):
    ours, yours = pair
    ours.sendall(frame(b"caf\xe9"))  # Latin-1 é: not valid UTF-8
    story.step(r"sent a frame with the bytes b'caf\xe9' (Latin-1, not valid UTF-8)")
    expect_raise(story, lambda: lesson.recv_msg(yours), UnicodeDecodeError,
                 "UnicodeDecodeError (strict decoding; errors='replace' would silently turn the "
                 "data into 'caf\\ufffd')")


# --------------------------------------------------------------------------- 03.client


def framed_server(listener, count):
    """The grader's server: answer `count` frames with 'got: <text>', 2 bytes per send."""
    listener.settimeout(WAIT)
    conn, _ = listener.accept()
    seen = []
    with conn:
        conn.settimeout(WAIT)
        for _ in range(count):
            text = read_frame(conn).decode("utf-8")
            seen.append(text)
            reply = frame(f"got: {text}")
            for i in range(0, len(reply), 2):
                conn.sendall(reply[i:i + 2])
        extra, _ = conn.recv(1), None  # the client should close now: b"" expected
    return seen, extra


@pytest.mark.task("03.client")
def test_request_sends_each_text_and_collects_each_reply(lesson, story):
    texts = ["one", "twó", "", "x" * 1000]
    with socket.create_server((LOOPBACK, 0)) as listener:
        server = run_in_thread(framed_server, listener, len(texts))
        story.step("the grader's server answers each frame with 'got: <text>', 2 bytes per send")
        host, port = listener.getsockname()
        story.step(f"called request('{host}', <port>, {short(texts)}, timeout=2.0)")
        replies = run_in_thread(lesson.request, host, port, texts, 2.0).result_for(
            story, "a list of four replies", timeout=4.0)
        want = [f"got: {t}" for t in texts]
        story.check(replies == want, short(want), short(replies))
        seen, extra = server.result_for(story, "the server to see four frames on one connection")
        story.check(seen == texts, f"the server to receive {short(texts)}", short(seen))
        story.check(extra == b"", "request() to close the connection when done",
                    f"it sent more: {extra!r}")


@pytest.mark.task("03.client")
def test_request_gives_up_on_a_server_that_never_replies(lesson, story):
    with peers.silent_server() as (host, port):
        story.step("the grader's server accepts, reads everything and never replies")
        story.step(f"called request('{host}', <port>, ['anyone?'], timeout={LIMIT})")
        expect_timeout(story, lesson.request, (host, port, ["anyone?"], LIMIT), "request")


def resetting_framed_server(listener):
    """Answer the first frame properly, then reset the connection in the middle of the second
    reply (after its header and half its body)."""
    conn, _ = listener.accept()
    conn.settimeout(WAIT)
    conn.sendall(frame(f"got: {read_frame(conn).decode()}"))
    text = read_frame(conn).decode()
    reply = frame(f"got: {text}")
    conn.sendall(reply[: len(reply) // 2])
    time.sleep(0.05)  # the half reply arrives before the reset does
    peers.reset(conn)


@pytest.mark.task("03.client")
def test_request_reports_a_reset_as_an_error(lesson, story):
    with peers.listener() as listener:
        run_in_thread(resetting_framed_server, listener)
        story.step("the grader's server answers the first text, then resets the connection "
                   "halfway through its second reply")
        host, port = listener.getsockname()
        story.step(f"called request('{host}', <port>, ['one', 'two', 'three'], timeout=2.0)")
        elapsed, value, error = peers.timed(lesson.request, host, port, ["one", "two", "three"],
                                            2.0, wait=WAIT + 1)
    story.check(elapsed is not None, "request to end", f"still running after {WAIT + 1} s")
    story.check(isinstance(error, OSError) and not isinstance(error, TimeoutError),
                "an error at once, e.g. ConnectionResetError (two of three replies is not an "
                "answer to return)", describe(error) if error else f"it returned {short(value)}")


@pytest.mark.task("03.client")
def test_request_sends_a_large_text_to_a_slow_reader(lesson, story):
    text = "x" * 300_000
    with peers.listener(small=True) as listener:
        def slow_server():
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                header, _ = peers.read_slowly(conn, limit=4)
                (length,) = struct.unpack("!I", header)
                body, how = peers.read_slowly(conn, limit=length)
                conn.sendall(frame(f"{len(body)} bytes"))
                return length, len(body), how
        server = run_in_thread(slow_server)
        story.step("the grader's server has 4 KiB buffers and reads slowly; it answers "
                   "'<n> bytes' once it has the whole frame")
        host, port = listener.getsockname()
        story.step(f"called request('{host}', <port>, [<{len(text)} characters>], timeout=2.0)")
        client = run_in_thread(lesson.request, host, port, [text], 2.0)
        client.raise_if_failed()
        length, received, how = server.result_for(story, "the grader's server to read a frame",
                                                  timeout=2 * WAIT)
        story.check(length == len(text) and received == len(text),
                    f"a frame of {len(text)} bytes, all of them sent",
                    f"a header for {length} bytes, then {received} bytes ({how})")
        replies = client.result_for(story, f"request to return ['{len(text)} bytes']")
        story.check(replies == [f"{len(text)} bytes"], short([f"{len(text)} bytes"]),
                    short(replies))
