"""Graders for lesson 02, many clients with threads.  Run: pytest exercises -k lesson02"""
import contextlib
import errno
import gc
import os
import socket
import threading
import time

import pytest

import peers
from graderkit import (LATE, LOOPBACK, WAIT, connect, describe, expect_dropped, is_closed,
                       new_threads_after, run_in_thread, running, short)

# The idle timeout the graders set when they time it: short, and far from WAIT (the grader's
# own patience), so a timeout twice too long and no timeout at all fail differently.
IDLE = 0.6


@pytest.fixture
def lesson(graded):
    return graded("lesson02_threads")


@pytest.fixture(autouse=True)
def no_thread_crashes():
    """Fails the test if a thread of the server dies with an unhandled exception: a client's
    error (a timeout, a reset, a bug) must end that client cleanly, not as a crash trace."""
    crashes = []
    previous = threading.excepthook

    def record(args):
        if args.thread is None or not args.thread.name.startswith("grader-"):
            crashes.append(f"{args.thread.name if args.thread else '?'}: "
                           f"{describe(args.exc_value) if args.exc_value else args.exc_type}")
        previous(args)

    threading.excepthook = record
    try:
        yield
    finally:
        threading.excepthook = previous
    if crashes:
        pytest.fail("A thread of your server ended with an unhandled exception:\n  "
                    + "\n  ".join(crashes[:3]) + "\nCatch what a client's thread can raise "
                    "(TimeoutError, ConnectionError, ...), close the connection, and let the "
                    "thread end normally.", pytrace=False)


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


@pytest.mark.task("02.lifecycle")
def test_two_servers_by_default_listen_on_two_free_ports(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=5), story) as first:
        story.step("started a second server with the default port, while the first runs")
        second_server = lesson.ThreadedEchoServer(idle_timeout=5)
        with running(second_server, story) as second:
            story.check(first[1] != second[1], "two different ports (port 0 by default: the "
                        "OS picks a free one)", f"{first[1]} and {second[1]}")
            with connect(second, story) as client:
                echo_round(client, story, b"second server", who="a client of the second")


@pytest.mark.task("02.lifecycle")
def test_start_uses_the_port_it_is_given(lesson, story):
    with socket.socket() as probe:  # ask the OS for a free port, then hand it over
        probe.bind((LOOPBACK, 0))
        free_port = probe.getsockname()[1]
    story.step(f"created ThreadedEchoServer(port={free_port})")
    with running(lesson.ThreadedEchoServer(port=free_port, idle_timeout=5), story) as address:
        story.check(address[1] == free_port, f"server.address on port {free_port}",
                    repr(address))


@pytest.mark.task("02.lifecycle")
def test_stop_is_harmless_before_start_and_twice(lesson, story):
    server = lesson.ThreadedEchoServer(idle_timeout=5)
    story.step("called stop() on a server that was never started")
    try:
        run_in_thread(server.stop, name="grader-stop").result(timeout=WAIT)
    except NotImplementedError:
        raise
    except Exception as exc:
        story.fail("stop() before start() to do nothing (a cleanup path may call it)",
                   describe(exc))
    with running(server, story) as address:
        with connect(address, story) as client:
            echo_round(client, story, b"ping")
    story.step("called stop() a second time")
    try:
        run_in_thread(server.stop, name="grader-stop").result(timeout=WAIT)
    except Exception as exc:
        story.fail("a second stop() to do nothing", describe(exc))


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
def test_a_silent_client_is_disconnected_on_time(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=IDLE), story) as address:
        with connect(address, story) as client:
            since = time.monotonic()
            story.step(f"the client sends nothing; the server's idle_timeout is {IDLE} s")
            expect_dropped(client, story, "silent since it connected", clock=IDLE, since=since)


