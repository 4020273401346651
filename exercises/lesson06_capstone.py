"""Lesson 06 exercise: the capstone, a hardened server program and its client.
Notebook: lessons/06_capstone.ipynb

Two programs, run from the repo root (the wrappers exercises/message_server.py and
exercises/message_client.py call the functions below):

    python -m exercises.message_server --port 0 [--host 127.0.0.1] [--max-msg 65536]
        [--idle-timeout 30] [--message-deadline 10] [--max-clients 10] [--log-level INFO]
    python -m exercises.message_client --host 127.0.0.1 --port PORT [--timeout 5]

Grade yourself with (the graders run both programs for real):

    pytest exercises -k lesson06

The server itself is the REFERENCE GuardedServer from lesson 05, so this lesson does not
depend on your earlier work (swap in your own if you like):
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading

from solutions.lesson03_framing import MAX_MSG, MessageTooLarge, recv_msg, send_msg  # or yours
from solutions.lesson05_guarded_server import BUSY, GuardedServer  # or your own from lesson 05


class StopSignals:
    """Wait for SIGINT or SIGTERM without taking a lock in a signal handler.

    A handler runs in the main thread between two bytecodes of whatever it was doing; if it
    calls event.set() while the main thread is inside event.wait() (holding the Event's
    internal lock), it waits for a lock its own thread holds: a deadlock. Instead:

    __enter__: make a socket.socketpair(); set the writing end non-blocking and pass its
        fileno() to signal.set_wakeup_fd (the interpreter then writes each signal's number
        there); install a do-nothing handler for each signal (signal.signal); remember the
        old fd and handlers.
    wait(): recv() on the reading end until a byte is one of the signals; return it.
    __exit__: restore the old wakeup fd and handlers; close both sockets.
    """

    def __init__(self, signums=(signal.SIGINT, signal.SIGTERM)):
        self.signums = tuple(signums)

    def __enter__(self) -> "StopSignals":
        raise NotImplementedError("StopSignals.__enter__(): socketpair, set_wakeup_fd, "
                                  "do-nothing handlers")

    def wait(self) -> int:
        raise NotImplementedError("StopSignals.wait(): recv the signal number written by "
                                  "the interpreter")

    def __exit__(self, *exc_info) -> None:
        raise NotImplementedError("StopSignals.__exit__(): restore the wakeup fd and handlers")


def build_server_parser() -> argparse.ArgumentParser:
    """An argparse parser for the server's flags, with safe defaults: --host 127.0.0.1,
    --port 0, --max-msg 65536, --idle-timeout 30, --message-deadline 10, --max-clients 10,
    --log-level INFO (one of DEBUG, INFO, WARNING, ERROR). Say in each flag's help what it
    protects against, and show its default (argparse.ArgumentDefaultsHelpFormatter does).

    Refuse a bad value here, at startup: a port outside 0-65535, and zero, a negative number
    or a non-number for the four limits. Give each flag a `type=` function that raises
    argparse.ArgumentTypeError, and argparse prints the error and exits with status 2."""
    raise NotImplementedError("build_server_parser(): add the seven flags with safe defaults")


def server_main(argv: list[str] | None = None) -> int:
    """Parse argv, configure logging to stderr, and run a GuardedServer built from the flags.

    - print f"listening on {host}:{port}" as the FIRST line on stdout, with flush=True
      (a script reading our stdout through a pipe waits for it);
    - wait for SIGINT or SIGTERM WITHOUT a lock in the signal handler: use StopSignals below
      (`with StopSignals() as signals: ... signals.wait()`), then stop the server;
    - return 0 (the exit status).
    """
    raise NotImplementedError("server_main(): parse flags, start a GuardedServer, print the "
                              "'listening on HOST:PORT' line, wait for SIGINT/SIGTERM, stop, "
                              "return 0")


def run_client(host: str, port: int, lines, out=None, timeout: float = 5.0) -> int:
    """Connect (with `timeout`), then for each non-blank line: send it as a message, read one
    reply and print it to `out` (default sys.stdout) with flush=True, so a person typing
    sees each reply at once. Return 0 after "quit" (the reply is "bye") or when `lines` runs
    out. If the reply is BUSY, the server closes early, no reply comes within `timeout`, or
    the connection fails: print "error: ..." to sys.stderr and return 1."""
    raise NotImplementedError("run_client(): one send_msg + recv_msg per line; stop after quit; "
                              "errors to stderr with exit status 1")


def client_main(argv: list[str] | None = None) -> int:
    """Parse --host (default 127.0.0.1), --port (required, 0-65535), --timeout (default 5,
    greater than 0; bad values: exit status 2), then return run_client(host, port,
    sys.stdin, sys.stdout, timeout). Pass sys.stdin itself, not sys.stdin.read(): a loop over
    it gets each line as soon as it is typed."""
    raise NotImplementedError("client_main(): parse --host/--port/--timeout, call run_client "
                              "on sys.stdin")
