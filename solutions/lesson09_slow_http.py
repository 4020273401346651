"""Lesson 09 (reference): slow HTTP -- Slowloris, slow bodies, slow readers -- and a connection cap.

An HTTP server can be starved without one malformed byte: open many connections and then be
slow. Each defence here has its own clock, started at the right moment:

    idle timeout     between requests on a kept-alive connection: how long a client may think
    header deadline  from the FIRST byte of a request until its blank line, in total
    body deadline    from the end of the head until the last byte of the body, in total
    send timeout     how long one response may take to leave, in total: a client that
                     never reads cannot hold a thread for ever
    a cap            on open connections, enforced on the accept thread before a thread
                     exists: the connection over the cap gets a tiny 503 at once

http.server cannot do the deadlines: it reads the head through a buffered file with one
timeout PER RECV, which a client beats by sending a byte a second. So this server reads
with the deadline readers below and leaves all protocol rules to lesson 08's sans-IO parser.

    with HardenedHTTPServer("solutions/site", max_clients=100) as server:
        host, port = server.address

The program (the lesson 07-09 server): python -m solutions.lesson09_slow_http --help
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

from solutions.lesson02_threads import ThreadedServer
from solutions.lesson05_guarded_server import DeadlineExceeded
from solutions.lesson06_capstone import LOOPBACK, StopSignals, _port, _positive
from solutions.lesson07_static_files import content_type, safe_path
from solutions.lesson08_validation import (HttpError, Limits, body_length, check_json_type,
                                           error_response, head_end, log_safe, parse_head,
                                           parse_json, render_response, safe_call)

SITE = Path(__file__).resolve().parent / "site"  # the demo site served by default
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
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"{what}: deadline passed")
    sock.settimeout(left)  # never wait past the deadline, however the bytes are spread out
    try:
        chunk = sock.recv(CHUNK)
    except TimeoutError:
        raise DeadlineExceeded(f"{what}: deadline passed") from None
    if not chunk:
        raise ConnectionError(f"peer closed during the {what}")
    return chunk


def read_head_by(sock: socket.socket, buffer: bytearray, deadline: float,
                 limits: Limits = Limits()) -> bytes:
    """Receive into `buffer` until it holds a whole request head (up to CRLF CRLF), all of
    it by `deadline` (a time.monotonic() value). Returns the head and removes it from
    `buffer`; bytes after it (a body, a pipelined request) stay there.

    Raises DeadlineExceeded (a TimeoutError) when time runs out, HttpError 414/431 as soon
    as the head is longer than `limits` allow, ConnectionError if the peer closes."""
    while True:
        end = head_end(buffer, limits)
        if end is not None:
            head = bytes(buffer[:end])
            del buffer[:end]
            return head
        buffer += _recv_by(sock, deadline, "request head")


def read_body_by(sock: socket.socket, buffer: bytearray, length: int, deadline: float) -> bytes:
    """Exactly `length` body bytes, taking what `buffer` already holds first, the rest by
    `deadline`. Leftover bytes (the next request) stay in `buffer`."""
    while len(buffer) < length:
        buffer += _recv_by(sock, deadline, "request body")
    body = bytes(buffer[:length])
    del buffer[:length]
    return body


def send_by(sock: socket.socket, data: bytes, deadline: float) -> None:
    """sendall(data), all of it by `deadline`. (Since Python 3.5 a socket timeout bounds a
    whole sendall, not each piece of it.) A client that never reads raises DeadlineExceeded."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("response: send deadline passed")
    sock.settimeout(left)
    try:
        sock.sendall(data)
    except TimeoutError:
        raise DeadlineExceeded("response: the client is not reading") from None


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
        """Connections open right now. Not threading.active_count(): that counts every thread
        in the process (the accept loop, the main thread, anybody's helpers), not clients."""
        with self._active_lock:
            return self._active

    def admit(self, conn: socket.socket, addr) -> bool:
        with self._active_lock:
            if self._active < self.max_clients:
                self._active += 1
                return True
        self.reject(conn, addr)
        return False

    def release(self, conn: socket.socket, addr) -> None:
        with self._active_lock:
            self._active -= 1

    def reject(self, conn: socket.socket, addr) -> None:
        """Answer 503 without ever blocking the accept thread: one non-blocking send of a
        few hundred bytes (it fits any socket buffer), then close."""
        self.log.warning("REJECT %s:%s at capacity (%d connections)", addr[0], addr[1],
                         self.max_clients)
        busy = error_response(503, [("Retry-After", str(RETRY_AFTER_S))], close=True)
        try:
            conn.setblocking(False)
            conn.send(busy)
            conn.shutdown(socket.SHUT_WR)
            # Read what the client already sent: closing with unread bytes sends a reset,
            # which can destroy our 503 before the client has read it.
            conn.recv(CHUNK)
        except OSError:
            pass
        conn.close()

    # -- one connection: requests until an error, a close, or the idle timeout -------------

    def handle(self, conn: socket.socket, addr) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        buffer = bytearray()
        while True:
            try:
                if not wait_for_request(conn, buffer, self.idle_timeout):
                    return  # the client closed between requests: the normal ending
            except TimeoutError:
                self.log.info("%s idle for %s s: closing", peer, self.idle_timeout)
                return
            if not self.serve_one(conn, peer, buffer):
                return

    def serve_one(self, conn: socket.socket, peer: str, buffer: bytearray) -> bool:
        """Read, answer and log one request. True: the connection may carry another."""
        head, request = b"", None
        try:
            head = read_head_by(conn, buffer, time.monotonic() + self.header_timeout,
                                self.limits)
            request = parse_head(head, self.limits)
            length = body_length(request, self.max_body)  # 411/413 before any body byte
            self.check_before_body(request, peer)
            body = read_body_by(conn, buffer, length, time.monotonic() + self.body_timeout)
        except HttpError as exc:
            # The stream is in doubt (a body we did not read, a head we could not parse):
            # answer, then close.
            self.answer(conn, peer, head, error_response(exc.status, exc.headers, close=True,
                                                         head=is_head(request)))
            return False
        except DeadlineExceeded as exc:
            self.log.info("%s too slow (%s): closing", peer, exc)
            self.answer(conn, peer, head, error_response(408, close=True, head=is_head(request)),
                        quiet=True)
            return False
        reply = safe_call(self.route, request, body, self.log)
        self.answer(conn, peer, head, reply, request)
        return request.keep_alive

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
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}.lesson09_slow_http",
        description="The lesson 07-09 server: the course's hardened HTTP server with static "
                    "files, GET /healthz, POST /echo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    seconds, count = _positive(float), _positive(int)
    parser.add_argument("--host", default=LOOPBACK,
                        help="address to listen on; anything but loopback exposes the server")
    parser.add_argument("--port", type=_port, default=0, help="TCP port; 0 picks any free port")
    # SUPPRESS: --help then names the demo site instead of this machine's absolute path.
    parser.add_argument("--root", type=Path, default=argparse.SUPPRESS,
                        help="folder of files to serve (default: the demo site, solutions/site)")
    parser.add_argument("--max-body", type=count, default=1 << 20,
                        help="largest request body in bytes (413 above, before reading it)")
    parser.add_argument("--max-json-depth", type=count, default=32,
                        help="deepest nesting accepted in a JSON body")
    parser.add_argument("--header-timeout", type=seconds, default=10.0,
                        help="seconds for a request line and headers, from their first byte")
    parser.add_argument("--body-timeout", type=seconds, default=30.0,
                        help="seconds for a request body, from the end of the headers")
    parser.add_argument("--idle-timeout", type=seconds, default=5.0,
                        help="seconds a kept-alive connection may wait for its next request")
    parser.add_argument("--send-timeout", type=seconds, default=10.0,
                        help="seconds a response may take to leave (a client that never "
                             "reads is dropped)")
    parser.add_argument("--max-clients", type=count, default=100,
                        help="open connections at once; the next one gets 503 at once")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log detail (stderr)")
    return parser


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


if __name__ == "__main__":  # python -m solutions.lesson09_slow_http
    sys.exit(main())
