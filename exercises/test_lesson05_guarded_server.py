"""Graders for lesson 05, Slowloris and other resource attacks.
Run: pytest exercises -k lesson05"""
import contextlib
import logging
import socket
import struct
import threading
import time

import pytest

from graderkit import (WAIT, check_on_time, connect, describe, expect, expect_busy,
                       expect_dropped, frame, is_closed, make_server, peer_of, read_frame,
                       reset, run_in_thread, serving, short, slow_reader, trickling,
                       wait_for_line)


@pytest.fixture
def lesson(graded):
    return graded("lesson05_guarded_server")


# --------------------------------------------------------------------------- helpers




def honest_client(server, story, within=2.0):
    """A new client that sends 'echo after' and expects 'after', retrying while the server
    is busy: a slot comes back a moment after the old connection ends. Returns the socket."""
    address = tuple(server.address)
    story.step(f"a new honest client tried 'echo after' (retrying for up to {within} s while "
               "the server said busy)")
    ends = time.monotonic() + within
    while True:
        sock = socket.socket()
        try:
            sock.settimeout(WAIT)
            sock.connect(address)
            sock.sendall(frame("echo after"))
            reply = read_frame(sock)
            if reply == b"after":
                story.step("the honest client was served: 'after'")
                return sock
            last = f"the reply {short(reply)}"
        except OSError as exc:  # refused with a reset, or no reply at all
            last = describe(exc)
        sock.close()
        if server.not_implemented is not None:
            raise server.not_implemented
        if time.monotonic() > ends:
            story.fail(f"the honest client to be served within {within} s (is the slot given "
                       "back on this path?)", f"still not served; last attempt: {last}")
        time.sleep(0.05)


def leave(sock, story, who="the honest client"):
    """Say quit and wait for the close. The slot comes back a moment after the close (the
    server releases it once the connection is closed), so the next client retries."""
    with sock:
        expect(sock, story, "quit", "bye", who=who)
        how = is_closed(sock)
        story.check(how in ("closed", "reset"), "the server to close the connection after 'bye'",
                    how)


def admitted(address, story, logs, within=2.5):
    """A connection the server admitted (its CONNECT line logged, not REJECT). A slot comes
    back a moment after the previous client's close, so one refused in that moment retries."""
    ends = time.monotonic() + within
    while True:
        sock = connect(address, story)
        line = wait_for_line(logs, peer_of(sock))  # CONNECT or REJECT, whichever comes
        if line is not None and line.startswith("CONNECT"):
            return sock
        sock.close()
        if time.monotonic() > ends:
            story.fail(f"a new client admitted within {within} s (a slot given back?)",
                       f"last attempt: {line or 'nothing logged'}")
        time.sleep(0.05)


def pair():
    """A connected socket pair: the grader writes on one end, your function reads the other."""
    reader, writer = socket.socketpair()
    writer.settimeout(WAIT)
    return reader, writer


def call_recv_msg_by(lesson, story, sock, *args, wait=WAIT):
    """Run recv_msg_by(sock, *args) in a thread, so one that never returns fails the test
    instead of hanging it. Returns (text, None) or (None, exception)."""
    story.step(f"called recv_msg_by(sock, {', '.join(map(repr, args))})")
    call = run_in_thread(lesson.recv_msg_by, sock, *args, name="grader-recv")
    try:
        return call.result(timeout=wait), None
    except NotImplementedError:
        raise
    except TimeoutError as exc:
        if "still running" in str(exc):
            story.fail(f"recv_msg_by to return or raise within {wait} s", "it was still waiting")
        return None, exc
    except Exception as exc:
        return None, exc


# --------------------------------------------------------------------------- 05.deadline