@pytest.mark.task("02.idle_timeout")
def test_the_idle_clock_counts_from_the_last_byte(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=IDLE), story) as address:
        with connect(address, story) as client:
            story.step(f"idle_timeout is {IDLE} s; the client talks every {IDLE / 3:.1f} s for "
                       f"{2 * IDLE:.1f} s (twice the timeout), then goes silent")
            started = time.monotonic()
            i = 0
            while time.monotonic() - started < 2 * IDLE:
                echo_round(client, story, f"tick {i}".encode())
                last_byte = time.monotonic()
                time.sleep(IDLE / 3)
                i += 1
            expect_dropped(client, story, "silent since its last message", clock=IDLE,
                           since=last_byte)


@pytest.mark.task("02.idle_timeout")
def test_a_client_that_never_reads_is_dropped(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=IDLE), story) as address:
        with peers.client(address, small=True) as client:
            story.step("a client with 4 KiB buffers sends as fast as it can and never reads: "
                       "the echo piles up until the server's sends block")
            last_byte = peers.flood_until_stuck(client, stall=0.15)
            story.step(f"nothing more went through; idle_timeout is {IDLE} s, and a send that "
                       "cannot progress is idle too")
            hung_up = peers.wait_for_hangup(client, wait=LATE * IDLE + 1)
            story.check(hung_up is not None, f"the server to hang up within {LATE * IDLE:.2f} s "
                        "(a timeout on the socket bounds sendall too)",
                        f"still connected {LATE * IDLE + 1:.1f} s later")
            elapsed = hung_up - last_byte
            story.step(f"the server hung up {elapsed:.2f} s after the last byte went through")
            # The server's send blocked a moment before our last byte went in, so the early
            # bound is loose; the late bound is the one that matters.
            story.check(0.5 * IDLE <= elapsed <= LATE * IDLE,
                        f"the hang-up about {IDLE} s after the client stopped reading (between "
                        f"{0.5 * IDLE:.2f} and {LATE * IDLE:.2f} s)", f"after {elapsed:.2f} s")


# --------------------------------------------------------------------------- thread hygiene


def retained_leftovers():
    """Finished threads and closed sockets that something still holds on to: a server that
    forgets its finished clients holds none of them."""
    gc.collect()
    threads = sockets = 0
    for obj in gc.get_objects():
        if isinstance(obj, threading.Thread) and obj.ident is not None and not obj.is_alive():
            threads += 1
        elif isinstance(obj, socket.socket) and obj.fileno() == -1:
            sockets += 1
    return threads, sockets


@pytest.mark.task("02.concurrency")
def test_finished_clients_are_forgotten(lesson, story):
    clients = 200
    with running(lesson.ThreadedEchoServer(idle_timeout=5), story) as address:
        baseline = set(threading.enumerate())
        threads_before, sockets_before = retained_leftovers()
        story.step(f"{clients} clients, one after another: connect, echo b'hi', close")
        for i in range(clients):
            with socket.create_connection(address, timeout=WAIT) as client:
                client.sendall(b"hi")
                reply = client.recv(16)
                if reply != b"hi":
                    story.fail(f"client {i} to get b'hi' back", short(reply))
        story.step("all of them have closed")
        alive = new_threads_after(baseline, grace=1.5)
        story.check(not alive, "each client's thread to end when its client leaves",
                    f"{len(alive)} client threads still running")
        threads_after, sockets_after = retained_leftovers()
        threads_kept = threads_after - threads_before
        sockets_kept = sockets_after - sockets_before
        story.step(f"the process now holds {threads_kept} more finished threads and "
                   f"{sockets_kept} more closed sockets than before the clients came")
        story.check(threads_kept < 20 and sockets_kept < 20,
                    "finished clients forgotten: remove each client's socket and thread from "
                    "your bookkeeping when it leaves (or the server grows with every client)",
                    f"{threads_kept} finished threads and {sockets_kept} closed sockets kept "
                    f"after {clients} clients")


@contextlib.contextmanager
def failing_accept(address, for_seconds):
    """Every accept() on the listener at `address` fails with EMFILE ('too many open files',
    what a busy server meets) for `for_seconds` from the first call. Yields the list of the
    failed calls' times. The only stand-in in these graders: running out of file descriptors
    for real would starve the grader too."""
    real_accept = socket.socket.accept
    failures = []

    def accept(sock):
        try:
            mine = sock.getsockname()[:2] == tuple(address)
        except OSError:
            mine = False
        if mine and (not failures or time.monotonic() - failures[0] < for_seconds):
            failures.append(time.monotonic())
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_accept(sock)

    socket.socket.accept = accept
    try:
        yield failures
    finally:
        socket.socket.accept = real_accept


