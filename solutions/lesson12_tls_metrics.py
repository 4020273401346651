"""Lesson 12 (reference): TLS, security headers and monitoring.

Three jobs, each with a classic way to get it wrong:

    encrypt     an ssl.SSLContext (PROTOCOL_TLS_SERVER, TLS 1.2 at least), and the handshake
                done per connection in the client's thread with ONE deadline -- never on the
                listening socket, where every handshake would run on the accept thread and one
                client that stalls mid-handshake would block accept() for everybody
    pin HTTPS   Strict-Transport-Security on every response over TLS (error pages too), and
                never over plain HTTP, where browsers ignore it and an attacker could forge it
    observe     GET /metrics in the Prometheus text format: requests by status, connections
                open (a real count, not a thread count), rejections by reason. A monitor
                observes; it defends nothing -- the defences are the lessons before

    with SecureHTTPServer(tls_context=make_tls_context("cert.pem", "key.pem")) as server:
        host, port = server.address

The program (the lessons 10-12 server): python -m solutions.http_server --help
"""
from __future__ import annotations

import argparse
import logging
import socket
import ssl
import sys

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               generate_latest)

from solutions.lesson06_capstone import StopSignals, _positive
from solutions.lesson08_validation import HttpError, render_response
from solutions.lesson09_slow_http import SITE
from solutions.lesson09_slow_http import build_parser as lesson09_parser
from solutions.lesson11_sessions import NO_STORE, SessionServer, UserStore

# One year: a browser that saw it keeps to HTTPS for this host for a year, so a later
# "http://" link (or an attacker downgrading one) never leaves the browser in plain text.
HSTS = ("Strict-Transport-Security", "max-age=31536000")
REASONS = ("cap", "rate", "login", "slow", "handshake")  # why a client was turned away


# --------------------------------------------------------------------------- TLS


def make_tls_context(certfile, keyfile) -> ssl.SSLContext:
    """A server-side TLS context. (ssl.wrap_socket, which made a context behind your back
    with old defaults, was removed in Python 3.12: a context is made once and reused.)"""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # TLS 1.0 and 1.1 are retired (RFC 8996): weak hashes in the handshake, known attacks
    # (BEAST, downgrades). Python 3.10+ already defaults to 1.2; saying it keeps it so.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def add_header(response: bytes, name: str, value: str) -> bytes:
    """A rendered response with one more header, right after its status line."""
    end = response.index(b"\r\n") + 2
    return response[:end] + f"{name}: {value}\r\n".encode("latin-1") + response[end:]


# --------------------------------------------------------------------------- metrics


class Metrics:
    """The server's counters, on a registry of its own: the global default registry is one
    per process, so two servers (tests, a notebook) would mix their counts -- or refuse to
    register the same names twice."""

    def __init__(self, connections_open=None):
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests", "HTTP responses sent, by status code",
                                ["status"], registry=self.registry)
        self.connections = Gauge("http_connections_open",
                                 "Connections admitted and not yet closed",
                                 registry=self.registry)
        self.rejections = Counter("http_rejections", "Clients or requests turned away, by reason",
                                  ["reason"], registry=self.registry)
        for reason in REASONS:  # shown as 0 from the start: a graph has a line to draw
            self.rejections.labels(reason)
        if connections_open is not None:  # read when scraped: never out of date
            self.connections.set_function(connections_open)

    def render(self) -> bytes:
        """The Prometheus text format, as GET /metrics sends it."""
        return generate_latest(self.registry)


# --------------------------------------------------------------------------- the server