@pytest.mark.task("05.deadline")
def test_recv_msg_by_reads_whole_messages(lesson, story):
    reader, writer = pair()
    with reader, writer:
        data = frame("hello") + frame("wörld") + frame(b"")

        def send_in_pieces():
            for i in range(0, len(data), 3):
                writer.sendall(data[i:i + 3])
                time.sleep(0.01)
        sender = run_in_thread(send_in_pieces, name="grader-send")
        story.step("the grader sent three frames ('hello', 'wörld', '') in 3-byte pieces")
        for expected in ["hello", "wörld", ""]:
            got, error = call_recv_msg_by(lesson, story, reader, 100, 1.0, 1.0)
            story.check(error is None and got == expected, repr(expected),
                        describe(error) if error else repr(got))
        sender.result()


def is_deadline(lesson, error) -> bool:
    """A DeadlineExceeded (the lesson's own class) with a message saying how far it got."""
    return (isinstance(error, getattr(lesson, "DeadlineExceeded", ()))
            and str(error) not in ("", "None"))


def timed_recv_msg_by(lesson, story, sock, *args, wait=WAIT):
    """call_recv_msg_by, also returning when it ended (a time.monotonic() value)."""
    text, error = call_recv_msg_by(lesson, story, sock, *args, wait=wait)
    return text, error, time.monotonic()


@pytest.mark.task("05.deadline")
def test_recv_msg_by_drops_a_trickling_sender(lesson, story):
    reader, writer = pair()
    with reader, writer:
        data = frame("x" * 40)
        story.step("(idle_timeout 3.0 s, message_deadline 0.6 s: far apart, so the grader can "
                   "tell which clock stopped the sender)")
        with trickling(writer, story, data) as finish:
            first_byte = time.monotonic()
            got, error, ended = timed_recv_msg_by(lesson, story, reader, 100, 3.0, 0.6, wait=2.5)
            sent = finish()
        story.check(is_deadline(lesson, error),
                    "DeadlineExceeded about 0.6 s after the first byte: the gaps (0.1 s) are "
                    "shorter than idle_timeout, so only a deadline stops this",
                    describe(error) if error else f"the message {short(got)}")
        story.check(sent < len(data), "to give up before the sender finished",
                    f"waited for all {sent} bytes")
        check_on_time(story, "DeadlineExceeded (counted from the first byte)",
                      ended - first_byte, 0.6)


@pytest.mark.task("05.deadline")
def test_the_deadline_covers_the_header(lesson, story):
    reader, writer = pair()
    with reader, writer:
        writer.sendall(b"\x00\x00\x00")
        first_byte = time.monotonic()
        story.step("the grader sent 3 of the header's 4 bytes, then nothing (idle_timeout "
                   "3.0 s, message_deadline 0.6 s)")
        got, error, ended = timed_recv_msg_by(lesson, story, reader, 100, 3.0, 0.6, wait=2.5)
        story.check(is_deadline(lesson, error),
                    "DeadlineExceeded: the message began with its first header byte, so the "
                    "deadline covers the rest of the header too",
                    describe(error) if error else repr(got))
        check_on_time(story, "DeadlineExceeded (counted from the first header byte)",
                      ended - first_byte, 0.6)


@pytest.mark.task("05.deadline")
def test_a_steady_sender_may_take_longer_than_the_idle_timeout(lesson, story):
    reader, writer = pair()
    with reader, writer:
        data = frame("steady " * 4)
        pieces = [data[i:i + 3] for i in range(0, len(data), 3)]

        def steady():
            for piece in pieces:
                writer.sendall(piece)
                time.sleep(0.1)
        sender = run_in_thread(steady, name="grader-send")
        story.step(f"the grader sent a frame in {len(pieces)} pieces, one every 0.1 s "
                   f"({len(pieces) * 0.1:.1f} s in all; idle_timeout 0.3 s, message_deadline "
                   "3.0 s)")
        got, error = call_recv_msg_by(lesson, story, reader, 100, 0.3, 3.0, wait=3.5)
        story.check(got == "steady " * 4, f"{'steady ' * 4!r}: each gap is shorter than "
                    "idle_timeout and the whole message is within message_deadline (once a "
                    "message has begun, the deadline bounds it, not the idle timeout)",
                    describe(error) if error else repr(got))
        sender.result()