@pytest.mark.task("02.concurrency")
def test_the_accept_loop_survives_accept_errors(lesson, story):
    with running(lesson.ThreadedEchoServer(idle_timeout=5), story) as address:
        with failing_accept(address, for_seconds=0.3) as failures:
            story.step("from now on, for 0.3 s, every accept() fails with EMFILE (too many open "
                       "files), as on a busy server")
            with connect(address, story) as first:
                first.settimeout(WAIT + 0.5)
                echo_round(first, story, b"served after the errors?", who="a first client")
            waited = time.monotonic()
            while not failures and time.monotonic() - waited < WAIT:
                time.sleep(0.01)
            story.check(bool(failures), "the server to call accept() again", "it never did")
            while time.monotonic() - failures[0] < 0.35:
                time.sleep(0.01)
        story.step(f"accept() failed {len(failures)} times in all")
        with connect(address, story) as second:
            echo_round(second, story, b"and after that?", who="a second client")
        story.check(len(failures) <= 100, "a short pause after a failed accept() (a persistent "
                    "error must not spin the CPU)", f"{len(failures)} failed calls in 0.3 s")


@contextlib.contextmanager
def thread_start_fails_once(older: set):
    """The next thread started by a server thread (one not in `older`, not the grader's) fails
    to start, with the RuntimeError Python raises when the OS has no threads left. Yields the
    list of the refused threads. A stand-in: exhausting the OS's threads for real would starve
    the grader."""
    real_start = threading.Thread.start
    refused = []

    def start(thread):
        starter = threading.current_thread()
        if not refused and starter not in older and not starter.name.startswith("grader-"):
            refused.append(thread)
            raise RuntimeError("can't start new thread")
        return real_start(thread)

    threading.Thread.start = start
    try:
        yield refused
    finally:
        threading.Thread.start = real_start


@pytest.mark.task("02.concurrency")
def test_the_accept_loop_survives_a_thread_that_cannot_start(lesson, story):
    older = set(threading.enumerate())  # the main thread, and any left by earlier tests
    with running(lesson.ThreadedEchoServer(idle_timeout=5), story) as address:
        with thread_start_fails_once(older) as refused:
            story.step("from now on, the next thread your server starts fails with "
                       "RuntimeError(\"can't start new thread\"), as when the OS has none left")
            with connect(address, story) as unlucky:
                story.step("a first client connected: its thread cannot start")
                how = is_closed(unlucky, wait=WAIT)
                story.check(bool(refused), "the server to try to start a thread for it",
                            "it did not start one")
                story.check(how in ("closed", "reset"), "the server to close that client's "
                            "connection (it cannot be served)", how)
        with connect(address, story) as lucky:
            echo_round(lucky, story, b"and me?", who="the next client")


@pytest.mark.parametrize("stage", ["on-connect", "mid-echo"])
@pytest.mark.task("02.concurrency")
def test_a_reset_client_does_not_hurt_the_server(lesson, story, stage):
    with running(lesson.ThreadedEchoServer(idle_timeout=5), story) as address:
        baseline = set(threading.enumerate())
        rude = peers.client(address, small=True)
        if stage == "mid-echo":
            peers.flood_until_stuck(rude, stall=0.1)
            story.step("a client with 4 KiB buffers sent until nothing more went through, "
                       "reading none of the echo: the server is stuck sending to it")
        else:
            story.step("a client connected")
        peers.reset(rude)
        story.step("that client reset the connection (an RST)")
        alive = new_threads_after(baseline, grace=1.0)
        story.check(not alive, "the reset client's thread to end at once",
                    f"{len(alive)} still running a second later")
        with connect(address, story) as next_client:
            echo_round(next_client, story, b"next, please", who="the next client")
