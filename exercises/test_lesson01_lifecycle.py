"""Graders for lesson 01, the server lifecycle.  Run: pytest exercises -k lesson01"""
import contextlib
import gc
import socket
import time
import warnings

import pytest

import peers
from graderkit import (LATE, LOOPBACK, WAIT, check_on_time, describe, read_until_close,
                       run_in_thread, short)

# The time limit the graders hand to serve_one_echo/echo_once when they test it: short, and far
# from WAIT (the grader's own patience), so "too late" and "never" are told apart.
LIMIT = 0.5


@pytest.fixture
def lesson(graded):
    return graded("lesson01_lifecycle")


@contextlib.contextmanager
def grader_listener(small=False):
    """A listener made by the grader itself, so serve_one_echo is graded on its own. small:
    tiny buffers, inherited by the accepted socket, so its sends fill up after a few KiB."""
    listener = peers.listener(small)
    try:
        yield listener
    finally:
        with contextlib.suppress(OSError):  # wakes a serve_one_echo stuck in accept()
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()


@pytest.fixture
def own_listener():
    with grader_listener() as listener:
        yield listener


def make(lesson, story, **kwargs):
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    story.step(f"called make_listener({args})")
    listener = lesson.make_listener(**kwargs)
    story.check(isinstance(listener, socket.socket), "a socket.socket",
                f"{type(listener).__name__}: {short(listener)}")
    return listener


# --------------------------------------------------------------------------- 01.listener


@pytest.mark.task("01.listener")
def test_listener_binds_loopback_on_a_free_port(lesson, story):
    with make(lesson, story) as listener:
        host, port = listener.getsockname()[:2]
        story.step("read its address with getsockname()")
        story.check(host == LOOPBACK, "host 127.0.0.1 (loopback: only this machine can connect)",
                    f"host {host!r}" + (" — that is every network interface, reachable from "
                                        "other machines" if host == "0.0.0.0" else ""))
        story.check(port != 0, "a real port chosen by the OS (not 0)", f"port {port}")
        story.check(listener.type == socket.SOCK_STREAM, "a TCP (SOCK_STREAM) socket",
                    str(listener.type))


@pytest.mark.task("01.listener")
def test_listener_rebinds_a_port_still_in_time_wait(lesson, story):
    port = peers.port_in_time_wait()
    story.step("served one client on a port with the server closing first, then closed that "
               "server: the port now holds a connection in TIME_WAIT, as after a restart")
    try:
        listener = make(lesson, story, port=port)
    except NotImplementedError:
        raise
    except OSError as exc:
        story.fail("make_listener to bind that port at once (SO_REUSEADDR, set BEFORE bind(): "
                   "set after, it comes too late to help)", describe(exc))
    with listener:
        story.check(listener.getsockname()[1] == port, f"the listener on port {port}",
                    repr(listener.getsockname()))


@pytest.mark.task("01.listener")
def test_listener_closes_its_socket_when_bind_fails(lesson, story):
    with peers.listener() as taken:
        port = taken.getsockname()[1]
        story.step("another server is listening on a port; called make_listener(port=<it>)")
        gc.collect()  # so only a socket leaked by this call can warn below
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            try:
                leftover = lesson.make_listener(port=port)
            except NotImplementedError:
                raise
            except OSError:
                leftover = None
            else:
                leftover.close()
            gc.collect()  # frees the socket object if nothing else holds it
    story.check(leftover is None, "OSError ('Address already in use')",
                "it returned a listener")
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)
             and "socket" in str(w.message)]
    story.check(not leaks, "the half-made socket closed before the error is raised (a server "
                "retrying bind() would otherwise leak one file descriptor per try)",
                f"it was left open: {leaks[0].message if leaks else ''}")


@pytest.mark.task("01.listener")
def test_two_listeners_by_default_get_two_free_ports(lesson, story):
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(2):
            try:
                ports.append(stack.enter_context(make(lesson, story)).getsockname()[1])
            except OSError as exc:
                story.fail("a second listener on another free port (port 0 by default)",
                           describe(exc))
        story.check(ports[0] != ports[1], "two different ports (port 0 by default: the OS picks "
                    "a free one each time)", f"ports {ports}")