@pytest.mark.task("05.deadline")
def test_the_deadline_uses_a_monotonic_clock(lesson, story, monkeypatch):
    real_time, jumps = time.time, iter(range(10**9))
    # A wall clock may be stepped back at any moment (NTP, an admin, a VM resumed). This one
    # goes back an hour every time it is read; time.monotonic() never goes back.
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600 * next(jumps))
    story.step("the grader made time.time() go back an hour each time it is read (a wall "
               "clock being corrected); time.monotonic() is untouched")
    reader, writer = pair()
    with reader, writer:
        data = frame("y" * 40)
        with trickling(writer, story, data) as finish:
            first_byte = time.monotonic()
            got, error, ended = timed_recv_msg_by(lesson, story, reader, 100, 3.0, 0.6, wait=2.5)
            finish()
    story.check(is_deadline(lesson, error),
                "DeadlineExceeded about 0.6 s after the first byte, whatever the wall clock "
                "does (measure a deadline with time.monotonic(), never time.time())",
                describe(error) if error else f"the message {short(got)}")
    check_on_time(story, "DeadlineExceeded", ended - first_byte, 0.6)


@pytest.mark.task("05.deadline")
def test_recv_msg_by_uses_the_idle_timeout_before_a_message(lesson, story):
    reader, writer = pair()
    with reader, writer:
        story.step("the grader sent nothing (idle_timeout 0.6 s, message_deadline 3.0 s)")
        started = time.monotonic()
        got, error, ended = timed_recv_msg_by(lesson, story, reader, 100, 0.6, 3.0)
        deadline = getattr(lesson, "DeadlineExceeded", ())
        story.check(isinstance(error, TimeoutError) and not isinstance(error, deadline),
                    "a plain TimeoutError after idle_timeout (0.6 s) of silence (not "
                    "DeadlineExceeded: no message has begun, so this is the idle clock)",
                    describe(error) if error else repr(got))
        check_on_time(story, "the idle TimeoutError", ended - started, 0.6)


@pytest.mark.task("05.deadline")
def test_recv_msg_by_starts_the_deadline_at_the_first_byte(lesson, story):
    reader, writer = pair()
    with reader, writer:

        def late_sender():
            time.sleep(0.4)
            writer.sendall(frame("late but whole"))
        run_in_thread(late_sender, name="grader-send")
        story.step("the grader waited 0.4 s, then sent a whole frame at once")
        got, error = call_recv_msg_by(lesson, story, reader, 100, 1.0, 0.2)
        story.check(got == "late but whole",
                    "'late but whole': 0.4 s of silence is within idle_timeout (1.0 s), and "
                    "the deadline (0.2 s) only starts with the message's first byte",
                    describe(error) if error else repr(got))


@pytest.mark.task("05.deadline")
def test_recv_msg_by_checks_the_cap_before_the_body(lesson, story):
    too_large = getattr(lesson, "MessageTooLarge", ValueError)
    reader, writer = pair()
    with reader, writer:
        writer.sendall(struct.pack("!I", 1000) + b"y" * 1000)
        story.step("the grader sent a header announcing 1000 bytes, then the 1000 bytes")
        got, error = call_recv_msg_by(lesson, story, reader, 64, 1.0, 1.0)
        story.check(isinstance(error, too_large), "MessageTooLarge (1000 > max_msg=64)",
                    describe(error) if error else repr(got))
        reader.settimeout(0.5)
        try:
            left = reader.recv(8)
        except OSError:
            left = b""
        story.check(left == b"y" * 8, "the body still unread in the socket (check the size "
                    "BEFORE reading the body)", "the body had been read"
                    if not left else f"the socket held {short(left)}")
    reader, writer = pair()
    with reader, writer:
        writer.sendall(struct.pack("!I", 0xFFFFFFFF))
        story.step("the grader sent a header announcing 4 GiB, and no body")
        got, error = call_recv_msg_by(lesson, story, reader, 64, 5.0, 5.0)
        story.check(isinstance(error, too_large), "MessageTooLarge at once",
                    describe(error) if error else repr(got))


