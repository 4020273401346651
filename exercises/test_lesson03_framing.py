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

from graderkit import LOOPBACK, WAIT, describe, frame, read_frame, run_in_thread, short


@pytest.fixture
def lesson(graded):
    return graded("lesson03_framing")


@pytest.fixture
def pair():
    """Two connected sockets: `ours` (the grader's end) and `yours` (handed to your code)."""
    ours, yours = socket.socketpair()
    for s in (ours, yours):
        s.settimeout(WAIT)
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
def test_recv_exact_collects_bytes_that_arrive_one_at_a_time(lesson, pair, story):
    ours, yours = pair
    payload = b"framing!"
    run_in_thread(lambda: [ours.sendall(bytes([b])) or time.sleep(0.005) for b in payload + b"more"])
    story.step(f"sent {payload!r} + b'more' ONE BYTE AT A TIME, 5 ms apart")
    story.step("called recv_exact(sock, 8)")
    got = lesson.recv_exact(yours, 8)
    story.check(got == payload, f"{payload!r} (exactly 8 bytes, however they arrive)", short(got))
    time.sleep(0.05)
    rest = unread(yours, 16)
    story.check(rest == b"more", "the 4 bytes after them left unread (b'more')", short(rest))


@pytest.mark.task("03.recv_exact")
def test_recv_exact_of_zero_bytes_is_empty(lesson, pair, story):
    _, yours = pair
    story.step("called recv_exact(sock, 0) with nothing sent")
    got = lesson.recv_exact(yours, 0)
    story.check(got == b"", "b'' at once", short(got))


@pytest.mark.task("03.recv_exact")
def test_recv_exact_raises_if_the_peer_closes_early(lesson, pair, story):
    ours, yours = pair
    ours.sendall(b"abc")
    ours.shutdown(socket.SHUT_WR)
    story.step("sent b'abc' and closed the sending side")
    story.step("called recv_exact(sock, 8)")
    expect_raise(story, lambda: lesson.recv_exact(yours, 8), ConnectionError,
                 "ConnectionError: only 3 of 8 bytes arrived before the end of the stream")


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
    ours.sendall(struct.pack("!I", 0xFFFFFFFF) + b"NEXT")
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


@pytest.mark.parametrize("partial", [struct.pack("!I", 10) + b"abc", b"\x00\x00"],
                         ids=["mid-body", "mid-header"])
@pytest.mark.task("03.recv_msg")
def test_recv_msg_raises_when_the_stream_ends_mid_frame(lesson, pair, story, partial):
    ours, yours = pair
    ours.sendall(partial)
    ours.shutdown(socket.SHUT_WR)
    story.step(f"sent {partial!r} (an unfinished frame) and closed the sending side")
    expect_raise(story, lambda: lesson.recv_msg(yours), ConnectionError,
                 "ConnectionError: a half frame is not a message (never return '')")


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