@pytest.mark.task("01.listener")
def test_listener_accepts_a_client(lesson, story):
    with make(lesson, story) as listener:
        listener.settimeout(WAIT)
        address = listener.getsockname()
        try:
            with socket.create_connection(address, timeout=WAIT):
                story.step("connected a client to it")
                conn, _ = listener.accept()
                conn.close()
        except OSError as exc:
            story.fail("the listener to be listening (connect + accept succeed)", describe(exc))


@pytest.mark.task("01.listener")
def test_listener_uses_the_port_it_is_given(lesson, story):
    with socket.socket() as probe:  # ask the OS for a free port, then hand it over
        probe.bind((LOOPBACK, 0))
        free_port = probe.getsockname()[1]
    with make(lesson, story, port=free_port) as listener:
        got = listener.getsockname()[1]
        story.check(got == free_port, f"the listener on the port it was given ({free_port})",
                    f"port {got}")


# --------------------------------------------------------------------------- 01.echo_server


@pytest.mark.task("01.echo_server")
def test_echo_server_echoes_every_piece_and_closes(lesson, own_listener, story):
    pieces = [b"hello", b", ", b"world"]
    story.step("called serve_one_echo(listener, timeout=2.0) in a background thread")
    server = run_in_thread(lesson.serve_one_echo, own_listener, 2.0)
    server.raise_if_failed()
    with socket.create_connection(own_listener.getsockname(), timeout=WAIT) as client:
        story.step("connected a client")
        for piece in pieces:
            client.sendall(piece)
            time.sleep(0.02)  # separate sends, so a server that reads once misses some
        story.step(f"sent {pieces!r} as three separate sends")
        client.shutdown(socket.SHUT_WR)
        story.step("shut down the client's sending side (the server's recv now returns b'')")
        reply, how = read_until_close(client)
    story.check(reply == b"hello, world", "b'hello, world' echoed back", short(reply))
    story.check(how == "closed", "the server to close the connection after echoing",
                f"the connection {how}")
    count = server.result_for(story, "serve_one_echo to return the byte count")
    story.check(count == 12, "serve_one_echo to return 12 (bytes echoed)", repr(count))


@pytest.mark.task("01.echo_server")
def test_echo_server_echoes_a_large_payload_to_a_slow_reader(lesson, story):
    payload = bytes(range(256)) * 1024  # 256 KiB: far more than the socket buffers hold
    with grader_listener(small=True) as listener:
        story.step("the server's socket has a 4 KiB send buffer (SO_SNDBUF), the client a 4 KiB "
                   "receive buffer, and the client reads slowly: the server's sends fill up")
        story.step("called serve_one_echo(listener, timeout=2.0) in a background thread")
        server = run_in_thread(lesson.serve_one_echo, listener, 2.0)
        server.raise_if_failed()
        with peers.client(listener.getsockname(), small=True) as client:
            def send_all_then_half_close():
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)
            sender = run_in_thread(send_all_then_half_close)
            story.step(f"sent {len(payload)} bytes, then half-closed, while reading the echo "
                       "4 KiB at a time")
            reply, how = peers.read_slowly(client, limit=2 * len(payload))
            sender.result_for(story, "the client's sendall to finish")
    same = "identical" if reply == payload[:len(reply)] else "different"
    story.check(reply == payload, f"all {len(payload)} bytes back, in order (send() may write "
                "only part of a chunk when the buffer is full: sendall() writes it all)",
                f"{len(reply)} bytes, {same} so far, then the connection {how}")
    count = server.result_for(story, f"serve_one_echo to return {len(payload)}")
    story.check(count == len(payload), f"a return value of {len(payload)}", repr(count))


@pytest.mark.task("01.echo_server")
def test_echo_server_copes_with_a_client_that_sends_nothing(lesson, own_listener, story):
    story.step("called serve_one_echo(listener, timeout=2.0) in a background thread")
    server = run_in_thread(lesson.serve_one_echo, own_listener, 2.0)
    server.raise_if_failed()
    with socket.create_connection(own_listener.getsockname(), timeout=WAIT) as client:
        client.shutdown(socket.SHUT_WR)
        story.step("connected and immediately half-closed, sending nothing")
        reply, how = read_until_close(client)
    story.check(reply == b"" and how == "closed", "an empty reply and a clean close",
                f"{short(reply)}, connection {how}")
    count = server.result_for(story, "serve_one_echo to return 0")
    story.check(count == 0, "serve_one_echo to return 0", repr(count))