@pytest.mark.task("05.deadline")
def test_recv_msg_by_reports_a_closed_connection(lesson, story):
    for sent, what in [(b"", "nothing"), (struct.pack("!I", 10) + b"abc", "part of a frame")]:
        reader, writer = pair()
        with reader:
            writer.sendall(sent)
            writer.close()
            story.step(f"the grader sent {what} and closed its end")
            got, error = call_recv_msg_by(lesson, story, reader, 100, 1.0, 1.0)
            story.check(isinstance(error, ConnectionError), "ConnectionError (never a message)",
                        describe(error) if error else repr(got))
            story.check(str(error) not in ("", "None"), "a ConnectionError that says what "
                        "happened (the server logs it), e.g. 'peer closed after 3 of 4 bytes'",
                        describe(error))


@pytest.mark.task("05.deadline")
def test_a_message_of_exactly_max_msg_bytes_is_allowed(lesson, story):
    reader, writer = pair()
    with reader, writer:
        writer.sendall(frame("z" * 64) + frame("z" * 65))
        story.step("the grader sent a 64-byte message, then a 65-byte one (max_msg=64)")
        got, error = call_recv_msg_by(lesson, story, reader, 64, 1.0, 1.0)
        story.check(got == "z" * 64, "the 64-byte message (max_msg is the largest allowed)",
                    describe(error) if error else short(got))
        got, error = call_recv_msg_by(lesson, story, reader, 64, 1.0, 1.0)
        story.check(isinstance(error, getattr(lesson, "MessageTooLarge", ValueError)),
                    "MessageTooLarge for 65 bytes", describe(error) if error else short(got))


@pytest.mark.task("05.deadline")
def test_recv_msg_by_without_a_deadline_still_reads(lesson, story):
    reader, writer = pair()
    with reader, writer:
        data = frame("no deadline")
        writer.sendall(data[:2])
        run_in_thread(lambda: (time.sleep(0.1), writer.sendall(data[2:])), name="grader-send")
        story.step("the grader sent 2 bytes, then the rest 0.1 s later; message_deadline=None "
                   "(no deadline: the weak version the notebook compares)")
        got, error = call_recv_msg_by(lesson, story, reader, 100, 1.0, None)
        story.check(got == "no deadline", "'no deadline'", describe(error) if error else repr(got))


@pytest.mark.task("05.deadline")
def test_the_server_drops_a_trickling_client(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, idle_timeout=3.0, message_deadline=0.6,
                         logger=logs.logger)
    with serving(server, story) as address, connect(address, story) as client:
        expect(client, story, "echo hi", "hi")
        data = frame("echo " + "x" * 35)
        with trickling(client, story, data) as finish:
            expect_dropped(client, story, "message_deadline 0.6 s, from the first byte",
                           clock=0.6)
            sent = finish()
        story.check(sent < len(data), "to be dropped before the message was complete",
                    f"all {sent} bytes went out first")


