"""Graders for lesson 01, the server lifecycle.  Run: pytest exercises -k lesson01"""
import socket
import time

import pytest

from graderkit import LOOPBACK, WAIT, describe, read_until_close, run_in_thread, short


@pytest.fixture
def lesson(graded):
    return graded("lesson01_lifecycle")


@pytest.fixture
def own_listener():
    """A listener made by the grader itself, so serve_one_echo is graded on its own."""
    with socket.create_server((LOOPBACK, 0)) as listener:
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
def test_listener_sets_reuseaddr(lesson, story):
    with make(lesson, story) as listener:
        value = listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        story.step("read the SO_REUSEADDR option with getsockopt()")
        story.check(value != 0, "SO_REUSEADDR switched on (so a restart does not fail with "
                    "'Address already in use')", f"SO_REUSEADDR = {value}")


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
def test_echo_server_handles_a_large_payload(lesson, own_listener, story):
    payload = bytes(range(256)) * 1024  # 256 KiB: more than one recv can return
    story.step("called serve_one_echo(listener, timeout=2.0) in a background thread")
    server = run_in_thread(lesson.serve_one_echo, own_listener, 2.0)
    server.raise_if_failed()
    with socket.create_connection(own_listener.getsockname(), timeout=WAIT) as client:
        def send_all_then_half_close():
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
        sender = run_in_thread(send_all_then_half_close)
        story.step(f"sent {len(payload)} bytes while reading the echo, then half-closed")
        reply, how = read_until_close(client, limit=2 * len(payload))
        sender.result()
    story.check(reply == payload, f"all {len(payload)} bytes back, in order",
                f"{len(reply)} bytes, {'identical' if reply == payload[:len(reply)] else 'different'}"
                f" so far, then the connection {how}")
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
