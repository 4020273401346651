"""Lesson 09 exercise: slow HTTP -- deadlines, a send timeout, and a connection cap.
Notebook: lessons/09_slow_http.ipynb

A client can starve a server without one malformed byte, just by being slow. Give each
kind of slowness its own clock, started at the right moment:

    idle timeout     between requests on a kept-alive connection
    header deadline  from the FIRST byte of a request to its blank line, in total
    body deadline    from the end of the head to the last body byte, in total
    send timeout     for a whole response: a client that never reads is dropped
    a cap            on open connections, checked on the accept thread: 503 at once

Grade yourself with:

    pytest exercises -k lesson09
    python -m exercises.lesson09_slow_http --help   (once main() is done)

The building blocks are the REFERENCE ones, so this lesson does not depend on your earlier
work (swap in your own if you like): ThreadedServer with its admit()/release() hooks
(lesson 02), DeadlineExceeded (lesson 05), StopSignals and the argparse helpers _positive
and _port (lesson 06), safe_path and content_type (lesson 07), and the sans-IO parser and
response helpers (lesson 08).
"""
from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading
import time
from pathlib import Path

from solutions.lesson02_threads import ThreadedServer  # or yours
from solutions.lesson05_guarded_server import DeadlineExceeded
from solutions.lesson06_capstone import LOOPBACK, StopSignals, _port, _positive
from solutions.lesson07_static_files import content_type, safe_path  # or yours
from solutions.lesson08_validation import (  # or yours
    HttpError, Limits, body_length, check_json_type, error_response, head_end, log_safe,
    parse_head, parse_json, render_response, safe_call)

SITE = Path(__file__).resolve().parent.parent / "solutions" / "site"  # the demo site
CHUNK = 64 * 1024
RETRY_AFTER_S = 1  # what a refused client is told: try again in a second


# --------------------------------------------------------------------------- deadline readers


def wait_for_request(sock: socket.socket, buffer: bytearray, idle_timeout: float) -> bool:
    """Wait up to idle_timeout for the first byte of the next request (unless `buffer`
    already holds one, as after pipelined requests). False if the client closed instead.
    The idle wait is separate from the header deadline: thinking is allowed, trickling not."""
    if buffer:
        return True
    sock.settimeout(idle_timeout)
    chunk = sock.recv(CHUNK)  # TimeoutError: idle too long
    buffer += chunk
    return bool(chunk)


def _recv_by(sock: socket.socket, deadline: float, what: str) -> bytes:
    """One recv that cannot wait past `deadline`: time left <= 0 -> DeadlineExceeded;
    sock.settimeout(time left); a TimeoutError from recv -> DeadlineExceeded; b"" ->
    ConnectionError, each with a message naming `what` ("request head" or "request body":
    the log then says which was late). Returns the chunk. (A helper for the two readers.)"""
    raise NotImplementedError("_recv_by(): settimeout(deadline - time.monotonic()) before "
                              "the recv; DeadlineExceeded when no time is left")


def read_head_by(sock: socket.socket, buffer: bytearray, deadline: float,
                 limits: Limits = Limits()) -> bytes:
    """Receive into `buffer` until it holds a whole request head (up to CRLF CRLF), all of
    it by `deadline` (a time.monotonic() value). Returns the head and removes it from
    `buffer`; bytes after it (a body, a pipelined request) stay there.

    Raises DeadlineExceeded (a TimeoutError) when time runs out, HttpError 414/431 as soon
    as the head is longer than `limits` allow, ConnectionError if the peer closes.

    Look in the buffer FIRST (head_end(buffer, limits) from lesson 08): a head that is
    already there is returned even if the deadline has passed. Otherwise receive more.
    """
    raise NotImplementedError("read_head_by(): head_end on the buffer, else receive more "
                              "with the time left before the deadline")


def read_body_by(sock: socket.socket, buffer: bytearray, length: int, deadline: float) -> bytes:
    """Exactly `length` body bytes, taking what `buffer` already holds first, the rest by
    `deadline`. Leftover bytes (the next request) stay in `buffer`."""
    raise NotImplementedError("read_body_by(): take from the buffer, receive the rest by "
                              "the deadline, leave the leftover")


def send_by(sock: socket.socket, data: bytes, deadline: float) -> None:
    """sendall(data), all of it by `deadline`. (Since Python 3.5 a socket timeout bounds a
    whole sendall, not each piece of it.) A client that never reads raises DeadlineExceeded."""
    raise NotImplementedError("send_by(): settimeout(time left), sendall; TimeoutError -> "
                              "DeadlineExceeded")