class SecureHTTPServer(SessionServer):
    """Lessons 09-11's server over TLS (when given a context), with HSTS and GET /metrics."""

    def __init__(self, *args, tls_context: ssl.SSLContext | None = None,
                 handshake_timeout: float = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.tls_context = tls_context
        self.tls = tls_context is not None  # lesson 11's cookies get Secure then
        self.handshake_timeout = handshake_timeout
        # The lesson 09 count of admitted connections -- not threading.active_count(),
        # which counts every thread in the process, clients or not.
        self.metrics = Metrics(lambda: self.active_connections)

    # -- TLS, one connection at a time, in its own thread -----------------------------------

    def process(self, conn, addr) -> None:
        if self.tls_context is None:
            super().process(conn, addr)
            return
        # wrap_socket() detaches the socket it is given; wrapping a duplicate leaves `conn`,
        # the one stop() knows, able to shut the connection down (shutdown acts on the TCP
        # connection, not on one descriptor): a stalled TLS client cannot delay stop().
        with self.tls_context.wrap_socket(conn.dup(), server_side=True,
                                          do_handshake_on_connect=False) as tls_conn:
            tls_conn.settimeout(self.handshake_timeout)  # ONE deadline for the whole handshake
            # TLS writes in small records (TLS 1.3 sends session tickets after the
            # handshake): without NODELAY, Nagle holds the response back for the
            # client's delayed ACK, ~40 ms a new connection.
            tls_conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls_conn.do_handshake()
            except OSError as exc:  # ssl.SSLError, TimeoutError, a reset: all OSErrors
                self.metrics.rejections.labels("handshake").inc()
                self.log.info("%s:%s TLS handshake failed: %s", addr[0], addr[1],
                              type(exc).__name__)
                return
            super().process(tls_conn, addr)

    def reject(self, conn, addr) -> None:
        self.metrics.rejections.labels("cap").inc()
        if self.tls_context is None:
            super().reject(conn, addr)
            return
        # Lesson 09's 503 is plain text: a TLS client could not read it, and a handshake here
        # would run on the accept thread. Over TLS the connection over the cap is just closed.
        self.log.warning("REJECT %s:%s at capacity (%d connections)", addr[0], addr[1],
                         self.max_clients)
        conn.close()

    # -- every response: HSTS over TLS, and counted -----------------------------------------

    def answer(self, conn, peer, head, reply, request=None, quiet=False) -> None:
        data, *file = reply if isinstance(reply, tuple) else (reply,)
        status = data[9:12].decode("ascii")  # b"HTTP/1.1 200 OK" -> "200"
        self.metrics.requests.labels(status).inc()
        if status == "408":
            self.metrics.rejections.labels("slow").inc()
        if self.tls:  # and only then: browsers ignore it over HTTP, and there it is forgeable
            data = add_header(data, *HSTS)
        super().answer(conn, peer, head, (data, *file) if file else data, request, quiet)

    def check_before_body(self, request, peer: str) -> None:
        try:
            super().check_before_body(request, peer)
        except HttpError as exc:
            if exc.status == 429:  # lesson 10's limit per address
                self.metrics.rejections.labels("rate").inc()
            raise

    def login(self, request, body: bytes):
        try:
            return super().login(request, body)
        except HttpError as exc:
            if exc.status == 429:  # lesson 11's throttle per user name
                self.metrics.rejections.labels("login").inc()
            raise

    def route(self, request, body: bytes):
        if request.target.split("?", 1)[0] == "/metrics":
            data = self.metrics.render()
            return render_response(200, [("Content-Type", CONTENT_TYPE_LATEST), NO_STORE],
                                   b"" if request.method == "HEAD" else data, length=len(data))
        return super().route(request, body)


# --------------------------------------------------------------------------- the program


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, unless there is none to show (None, [])."""

    def _get_help_string(self, action):
        if action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    """Lesson 09's flags, plus the limits, logins and TLS of lessons 10-12."""
    parser = lesson09_parser()
    parser.prog = f"python -m {__package__}.http_server"
    parser.formatter_class = _Help
    parser.description = ("The course's hardened HTTP server (lessons 07-12): static files, "
                          "GET /healthz, GET /metrics, POST /echo, POST /login, GET /me, "
                          "POST /logout; rate limits; HTTPS with --certfile/--keyfile.")
    seconds, count = _positive(float), _positive(int)
    parser.add_argument("--rate", type=count, default=120,
                        help="requests per --rate-window per client address (429 above)")
    parser.add_argument("--rate-window", type=seconds, default=60.0,
                        help="seconds over which --rate requests are allowed")
    parser.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR",
                        help="a proxy (address or network) whose X-Forwarded-For is believed; "
                             "repeat for several; none by default")
    parser.add_argument("--max-tracked", type=count, default=10_000,
                        help="client addresses the rate limiter remembers at most")
    parser.add_argument("--users", metavar="FILE",
                        help="users file (python -m solutions.http_users add FILE NAME); "
                             "without it nobody can log in")
    parser.add_argument("--session-ttl", type=seconds, default=1800.0,
                        help="seconds a session lives without being used")
    parser.add_argument("--certfile", metavar="F", help="TLS certificate chain (PEM): HTTPS")
    parser.add_argument("--keyfile", metavar="F", help="TLS private key (PEM), with --certfile")
    parser.add_argument("--handshake-timeout", type=seconds, default=5.0,
                        help="seconds a client has to finish the TLS handshake")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT (Ctrl-C) or SIGTERM; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # bad values: usage on stderr, exit 2
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together")  # exit 2
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    root = getattr(args, "root", SITE)
    try:
        if not root.is_dir():
            raise ValueError(f"--root {root}: not a folder")
        users = UserStore.load(args.users) if args.users else None
        context = None
        if args.certfile:
            try:
                context = make_tls_context(args.certfile, args.keyfile)
            except OSError as exc:  # OpenSSL's messages do not say which file
                raise ValueError(f"--certfile {args.certfile} --keyfile {args.keyfile}: "
                                 f"{exc}") from None
        server = SecureHTTPServer(
            root, args.host, args.port, max_clients=args.max_clients,
            header_timeout=args.header_timeout, body_timeout=args.body_timeout,
            idle_timeout=args.idle_timeout, send_timeout=args.send_timeout,
            max_body=args.max_body, max_json_depth=args.max_json_depth, rate=args.rate,
            rate_window=args.rate_window, trusted_proxies=args.trusted_proxy,
            max_tracked=args.max_tracked, users=users, session_ttl=args.session_ttl,
            tls_context=context, handshake_timeout=args.handshake_timeout)
    except (OSError, ValueError) as exc:  # a missing file, a bad key, a bad proxy address
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with StopSignals() as signals:  # installed before start(): no signal is missed
        try:
            server.start()
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        try:
            host, port = server.address
            scheme = "https" if server.tls else "http"
            print(f"listening on {scheme}://{host}:{port}", flush=True)  # stdout is a pipe
            received = signals.wait()
            server.log.info("%s: stopping", received.name)
        finally:
            server.stop()  # shuts every client socket, mid-handshake ones too
    return 0


if __name__ == "__main__":  # python -m solutions.lesson12_tls_metrics (or solutions.http_server)
    sys.exit(main())