@pytest.mark.task("05.deadline")
def test_the_server_tells_its_two_clocks_apart(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, idle_timeout=3.0, message_deadline=0.6,
                         logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as client:
            expect(client, story, "echo hi", "hi")
            client.sendall(b"\x00\x00\x00")
            first_byte = time.monotonic()
            story.step("the client sent 3 header bytes, then nothing")
            expect_dropped(client, story, "message_deadline 0.6 s, from the first header byte",
                           clock=0.6, since=first_byte)
    server = make_server(lesson.GuardedServer, story, idle_timeout=0.6, message_deadline=3.0,
                         logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as client:
            expect(client, story, "echo hi", "hi")
            story.step("the client then said nothing")
            expect_dropped(client, story, "idle_timeout 0.6 s, from the reply", clock=0.6)


# --------------------------------------------------------------------------- 05.cap


@pytest.mark.task("05.cap")
def test_the_eleventh_of_ten_is_told_busy_and_logged(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, idle_timeout=5.0, message_deadline=5.0,
                         logger=logs.logger)
    story.step("(max_clients left at its default, 10)")
    with serving(server, story) as address:
        holders = []
        try:
            for i in range(10):
                holders.append(connect(address, story))
                expect(holders[-1], story, f"echo holder {i}", f"holder {i}", who=f"client {i}")
            peer = expect_busy(address, story, "client 10 (the eleventh)")
            line = wait_for_line(logs, min_level=logging.WARNING, start=f"REJECT {peer}")
            story.check(line is not None, f"a warning 'REJECT {peer} ...' naming the refused "
                        "client", f"these warnings: {logs.lines(logging.WARNING)}")
            holders.pop(0).close()
            story.step("client 0 left")
            honest_client(server, story).close()
        finally:
            for sock in holders:
                sock.close()


@pytest.mark.task("05.cap")
def test_the_defaults(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, logger=logs.logger)
    story.check((server.max_clients, server.message_deadline) == (10, 10),
                "max_clients 10 and message_deadline 10 s by default",
                f"max_clients {server.max_clients!r}, message_deadline "
                f"{server.message_deadline!r}")
    with serving(server, story) as address:
        story.check(address[0] == "127.0.0.1" and address[1] >= 1024, "127.0.0.1 and a port "
                    "the OS chose (port 0 by default)", f"{address[0]}:{address[1]}")
        honest_client(server, story).close()


@pytest.mark.task("05.cap")
def test_the_server_listens_where_it_is_told(lesson, story, logs):
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = make_server(lesson.GuardedServer, story, port=port, logger=logs.logger)
    with serving(server, story) as address:
        story.check(tuple(address) == ("127.0.0.1", port), f"127.0.0.1:{port}, the port asked "
                    "for (pass host and port on to MessageServer)", f"{address[0]}:{address[1]}")
        honest_client(server, story).close()


@pytest.mark.task("05.cap")
def test_max_clients_is_the_cap(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, max_clients=2, idle_timeout=5.0,
                         message_deadline=5.0, logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as one, connect(address, story) as two:
            expect(one, story, "echo one", "one", who="client one")
            expect(two, story, "echo two", "two", who="client two")
            expect_busy(address, story, "client three")
            expect(one, story, "upper still", "STILL", who="client one")


@pytest.mark.task("05.cap")
def test_rejections_do_not_raise_the_cap(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, max_clients=1, idle_timeout=5.0,
                         message_deadline=5.0, logger=logs.logger)
    with serving(server, story) as address:
        for round_ in range(2):
            story.step(f"round {round_ + 1}: a holder takes the only slot")
            with honest_client(server, story) as holder:
                for i in range(3):
                    expect_busy(address, story, f"extra client {i}")
            story.step("the holder left")
            leave(honest_client(server, story), story)


def over_cap_clients(address, count, read_busy=True):
    """count raw connections over the cap, each with a tiny receive buffer. With read_busy,
    each reads its busy frame (so the server has dealt with it); else they never read."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.settimeout(WAIT)
        socks.append(sock)
        sock.connect(address)
        if read_busy:
            read_frame(sock)
    return socks


@pytest.mark.task("05.cap")
def test_a_flood_starts_no_thread_beyond_the_cap(lesson, story, logs, monkeypatch):
    server = make_server(lesson.GuardedServer, story, max_clients=3, idle_timeout=5.0,
                         message_deadline=5.0, logger=logs.logger)
    with serving(server, story) as address:
        holders = [honest_client(server, story) for _ in range(3)]
        story.step("three clients hold the three slots (max_clients=3)")
        before = set(threading.enumerate())
        started = []
        real_start = threading.Thread.start

        def counting_start(thread):
            if not thread.name.startswith("grader-"):
                started.append(thread.name)
            return real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", counting_start)
        flood = []
        try:
            story.step("the grader opened 50 more connections and held them all open, each "
                       "reading its busy reply")
            try:
                flood = over_cap_clients(address, 50)
            except OSError as exc:
                story.fail("each of the 50 to be told busy at once", describe(exc))
            alive = [t for t in threading.enumerate()
                     if t not in before and not t.name.startswith("grader-")]
        finally:
            monkeypatch.undo()
            for sock in flood + holders:
                sock.close()
        story.check(len(started) <= 1, "no new thread for a client over the cap: check the cap "
                    "in admit(), on the accept thread, BEFORE a thread is started",
                    f"{len(started)} threads started during the flood (e.g. {started[:2]})")
        story.check(len(alive) <= 1, "no more threads alive during the flood than before it",
                    f"{len(alive)} new threads alive while 50 clients were held open")


@pytest.mark.task("05.cap")
def test_clients_over_the_cap_that_never_read_cannot_stall_the_server(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, max_clients=1, idle_timeout=5.0,
                         message_deadline=5.0, logger=logs.logger)
    with serving(server, story) as address:
        holder = honest_client(server, story)
        story.step("a holder took the only slot; then 10 clients connected over the cap and "
                   "never read, never sent, never closed")
        silent = over_cap_clients(address, 10, read_busy=False)
        try:
            expect_busy(address, story, "one more client (it must still be answered at once)")
            leave(holder, story, who="the holder")
            story.step("the holder left")
            started = time.monotonic()
            honest_client(server, story, within=1.0).close()
            story.step(f"served {time.monotonic() - started:.2f} s after the holder left")
        finally:
            for sock in silent:
                sock.close()


# --------------------------------------------------------------------------- 05.release


def path_close(client, story):
    expect(client, story, "echo bye-less", "bye-less")
    story.step("the client closed the connection")


def path_quit(client, story):
    expect(client, story, "quit", "bye")
    expect_dropped(client, story, "after 'bye'")


def path_oversize(client, story, logs=None):
    client.sendall(struct.pack("!I", 0xFFFFFFFF))
    story.step("the client announced a 4 GiB message (max_msg=100)")
    expect_dropped(client, story, "a frame over max_msg")
    if logs is not None:
        line = wait_for_line(logs, "4294967295", start=f"DROP {peer_of(client)} ")
        story.check(line is not None, "a line 'DROP <peer> <why>' naming the size announced "
                    "(the MessageTooLarge message)", f"these lines: {logs.lines()}")


def path_idle(client, story):
    expect(client, story, "echo then silence", "then silence")
    story.step("the client said nothing more (idle_timeout 0.3 s)")
    expect_dropped(client, story, "idle timeout")


def path_deadline(client, story):
    with trickling(client, story, frame("echo " + "z" * 35)):
        expect_dropped(client, story, "message deadline")


def path_reset(client, story):
    client.sendall(struct.pack("!I", 50) + b"half a fr")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    story.step("the client sent half a frame, then reset the connection (SO_LINGER 0, close)")


def path_reset_at_once(client, story):
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    story.step("the client reset the connection before sending a byte (SO_LINGER 0, close)")


def path_reset_mid_header(client, story):
    client.sendall(b"\x00\x00")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    story.step("the client sent 2 header bytes, then reset the connection")


def path_reset_while_replying(client, story):
    client.sendall(b"".join(frame(f"echo {'r' * 90}") for _ in range(3000)))
    story.step("the client sent 3000 requests and read none of the replies (the server's "
               "4 KiB send buffer fills up)")
    time.sleep(0.2)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    story.step("then reset the connection while the server was replying")


def path_boom(client, story):
    """Needs a server made with make_server(..., boom=True)."""
    client.sendall(frame("boom"))
    story.step("the client sent 'boom': the grader's reply_to raises RuntimeError for it")
    expect_dropped(client, story, "an exception in the handler ends that connection")


@pytest.mark.task("05.release")
@pytest.mark.parametrize("path", [path_close, path_quit, path_oversize, path_idle, path_deadline,
                                  path_reset_at_once, path_reset_mid_header, path_reset,
                                  path_reset_while_replying, path_boom],
                         ids=["close", "quit", "oversize", "idle", "deadline",
                              "reset-before-first-byte", "reset-mid-header", "reset-mid-body",
                              "reset-while-replying", "exception"])
def test_the_slot_comes_back(lesson, story, logs, path):
    server = make_server(lesson.GuardedServer, story, boom=True, sndbuf=4096, max_clients=1,
                         max_msg=100, idle_timeout=0.3, message_deadline=0.5,
                         logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as client:
            path(client, story)
        # With max_clients=1, one leaked slot is the whole cap: nobody else gets in.
        honest = honest_client(server, story)
        # And one slot given back twice would raise the cap to 2.
        expect_busy(address, story, "a second client (the cap is still 1)")
        leave(honest, story)


# --------------------------------------------------------------------------- 05.survival


@pytest.mark.task("05.survival")
def test_hostile_input_is_survived(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, boom=True, max_msg=100, idle_timeout=1.0,
                         message_deadline=1.0, logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as client:
            expect(client, story, b"\xff\xfe not utf-8", "error: invalid UTF-8")
            expect(client, story, b"", "error: unknown command")
            expect(client, story, "__import__('os').system('true')", "error: unknown command")
            expect(client, story, "echo survived", "survived")
        with connect(address, story) as client:
            path_boom(client, story)
        with connect(address, story) as client:
            path_reset(client, story)
        with connect(address, story) as client:
            path_oversize(client, story, logs)
        with connect(address, story) as client:
            expect(client, story, "echo still here", "still here", who="a new client")
            expect(client, story, "upper and well", "AND WELL", who="a new client")


@pytest.mark.task("05.survival")
def test_concurrent_clients_get_their_own_replies(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, idle_timeout=2.0, message_deadline=2.0,
                         logger=logs.logger)
    story.step("8 clients, each in its own thread, sent 5 messages each, all at once")

    def client_session(i):
        with socket.create_connection(address, timeout=WAIT) as sock:
            for j in range(5):
                sock.sendall(frame(f"echo client {i} message {j}"))
                reply = read_frame(sock)
                if reply != f"client {i} message {j}".encode():
                    return f"client {i} got {short(reply)} for message {j}"
        return None

    with serving(server, story) as address:
        calls = [run_in_thread(client_session, i, name=f"grader-client-{i}") for i in range(8)]
        for i, call in enumerate(calls):
            try:
                problem = call.result(timeout=WAIT)
            except NotImplementedError:
                raise
            except Exception as exc:
                problem = f"client {i}: {describe(exc)}"
            story.check(problem is None, "every client to get its own replies, in order",
                        str(problem))


@pytest.mark.task("05.survival")
def test_a_slow_crowd_cannot_keep_an_honest_client_out(lesson, story, logs):
    server = make_server(lesson.GuardedServer, story, max_clients=3, idle_timeout=0.3,
                         message_deadline=0.5, logger=logs.logger)
    with serving(server, story) as address:
        leave(honest_client(server, story), story)
        attackers = [admitted(address, story, logs) for _ in range(3)]
        try:
            with contextlib.ExitStack() as stack:
                for sock in attackers:
                    stack.enter_context(trickling(sock, story, frame("echo " + "s" * 35)))
                for sock in attackers:
                    story.check(wait_for_line(logs, "CONNECT", peer_of(sock)) is not None,
                                f"a line 'CONNECT {peer_of(sock)}' in the log (the attacker "
                                "admitted)", f"these lines: {logs.lines()}")
                story.step("three attackers trickle one byte every 0.1 s; each needs 4.0 s; "
                           "they hold all three slots")
                honest_client(server, story, within=2.5).close()
        finally:
            for sock in attackers:
                sock.close()