def send_file_by(sock: socket.socket, head: bytes, file, size: int, deadline: float) -> None:
    """Send `head`, then exactly `size` bytes of `file` (the Content-Length announced), all
    by `deadline`. The head leaves in the same send as the first chunk: a head and a small
    body sent apart meet Nagle's algorithm and the client's delayed ACK, ~40 ms a response.
    A file that grew is cut at `size`; one that shrank raises ConnectionAbortedError (the
    caller closes: the client then sees a short body, never a desynchronised stream)."""
    left = size
    while left > 0:
        chunk = file.read(min(CHUNK, left))
        if not chunk:
            raise ConnectionAbortedError(f"the file ended {left} bytes early")
        left -= len(chunk)
        send_by(sock, head + chunk, deadline)
        head = b""
    if head:  # an empty file: the head alone
        send_by(sock, head, deadline)


def is_head(request) -> bool:
    """True for a parsed HEAD request: its answer, even an error, carries no body."""
    return request is not None and request.method == "HEAD"


# --------------------------------------------------------------------------- the server


class HardenedHTTPServer(ThreadedServer):
    """Static files, GET /healthz and POST /echo, on lesson 02's ThreadedServer, with every
    clock above and a cap on open connections."""

    def __init__(self, root=SITE, host: str = LOOPBACK, port: int = 0, *,
                 max_clients: int = 100, header_timeout: float = 10.0,
                 body_timeout: float = 30.0, idle_timeout: float = 5.0,
                 send_timeout: float = 10.0, max_body: int = 1 << 20, max_json_depth: int = 32,
                 limits: Limits = Limits(), logger: logging.Logger | None = None):
        super().__init__(host, port, idle_timeout=idle_timeout)
        self.root = Path(root).resolve()
        self.max_clients = max_clients
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self.max_body = max_body
        self.max_json_depth = max_json_depth
        self.limits = limits
        self.log = logger or logging.getLogger("http_server")
        self.started = time.monotonic()
        self._active = 0  # connections admitted and not yet released
        self._active_lock = threading.Lock()  # admit() and release() run in different threads

    # -- the cap: admit() on the accept thread, release() when a connection ends ------------

    @property
    def active_connections(self) -> int:
        """Connections open right now: self._active, read under self._active_lock. Not
        threading.active_count(): that counts every thread in the process, not clients."""
        raise NotImplementedError("active_connections: return self._active under the lock")

    def admit(self, conn: socket.socket, addr) -> bool:
        """On the accept thread, before a thread exists for this client. Under the lock:
        below max_clients -> count it in (self._active += 1) and return True. Otherwise
        self.reject(conn, addr) and return False. Never block here."""
        raise NotImplementedError("admit(): count the connection in under the lock, or "
                                  "reject() and return False")

    def release(self, conn: socket.socket, addr) -> None:
        """In the client's thread, when its connection has ended: count it out."""
        raise NotImplementedError("release(): self._active -= 1 under the lock")

    def reject(self, conn: socket.socket, addr) -> None:
        """Answer 503 without ever blocking the accept thread: one non-blocking send of a
        few hundred bytes (it fits any socket buffer), then close.

        Log a warning "REJECT host:port at capacity (N connections)". The reply:
        error_response(503, [("Retry-After", str(RETRY_AFTER_S))], close=True). Then
        conn.setblocking(False); conn.send(reply); conn.shutdown(socket.SHUT_WR); one
        conn.recv(CHUNK) to drain what the client already sent (closing with unread bytes
        sends a reset, which can destroy the 503); ignore OSError throughout; conn.close().
        """
        raise NotImplementedError("reject(): a non-blocking send of a 503 with Retry-After, "
                                  "then close")

    # -- one connection: requests until an error, a close, or the idle timeout -------------

    def handle(self, conn: socket.socket, addr) -> None:
        """Serve requests on one connection until it should close.

        buffer = bytearray() lives as long as the connection (pipelined bytes wait there).
        Loop: wait_for_request(conn, buffer, self.idle_timeout) -- False (closed) or a
        TimeoutError (idle) ends the connection quietly; then serve_one(); stop when it
        returns False."""
        raise NotImplementedError("handle(): wait_for_request with the idle timeout, then "
                                  "serve_one, until either says stop")

    def serve_one(self, conn: socket.socket, peer: str, buffer: bytearray) -> bool:
        """Read, answer and log one request. True: the connection may carry another.

        In one try: head = read_head_by(conn, buffer, time.monotonic() + header_timeout,
        self.limits); request = parse_head(head, self.limits); length = body_length(request,
        self.max_body) -- 411/413 BEFORE any body byte; self.check_before_body(request,
        peer) (the refusals of this and later lessons, still before the body); body =
        read_body_by(conn, buffer, length, time.monotonic() + self.body_timeout).
        HttpError -> self.answer(conn, peer, head, error_response(status, exc.headers,
        close=True, head=is_head(request))) and return False (the stream is in doubt).
        DeadlineExceeded -> log it (info: the peer and the exception, e.g. "%s too slow (%s):
        closing"), answer a 408 with close=True, head=is_head(request),
        quiet=True, and return False. (Set request = None before the try.)
        Otherwise reply = safe_call(self.route, request, body, self.log); self.answer(conn,
        peer, head, reply, request); return request.keep_alive.
        """
        raise NotImplementedError("serve_one(): head by its deadline, parse, length before "
                                  "body, body by its deadline; errors answered then close")

    def answer(self, conn, peer, head, reply, request=None, quiet=False) -> None:
        """Send reply (bytes, or (head bytes, open file, its size)) by the send deadline; log it."""
        data, file, size = reply if isinstance(reply, tuple) else (reply, None, 0)
        deadline = time.monotonic() + self.send_timeout  # one deadline for the whole response
        try:
            if file is None:
                send_by(conn, data, deadline)
            else:
                send_file_by(conn, data, file, size, deadline)
        except (DeadlineExceeded, OSError) as exc:
            if not quiet:
                self.log.info("%s response not delivered (%s): closing", peer, exc)
            raise ConnectionAbortedError("response not delivered") from None
        finally:
            if file is not None:
                file.close()
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        agent = request.get("user-agent", "-") if request else "-"
        self.log.info('ACCESS %s "%s" %s "%s"', peer, log_safe(line), data[9:12].decode(),
                      log_safe(agent))

    # -- the application ----------------------------------------------------------------

    def check_before_body(self, request, peer: str) -> None:
        """Refusals that need no body: made before reading it (raise HttpError: the caller
        answers, then closes). `peer` is the client's "ip:port", for later lessons' limits."""
        path = request.target.split("?", 1)[0]
        if request.method == "POST" and path != "/echo":
            raise HttpError(405, "POST only on /echo", [("Allow", "GET, HEAD")])
        if request.method == "POST":
            check_json_type(request.get("content-type"))

    def route(self, request, body: bytes):
        path = request.target.split("?", 1)[0]
        head = request.method == "HEAD"
        if path == "/healthz":
            return self.json_reply(self.health(), head)
        if path == "/echo":
            if request.method != "POST":
                raise HttpError(405, "only POST", [("Allow", "POST")])
            return self.json_reply({"received": parse_json(body, self.max_json_depth)}, head)
        file_path = safe_path(self.root, request.target)
        if file_path is None:
            raise HttpError(404)
        try:
            file = open(file_path, "rb")
        except OSError:
            raise HttpError(404) from None
        size = file.seek(0, 2)  # the size of the file we opened, not of whatever has the name now
        file.seek(0)
        reply = render_response(200, [("Content-Type", content_type(file_path))], length=size)
        if head:
            file.close()
            return reply
        return reply, file, size

    def health(self) -> dict:
        return {"status": "ok", "active_connections": self.active_connections,
                "max_clients": self.max_clients,
                "uptime_s": round(time.monotonic() - self.started, 3)}

    @staticmethod
    def json_reply(data, head: bool = False) -> bytes:
        body = json.dumps(data).encode("utf-8")
        return render_response(200, [("Content-Type", "application/json")],
                               b"" if head else body, length=len(body))


