"""Lesson 12 exercise: TLS, security headers and monitoring.
Notebook: lessons/12_tls_metrics.ipynb

Three jobs, each with a classic way to get it wrong:

    encrypt     an ssl.SSLContext (PROTOCOL_TLS_SERVER, TLS 1.2 at least); the handshake done
                per connection in the client's thread with ONE deadline, never on the
                listening socket (there every handshake runs on the accept thread)
    pin HTTPS   Strict-Transport-Security on every response over TLS, errors too, and never
                over plain HTTP
    observe     GET /metrics (Prometheus text format, from prometheus_client, on a registry
                of the server's own): requests by status, connections open (a real count),
                rejections by reason. A monitor observes; it defends nothing

Grade yourself with:

    pytest exercises -k lesson12
    python -m exercises.http_server --help   (once build_parser() and main() are done)

The building blocks are the REFERENCE ones, so this lesson does not depend on your earlier
work (swap in your own if you like): StopSignals and _positive (lesson 06), the response
helpers (lesson 08), lesson 09's build_parser, and lesson 11's SessionServer (which brings
lessons 09 and 10 with it).
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
from solutions.lesson08_validation import HttpError, render_response  # or yours
from solutions.lesson09_slow_http import SITE
from solutions.lesson09_slow_http import build_parser as lesson09_parser  # or yours
from solutions.lesson11_sessions import NO_STORE, SessionServer, UserStore  # or yours

# One year: a browser that saw it keeps to HTTPS for this host for a year, so a later
# "http://" link (or an attacker downgrading one) never leaves the browser in plain text.
HSTS = ("Strict-Transport-Security", "max-age=31536000")
REASONS = ("cap", "rate", "login", "slow", "handshake")  # why a client was turned away


# --------------------------------------------------------------------------- TLS


def make_tls_context(certfile, keyfile) -> ssl.SSLContext:
    """A server-side TLS context (ssl.PROTOCOL_TLS_SERVER) that refuses anything older than
    TLS 1.2 (minimum_version) and holds the certificate chain and its key. (ssl.wrap_socket
    is gone since Python 3.12: a context is made once and reused.)"""
    raise NotImplementedError("make_tls_context(): ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), "
                              "minimum_version TLS 1.2, load_cert_chain(certfile, keyfile)")


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
        """self.registry: a CollectorRegistry of its own (never the global default). On it:
        self.requests    Counter "http_requests", label "status" (the 3-digit code as text)
        self.connections Gauge "http_connections_open"; if `connections_open` (a function)
                         is given, the gauge reads it when scraped (Gauge.set_function)
        self.rejections  Counter "http_rejections", label "reason"; every reason of REASONS
                         created at 0 (self.rejections.labels(reason))"""
        raise NotImplementedError("Metrics(): a CollectorRegistry and three metrics on it")

    def render(self) -> bytes:
        """The Prometheus text format, as GET /metrics sends it."""
        raise NotImplementedError("Metrics.render(): generate_latest(self.registry)")


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
        """Without a context: lesson 09's process. With one: wrap a DUPLICATE of conn
        (conn.dup(): wrap_socket detaches the socket it is given, and stop() must still be
        able to shut `conn` down) with server_side=True, do_handshake_on_connect=False;
        settimeout(self.handshake_timeout) -- one deadline for the whole handshake; TCP_NODELAY
        on it (TLS writes small records: with Nagle's algorithm on, each new connection's
        first answer waits ~40 ms for the client's delayed ACK); then do_handshake(). An
        OSError there (SSLError, TimeoutError, a reset): count a "handshake" rejection, log
        "IP:PORT TLS handshake failed: <the exception's type name>" at INFO (self.log.info),
        return. Else serve the TLS socket with lesson 09's process; close it at the end."""
        raise NotImplementedError("process(): wrap conn.dup() server-side without the "
                                  "automatic handshake, settimeout(handshake_timeout), "
                                  "do_handshake() here in the client's thread")

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
        """Every response passes here (reply: bytes, or (head bytes, file, size)). Count it
        in self.metrics.requests by its status (bytes 9-12 of the head: b"HTTP/1.1 200 ...");
        a 408 also counts as a "slow" rejection. Over TLS (self.tls) add HSTS to the head
        with add_header -- and never over plain HTTP. Then lesson 09's answer()."""
        raise NotImplementedError("answer(): count the status, add HSTS when self.tls, then "
                                  "super().answer(...)")

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
        """GET (or HEAD) /metrics: 200, Content-Type CONTENT_TYPE_LATEST, Cache-Control:
        no-store (NO_STORE), the body self.metrics.render() (none for HEAD, with the same
        Content-Length). Anything else: lesson 11's route."""
        raise NotImplementedError("route(): /metrics from self.metrics.render(), else "
                                  "super().route(request, body)")


# --------------------------------------------------------------------------- the program


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, unless there is none to show (None, [])."""

    def _get_help_string(self, action):
        if action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    """Lesson 09's parser (lesson09_parser()) with prog f"python -m {__package__}.http_server",
    formatter_class _Help (given above: no "(default: None)" in --help) and these flags added: --rate (count, 120), --rate-window (seconds, 60), --trusted-proxy
    ADDR (action="append", default []), --max-tracked (count, 10000), --users FILE (None),
    --session-ttl (seconds, 1800), --certfile F, --keyfile F (None), --handshake-timeout
    (seconds, 5). Counts: type=_positive(int); seconds: type=_positive(float)."""
    raise NotImplementedError("build_parser(): lesson09_parser(), prog "
                              "f'python -m {__package__}.http_server', then the new flags")


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT (Ctrl-C) or SIGTERM; return the exit status.

    As lesson 09's main(), plus: --certfile and --keyfile both or neither (parser.error:
    exit 2); a bad --root, --users file, certificate or proxy address (OSError, ValueError)
    -> "error: ..." naming the value on stderr and 2 (OpenSSL's errors do not name the
    file: say "--certfile F --keyfile K: <error>"); the first line "listening on https://HOST:PORT" with
    TLS, "listening on http://HOST:PORT" without; SIGINT/SIGTERM -> stop() and 0."""
    raise NotImplementedError("main(): parse; --certfile without --keyfile (or the reverse) "
                              "-> parser.error; build the SecureHTTPServer (errors -> 2); "
                              "start; 'listening on https://HOST:PORT' (or http://); wait "
                              "for a signal; stop; 0")


if __name__ == "__main__":  # python -m exercises.lesson12_tls_metrics (or exercises.http_server)
    sys.exit(main())
