"""Lesson 06 (reference): the capstone -- a hardened server program and its client.

    python -m solutions.message_server --port 0          # prints: listening on 127.0.0.1:PORT
    python -m solutions.message_client --port PORT       # one command per line on stdin

Every default is a defence, and every defence is a flag you can tune but not forget:

    --host 127.0.0.1        only this machine can connect until you decide otherwise
    --max-msg 65536         a forged 4 GiB length costs 4 bytes, not 4 GiB
    --idle-timeout 30       a silent client is dropped
    --message-deadline 10   a trickling client (Slowloris) is dropped
    --max-clients 10        a flood of connections gets "server busy", not our threads
"""
from __future__ import annotations

import argparse
import logging
import math
import signal
import socket
import sys

from solutions.lesson03_framing import MAX_MSG, MessageTooLarge, recv_msg, send_msg
from solutions.lesson05_guarded_server import BUSY, GuardedServer

LOOPBACK = "127.0.0.1"


class StopSignals:
    """Wait for SIGINT (Ctrl-C) or SIGTERM without taking a lock in a signal handler.

    A Python signal handler runs in the main thread *between two bytecodes of whatever the
    main thread is doing*. If the handler calls `event.set()` while the main thread sits in
    `event.wait()`, which holds the Event's internal lock at that moment, the handler waits
    for a lock its own thread holds: a deadlock, and Ctrl-C never works again.

    So the handlers here do nothing at all. `signal.set_wakeup_fd` makes the interpreter's
    C-level handler write the signal's number into a socket, and wait() simply reads it:

        with StopSignals() as signals:   # handlers installed before the server starts
            server.start()
            signals.wait()               # returns signal.SIGINT or signal.SIGTERM
        server.stop()

    Only the main thread may do this (Python's rule for signal handlers). On Windows, Ctrl-C
    arrives as SIGINT; there is no SIGTERM to send, and Ctrl-Break is not handled.
    """

    def __init__(self, signums=(signal.SIGINT, signal.SIGTERM)):
        self.signums = tuple(signums)

    def __enter__(self) -> "StopSignals":
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)  # set_wakeup_fd requires it: a handler never blocks
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno())
        # A handler that does nothing: it replaces KeyboardInterrupt and the default SIGTERM
        # exit, so the program stops in its own order (and the byte still reaches wait()).
        self._old_handlers = {s: signal.signal(s, self._ignore) for s in self.signums}
        return self

    @staticmethod
    def _ignore(signum, frame) -> None:
        pass

    def wait(self) -> int:
        """Block until one of the signals arrives; return its number."""
        while True:
            for number in self._reader.recv(64):  # each byte is one signal's number
                if number in self.signums:
                    return signal.Signals(number)

    def __exit__(self, *exc_info) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._reader.close()
        self._writer.close()


# The longest timeout a flag accepts: a day. socket.settimeout() refuses much larger values
# (OverflowError), and a server should find that out at startup, not at its first client.
MAX_SECONDS = 86400


def _positive(kind):
    """An argparse type that refuses zero and negative numbers at startup, with a clear
    message, instead of a server that misbehaves later (a cap of 0 admits nobody).

    For float it also refuses "nan" and "inf" (float() accepts both, and `nan <= 0` is False)
    and anything over MAX_SECONDS: every float flag here is a number of seconds."""
    def parse(text: str):
        value = kind(text)
        if kind is float and not (math.isfinite(value) and value <= MAX_SECONDS):
            raise argparse.ArgumentTypeError(f"must be a number of seconds up to {MAX_SECONDS}, "
                                             f"got {text}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {text}")
    return value


# --------------------------------------------------------------------------- the server


def build_server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}.message_server",  # how it is run, not the file name
        description="The course's hardened message server (lesson 06).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default=LOOPBACK,
                        help="address to listen on; anything but loopback exposes the server "
                             "to the network")
    parser.add_argument("--port", type=_port, default=0, help="TCP port; 0 picks any free port")
    parser.add_argument("--max-msg", type=_positive(int), default=MAX_MSG,
                        help="largest message in bytes; a bigger frame is dropped unread")
    parser.add_argument("--idle-timeout", type=_positive(float), default=30.0,
                        help="seconds a client may stay silent between messages")
    parser.add_argument("--message-deadline", type=_positive(float), default=10.0,
                        help="seconds a client has to finish a message it has begun")
    parser.add_argument("--max-clients", type=_positive(int), default=10,
                        help="clients served at once; the next one is told the server is busy")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log detail (stderr)")
    return parser


def server_main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT (Ctrl-C) or SIGTERM; return the exit status."""
    args = build_server_parser().parse_args(argv)
    # Logs go to stderr, so stdout carries only what a script may parse: the first line.
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    server = GuardedServer(args.host, args.port, max_clients=args.max_clients,
                           message_deadline=args.message_deadline, max_msg=args.max_msg,
                           idle_timeout=args.idle_timeout)
    with StopSignals() as signals:  # before start(): a Ctrl-C from now on is caught
        try:
            server.start()
        except OSError as exc:  # port taken, address not on this machine, ...
            print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        try:
            host, port = server.address
            # flush: stdout is a pipe when a script starts us, and pipes are block-buffered,
            # so without it the line would sit in our buffer and the script would wait.
            print(f"listening on {host}:{port}", flush=True)
            received = signals.wait()
            logging.getLogger("message_server").info("%s: stopping", received.name)
        finally:
            server.stop()
    return 0


# --------------------------------------------------------------------------- the client


def build_client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}.message_client",
        description="Send one command per line of input to the message server; print replies.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default=LOOPBACK, help="server address")
    # default=SUPPRESS: a required flag has no default, so --help should not show "None".
    parser.add_argument("--port", type=_port, required=True, default=argparse.SUPPRESS,
                        help="server port")
    parser.add_argument("--timeout", type=_positive(float), default=5.0,
                        help="seconds to wait for the connection and for each reply")
    return parser


def run_client(host: str, port: int, lines, out=None, timeout: float = 5.0) -> int:
    """Send each non-blank line as a message and write each reply to `out` (default stdout).

    Stops after "quit" (the server says "bye") or at the end of `lines`. Returns the exit
    status: 0, or 1 with a message on stderr if the server is busy, closes early, is silent
    or sends a reply over the size cap -- the client trusts the server no more than the
    server trusts the client.
    """
    out = sys.stdout if out is None else out
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            for line in lines:
                text = line.strip()
                if not text:
                    continue
                send_msg(sock, text)
                reply = recv_msg(sock)
                if reply == BUSY:
                    print(f"error: {BUSY}", file=sys.stderr)
                    return 1
                print(reply, file=out, flush=True)
                if text.lower() == "quit":
                    return 0
    except TimeoutError:
        print(f"error: no reply from {host}:{port} within {timeout} s", file=sys.stderr)
        return 1
    except ConnectionError as exc:
        print(f"error: the server closed the connection ({exc})", file=sys.stderr)
        return 1
    except (OSError, MessageTooLarge, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def client_main(argv: list[str] | None = None) -> int:
    args = build_client_parser().parse_args(argv)
    return run_client(args.host, args.port, sys.stdin, sys.stdout, args.timeout)