# --------------------------------------------------------------------------- the program


def build_parser() -> argparse.ArgumentParser:
    """The program's flags, with the defaults of the notebook's table (argparse with
    formatter_class=argparse.ArgumentDefaultsHelpFormatter, prog=f"python -m
    {__package__}.lesson09_slow_http", a description naming it the lesson 07-09 server):
    --host (LOOPBACK), --port (type=_port, 0), --root (type=Path, default=argparse.SUPPRESS
    so --help shows no machine-specific path; main() falls back to SITE), --max-body
    (1048576), --max-json-depth (32), --header-timeout (10), --body-timeout (30),
    --idle-timeout (5), --send-timeout (10), --max-clients (100) and --log-level (INFO;
    choices DEBUG, INFO, WARNING, ERROR). Counts use type=_positive(int), seconds
    type=_positive(float): zero and negative values are refused with exit 2."""
    raise NotImplementedError("build_parser(): argparse with every flag and its safe default")


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT (Ctrl-C) or SIGTERM; return the exit status."""
    args = build_parser().parse_args(argv)  # bad values: usage on stderr, exit 2
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    args.root = getattr(args, "root", SITE)
    if not args.root.is_dir():
        print(f"error: --root {args.root}: not a folder", file=sys.stderr)
        return 2
    server = HardenedHTTPServer(args.root, args.host, args.port, max_clients=args.max_clients,
                                header_timeout=args.header_timeout,
                                body_timeout=args.body_timeout, idle_timeout=args.idle_timeout,
                                send_timeout=args.send_timeout, max_body=args.max_body,
                                max_json_depth=args.max_json_depth)
    with StopSignals() as signals:  # installed before start(): no signal is missed
        try:
            server.start()
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        try:
            host, port = server.address
            print(f"listening on http://{host}:{port}", flush=True)  # flush: stdout is a pipe
            received = signals.wait()
            server.log.info("%s: stopping", received.name)
        finally:
            server.stop()  # shuts every client socket: slow clients cannot delay the exit
    return 0


if __name__ == "__main__":  # python -m exercises.lesson09_slow_http
    sys.exit(main())