def expect_timeout(story, elapsed, error, what):
    """serve_one_echo/echo_once, given timeout=LIMIT, must give up with TimeoutError on time."""
    story.check(elapsed is not None, f"{what} to give up with TimeoutError after about {LIMIT} s",
                f"still waiting after {LATE * LIMIT + 1:.1f} s (is there a timeout on every "
                "blocking call: accept, recv, connect?)")
    story.check(isinstance(error, TimeoutError), f"{what} to raise TimeoutError",
                describe(error) if error else "it returned normally")
    story.step(f"it raised TimeoutError after {elapsed:.2f} s")
    check_on_time(story, f"{what} to give up", elapsed, LIMIT)


@pytest.mark.task("01.echo_server")
def test_echo_server_gives_up_on_a_client_that_never_sends(lesson, own_listener, story):
    with peers.client(own_listener.getsockname()) as client:
        story.step("a client connected and then said nothing, without closing")
        story.step(f"called serve_one_echo(listener, timeout={LIMIT})")
        elapsed, _, error = peers.timed(lesson.serve_one_echo, own_listener, LIMIT,
                                        wait=LATE * LIMIT + 1)
        expect_timeout(story, elapsed, error, "serve_one_echo")
        _, how = read_until_close(client)
        story.check(how in ("closed", "reset"), "the client's connection closed",
                    f"the connection {how}")


@pytest.mark.task("01.echo_server")
def test_echo_server_gives_up_when_no_client_comes(lesson, own_listener, story):
    story.step(f"called serve_one_echo(listener, timeout={LIMIT}); no client ever connects")
    elapsed, _, error = peers.timed(lesson.serve_one_echo, own_listener, LIMIT,
                                    wait=LATE * LIMIT + 1)
    expect_timeout(story, elapsed, error, "serve_one_echo")


@pytest.mark.parametrize("stage", ["before-sending", "while-the-server-sends"])
@pytest.mark.task("01.echo_server")
def test_echo_server_survives_a_reset_and_the_listener_serves_again(lesson, own_listener,
                                                                    story, stage):
    story.step("called serve_one_echo(listener, timeout=3.0) in a background thread")
    server = run_in_thread(lesson.serve_one_echo, own_listener, 3.0)
    server.raise_if_failed()
    client = peers.client(own_listener.getsockname(), small=True)
    if stage == "while-the-server-sends":
        peers.flood_until_stuck(client, stall=0.1)
        story.step("a client with 4 KiB buffers sent until nothing more went through, reading "
                   "none of the echo: the server is stuck sending")
    peers.reset(client)
    reset_at = time.monotonic()
    story.step("the client reset the connection (SO_LINGER 0 then close: an RST)")
    try:
        server.result(timeout=1.5)
    except NotImplementedError:
        raise
    except TimeoutError as exc:
        if time.monotonic() - reset_at >= 1.5:
            story.fail("serve_one_echo to end soon after the reset (a ConnectionError, or a "
                       "return), not to wait for its 3 s timeout", describe(exc))
    except OSError:
        pass  # ConnectionResetError / BrokenPipeError: the honest way to report a reset
    except Exception as exc:
        story.fail("serve_one_echo to end with ConnectionError (or return)", describe(exc))
    story.step("serve_one_echo ended; called it again on the same listener, for a new client")
    again = run_in_thread(lesson.serve_one_echo, own_listener, 2.0)
    with peers.client(own_listener.getsockname()) as second:
        second.sendall(b"still there?")
        second.shutdown(socket.SHUT_WR)
        reply, how = read_until_close(second)
    story.check(reply == b"still there?", "the next client served as usual",
                f"{short(reply)}, connection {how}")
    again.result_for(story, "serve_one_echo to return for the second client")


# --------------------------------------------------------------------------- 01.echo_client


def grader_echo_server(listener, piece_size=3):
    """The grader's own one-shot server: read until the client half-closes, then send it all
    back in small pieces (so a client that reads once gets only part). Returns what it got."""
    listener.settimeout(WAIT)
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(WAIT)
        received, how = read_until_close(conn)
        if how != "closed":
            return received, how
        for i in range(0, len(received), piece_size):
            conn.sendall(received[i:i + piece_size])
            time.sleep(0.002)
        return received, how


@pytest.mark.parametrize("data", [b"ping", bytes(range(256)), "héllo wörld ✓".encode()],
                         ids=["ascii", "all-byte-values", "utf8"])
