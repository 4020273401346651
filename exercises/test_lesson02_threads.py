"""Graders for lesson 02, many clients with threads.  Run: pytest exercises -k lesson02"""
import socket
import time

import pytest

from graderkit import LOOPBACK, WAIT, connect, describe, is_closed, running, short


@pytest.fixture
def lesson(graded):
    return graded("lesson02_threads")


def echo_round(sock, story, data: bytes, who: str = "the client"):
    """Send data and expect exactly it back; returns the seconds the reply took."""
    sock.sendall(data)
    story.step(f"{who} sent {short(data)}")
    started = time.monotonic()
    reply = bytearray()
    try:
        while len(reply) < len(data):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    except OSError as exc:
        story.fail(f"{short(data)} echoed back to {who} within {WAIT} s",
                   f"{short(bytes(reply))} and then {describe(exc)}")
    story.check(bytes(reply) == data, f"{short(data)} echoed back to {who}", short(bytes(reply)))
    return time.monotonic() - started


# --------------------------------------------------------------------------- 02.lifecycle


@pytest.mark.task("02.lifecycle")
def test_start_listens_on_loopback_and_echoes(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=5), story) as address:
        story.check(address[0] == LOOPBACK, "server.address on 127.0.0.1", repr(address))
        story.check(address[1] != 0, "a real port in server.address", repr(address))
        with connect(address, story) as client:
            echo_round(client, story, b"hello")
            echo_round(client, story, b"and again")


@pytest.mark.task("02.lifecycle")
def test_stop_frees_the_port(lesson, story):
    server = lesson.ThreadedEchoServer(idle_timeout=5)
    with running(server, story) as address:
        with connect(address, story) as client:
            echo_round(client, story, b"ping")
    story.step("stopped the server, then tried to connect to the same port")
    try:
        with socket.create_connection(address, timeout=WAIT):
            story.fail("the connection to be refused (nothing listening after stop())",
                       "a connection was accepted: the listener is still open")
    except ConnectionRefusedError:
        pass
    except OSError as exc:
        story.fail("ConnectionRefusedError", describe(exc))
    story.step("bound a fresh listener to the same port")
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            again.bind(address)
            again.listen()
        except OSError as exc:
            story.fail("the port to be free for a new server", describe(exc))


@pytest.mark.task("02.lifecycle")
def test_stop_disconnects_connected_clients(lesson, story):
    server = lesson.ThreadedEchoServer(idle_timeout=30)  # long: stop() must not wait for it
    with running(server, story) as address:
        client = connect(address, story)
        echo_round(client, story, b"still here")
        story.step("left the client connected and silent while stop() runs")
    with client:
        how = is_closed(client)
        story.check(how in ("closed", "reset"),
                    "stop() to close the connection of a client still connected", how)


# --------------------------------------------------------------------------- 02.concurrency


@pytest.mark.task("02.concurrency")
def test_a_silent_client_does_not_block_the_next(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=5), story) as address:
        with connect(address, story):  # the first client: connected, silent
            story.step("the first client stays connected and says nothing")
            with connect(address, story) as second:
                second.settimeout(1.0)
                waited = echo_round(second, story, b"am I served?", who="the second client")
        story.step(f"the second client's reply came after {waited:.2f} s")


@pytest.mark.task("02.concurrency")
def test_interleaved_clients_each_get_their_own_replies(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=5), story) as address:
        clients = [connect(address, story) for _ in range(4)]
        try:
            for round_ in range(3):
                for i, client in enumerate(clients):
                    echo_round(client, story, f"client {i} round {round_}".encode(),
                               who=f"client {i}")
        finally:
            for client in clients:
                client.close()


# --------------------------------------------------------------------------- 02.idle_timeout


@pytest.mark.task("02.idle_timeout")
def test_a_silent_client_is_disconnected(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=0.3), story) as address:
        with connect(address, story) as client:
            story.step("the client sends nothing; the server's idle_timeout is 0.3 s")
            started = time.monotonic()
            how = is_closed(client, wait=WAIT)
            story.check(how in ("closed", "reset"),
                        f"the server to hang up within {WAIT} s", how)
            story.step(f"the server hung up after {time.monotonic() - started:.2f} s")


@pytest.mark.task("02.idle_timeout")
def test_a_busy_client_outlives_the_idle_timeout(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=0.3), story) as address:
        with connect(address, story) as client:
            story.step("the client talks every 0.1 s for 0.6 s in all; idle_timeout is 0.3 s")
            for i in range(6):
                echo_round(client, story, f"tick {i}".encode())
                time.sleep(0.1)