@pytest.mark.task("01.echo_client")
def test_echo_client_sends_half_closes_and_reads_to_the_end(lesson, own_listener, story, data):
    server = run_in_thread(grader_echo_server, own_listener)
    story.step("the grader started its own echo server, which replies only after the client "
               "half-closes, in 3-byte pieces")
    host, port = own_listener.getsockname()
    story.step(f"called echo_once('{host}', <port>, {short(data)}, timeout=2.0)")
    client = run_in_thread(lesson.echo_once, host, port, data, 2.0)
    try:
        reply = client.result(timeout=4.0)
    except NotImplementedError:
        raise
    except Exception as exc:  # say what the server saw: it usually explains the failure
        seen, how = server.result()
        story.step(f"the server had received {short(seen)} and then: {how}")
        story.fail(f"echo_once to return {short(data)}",
                   describe(exc) + (" (did you shutdown(SHUT_WR) after sending?)"
                                    if how == "timeout" else ""))
    seen, how = server.result()
    story.check(seen == data, f"the server to receive {short(data)}", short(seen))
    story.check(reply == data, f"echo_once to return {short(data)} (all the pieces)",
                short(reply))


@pytest.mark.task("01.echo_client")
def test_echo_client_sends_a_large_payload_to_a_slow_reader(lesson, story):
    payload = bytes(range(256)) * 1024
    with grader_listener(small=True) as listener:
        def slow_server():
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                got, how = peers.read_slowly(conn, limit=2 * len(payload))
                if how == "closed":
                    conn.sendall(got)
                return got, how
        server = run_in_thread(slow_server)
        story.step("the grader's server has 4 KiB buffers and reads slowly, 4 KiB at a time; it "
                   "echoes everything once the client half-closes")
        host, port = listener.getsockname()
        story.step(f"called echo_once('{host}', <port>, <{len(payload)} bytes>, timeout=2.0)")
        client = run_in_thread(lesson.echo_once, host, port, payload, 2.0)
        client.raise_if_failed()
        seen, how = server.result_for(story, "the grader's server to finish", timeout=2 * WAIT)
        story.check(seen == payload, f"the server to receive all {len(payload)} bytes (sendall, "
                    "not send: send may write only part when the buffer is full)",
                    f"{len(seen)} bytes, then the connection {how}")
        reply = client.result_for(story, f"echo_once to return the {len(payload)} bytes")
        story.check(reply == payload, f"all {len(payload)} bytes back", f"{len(reply)} bytes")


@pytest.mark.task("01.echo_client")
def test_echo_client_gives_up_on_a_server_that_never_replies(lesson, story):
    with peers.silent_server() as (host, port):
        story.step("the grader's server accepts, reads everything and never replies or closes")
        story.step(f"called echo_once('{host}', <port>, b'anyone?', timeout={LIMIT})")
        elapsed, _, error = peers.timed(lesson.echo_once, host, port, b"anyone?", LIMIT,
                                        wait=LATE * LIMIT + 1)
        expect_timeout(story, elapsed, error, "echo_once")


def resetting_server(listener, stage):
    """Accept one client and reset it: at once, or after echoing half of what it sent."""
    conn, _ = listener.accept()
    conn.settimeout(WAIT)
    if stage == "mid-reply":
        received, _ = read_until_close(conn)
        conn.sendall(received[: len(received) // 2])
        time.sleep(0.05)  # the half reply reaches the client before the reset does
    peers.reset(conn)


@pytest.mark.parametrize("stage", ["on-connect", "mid-reply"])
@pytest.mark.task("01.echo_client")
def test_echo_client_reports_a_reset_as_an_error(lesson, own_listener, story, stage):
    run_in_thread(resetting_server, own_listener, stage)
    story.step("the grader's server resets the connection (an RST) "
               + ("as soon as it accepts" if stage == "on-connect" else
                  "after sending back only half of the data"))
    host, port = own_listener.getsockname()
    data = b"0123456789" * 100
    story.step(f"called echo_once('{host}', <port>, <1000 bytes>, timeout=2.0)")
    elapsed, reply, error = peers.timed(lesson.echo_once, host, port, data, 2.0, wait=WAIT + 1)
    story.check(elapsed is not None, "echo_once to end", f"still running after {WAIT + 1} s")
    story.check(isinstance(error, OSError) and not isinstance(error, TimeoutError),
                "an error at once, e.g. ConnectionResetError (a reset is a failure to report, "
                "not the end of a reply)",
                describe(error) if error else f"it returned {short(reply)}")
