"""Graders for lesson 12, TLS, security headers and monitoring.  Run: pytest exercises -k lesson12

Certificates are made here, at run time, by trustme (a throwaway certificate authority):
no key material lives in the repository. Every TLS client below trusts that CA only and
checks the server's name, as a browser would.

The handshake deadline is set short (0.5 s) with every other clock far away (5 s), so a
handshake with no deadline of its own, or one twice too long, fails.
"""
import contextlib
import io
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from graderkit import (WAIT, describe, run_in_thread, serving, short,  # noqa: F401 (a fixture)
                       signal_safety_net, wait_for_line)
from httpkit import Reader, check_status, closed_within, expect_response, request

REPO = Path(__file__).resolve().parent.parent
FILE = b"hello from the lesson 12 grader\n"
BOOM = "boom (raised on purpose by the grader's route)"
HANDSHAKE = 0.5  # the clock under test
FAR = 5.0  # every other clock


@pytest.fixture
def lesson(graded):
    return graded("lesson12_tls_metrics")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throwaway CA, and a certificate for 127.0.0.1/localhost in two files: the chain
    (certificate only) and the private key (kept apart, so both must be loaded)."""
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(keyfile))
    other = trustme.CA().issue_cert("127.0.0.1").private_key_pem
    otherkey = folder / "other-key.pem"
    other.write_to_path(str(otherkey))
    return ca, str(certfile), str(keyfile), str(otherkey)


@pytest.fixture
def root(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_bytes(FILE)
    return site


def client_context(ca, maximum=None):
    context = ssl.create_default_context()  # checks the certificate and the host name
    ca.configure_trust(context)
    if maximum is not None:
        with warnings.catch_warnings():  # TLSv1_1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = maximum
    return context


def tls_connect(address, ca, story, who="a TLS client"):
    raw = socket.create_connection(address, timeout=WAIT)
    try:
        sock = client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1")
    except OSError as exc:
        raw.close()
        story.fail(f"{who}: a TLS handshake (the CA trusted, name 127.0.0.1)", describe(exc))
    story.step(f"{who} connected and finished the TLS handshake ({sock.version()})")
    return sock


def ask(address, data, story, ca=None, who="a client"):
    """One request on a fresh connection (TLS when ca is given); its response."""
    if ca is None:
        sock = socket.create_connection(address, timeout=WAIT)
    else:
        sock = tls_connect(address, ca, story, who)
    with sock:
        sock.sendall(data)
        story.step(f"{who} sent {short(data, 100)}")
        return expect_response(Reader(sock), story, head_only=data.startswith(b"HEAD"))


def make_server(lesson, story, root, **kwargs):
    """Your SecureHTTPServer, wrapped so a NotImplementedError in its threads reaches the
    test, with a planted bug at GET /boom. Clocks not given are FAR."""
    for name in ("header_timeout", "body_timeout", "idle_timeout", "send_timeout"):
        kwargs.setdefault(name, FAR)

    class Graded(lesson.SecureHTTPServer):
        poll_interval = 0.05  # ThreadedServer's accept loop: stop() returns sooner
        not_implemented = None

        def _catch(self, call, *args):
            try:
                return call(*args)
            except NotImplementedError as exc:
                self.not_implemented = exc
                return False

        def admit(self, conn, addr):
            return self._catch(super().admit, conn, addr)

        def reject(self, conn, addr):
            return self._catch(super().reject, conn, addr)

        def process(self, conn, addr):
            return self._catch(super().process, conn, addr)

        def route(self, req, body):
            if req.target == "/boom":
                raise RuntimeError(BOOM)
            return super().route(req, body)

    shown = {k: ("<context>" if k == "tls_context" else v) for k, v in kwargs.items()
             if k not in ("logger", "users")}
    story.step(f"created SecureHTTPServer(<site>, {', '.join(f'{k}={v!r}' for k, v in shown.items())})")
    try:
        return Graded(root, **kwargs)
    except NotImplementedError:
        raise
    except Exception as exc:
        story.fail("the server to be created", describe(exc))


def metrics_of(story, text) -> dict:
    """{(sample name, labels as a sorted tuple): value} from the Prometheus text format."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:
        story.fail("text in the Prometheus format (prometheus_client's parser)",
                   f"{describe(exc)}; text {short(text, 200)}")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in families for s in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape(address, story, ca=None) -> dict:
    reply = ask(address, request("GET", "/metrics"), story, ca, who="a monitor")
    check_status(story, reply, 200, "GET /metrics")
    story.check(reply.header("content-type", "").startswith("text/plain"),
                "Content-Type text/plain (prometheus_client's CONTENT_TYPE_LATEST)",
                repr(reply.header("content-type")))
    return metrics_of(story, reply.body)


def memory_handshake(server_context, client_ctx):
    """A TLS handshake between two contexts in memory (no sockets): the version agreed, or
    the exception that ended it."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {client: False, server: False}
    for _ in range(10):
        for side in (client, server):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    return exc
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client.version()
    return RuntimeError("the handshake did not finish")


def hsts_age(reply):
    value = reply.header("strict-transport-security")
    if value is None:
        return None
    for part in value.split(";"):
        name, _, number = part.strip().partition("=")
        if name.lower() == "max-age" and number.isdigit():
            return int(number)
    return 0


# --------------------------------------------------------------------------- 12.context


@pytest.mark.task("12.context")
def test_the_context_is_server_side_with_tls_1_2_at_least(lesson, certs, story):
    ca, certfile, keyfile, _ = certs
    story.step("called make_tls_context(<cert.pem>, <key.pem>) (a trustme certificate)")
    context = lesson.make_tls_context(certfile, keyfile)
    story.check(isinstance(context, ssl.SSLContext) and context.protocol == ssl.PROTOCOL_TLS_SERVER,
                "an ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)", repr(context))
    story.check(context.minimum_version >= ssl.TLSVersion.TLSv1_2,
                "minimum_version TLSv1_2 or newer (1.0 and 1.1 are retired, RFC 8996)",
                repr(context.minimum_version))
    agreed = memory_handshake(context, client_context(ca))
    story.step("a client trusting the CA shook hands with it (in memory)")
    story.check(agreed in ("TLSv1.2", "TLSv1.3"), "a finished handshake, TLS 1.2 or 1.3",
                describe(agreed) if isinstance(agreed, Exception) else repr(agreed))
    try:
        old = client_context(ca, maximum=getattr(ssl.TLSVersion, "TLSv1_1"))
    except (ValueError, ssl.SSLError):  # this OpenSSL cannot even build such a client
        return
    refused = memory_handshake(context, old)
    story.step("a client that speaks at most TLS 1.1 tried")
    story.check(isinstance(refused, ssl.SSLError), "the TLS 1.1 client refused", repr(refused))


@pytest.mark.task("12.context")
def test_the_key_is_loaded_from_its_own_file(lesson, certs, story):
    _, certfile, keyfile, otherkey = certs
    story.step("called make_tls_context(<cert.pem>, <a key of ANOTHER certificate>)")
    try:
        lesson.make_tls_context(certfile, otherkey)
    except ssl.SSLError:
        return
    story.fail("ssl.SSLError (the key does not match: load_cert_chain(certfile, keyfile))",
               "a context was made")


# --------------------------------------------------------------------------- 12.metrics


@pytest.mark.task("12.metrics")
def test_metrics_have_their_own_registry_and_names(lesson, story):
    story.step("made two Metrics(); the second with connections_open=lambda: 7")
    first, second = lesson.Metrics(), lesson.Metrics(lambda: 7)
    first.requests.labels("200").inc()
    first.requests.labels("200").inc()
    first.requests.labels("404").inc()
    first.rejections.labels("rate").inc()
    story.step("counted on the first: two 200s, one 404, one 'rate' rejection")
    one, two = metrics_of(story, first.render()), metrics_of(story, second.render())
    got = (value(one, "http_requests_total", status="200"),
           value(one, "http_requests_total", status="404"),
           value(one, "http_rejections_total", reason="rate"))
    story.check(got == (2, 1, 1), "http_requests_total{status=200} 2, {status=404} 1, "
                "http_rejections_total{reason=rate} 1 in the first's render()", repr(got))
    zeros = {r: value(one, "http_rejections_total", reason=r) for r in lesson.REASONS if r != "rate"}
    story.check(all(v == 0 for v in zeros.values()),
                "every other reason of REASONS present at 0", repr(zeros))
    story.check(value(two, "http_requests_total", status="200") is None
                and value(two, "http_rejections_total", reason="rate") == 0,
                "nothing of the first in the second (each its own CollectorRegistry)",
                short({k: v for k, v in two.items() if "created" not in k[0]}, 300))
    story.check(value(two, "http_connections_open") == 7 and value(one, "http_connections_open") == 0,
                "http_connections_open read from connections_open (7), 0 without it",
                f"{value(two, 'http_connections_open')!r} and {value(one, 'http_connections_open')!r}")


@pytest.mark.task("12.metrics")
def test_metrics_count_requests_by_status_and_real_connections(lesson, story, root):
    server = make_server(lesson, story, root)
    with serving(server, story) as address:
        for target in ("/hello.txt", "/hello.txt", "/missing"):
            ask(address, request("GET", target), story)
        samples = scrape(address, story)
        got = (value(samples, "http_requests_total", status="200"),
               value(samples, "http_requests_total", status="404"))
        story.check(got == (2, 1), "http_requests_total{status=200} 2 and {status=404} 1 "
                    "(this scrape is not counted yet)", repr(got))
        idle = [socket.create_connection(address, timeout=WAIT) for _ in range(3)]
        story.step("3 clients connected and sent nothing")
        try:
            ends, seen = time.monotonic() + WAIT, None
            while time.monotonic() < ends:
                seen = value(scrape(address, story), "http_connections_open")
                if seen == 4:
                    break
                time.sleep(0.05)
            story.check(seen == 4, "http_connections_open 4 (3 idle clients and the monitor's "
                        "own connection: connections, not threads)", repr(seen))
        finally:
            for sock in idle:
                sock.close()
        with socket.create_connection(address, timeout=WAIT) as sock:
            reader = Reader(sock)
            sock.sendall(request("HEAD", "/metrics") + request("GET", "/hello.txt"))
            story.step("a monitor sent HEAD /metrics and GET /hello.txt on one connection")
            reply = expect_response(reader, story, head_only=True)
            story.check(reply.status == 200 and int(reply.header("content-length", "0")) > 0,
                        "HEAD /metrics: 200, the Content-Length of the text", str(reply))
            after = expect_response(reader, story)
            story.check(after.status == 200 and after.body == FILE, "then the file: no body "
                        "was sent for HEAD", str(after))
        reply = ask(address, request("GET", "/metrics?a=1?b=2"), story, who="a monitor")
        story.check(reply.status == 200 and b"http_requests_total" in reply.body,
                    "GET /metrics?a=1?b=2: the metrics (the query is not the path)", str(reply))


@pytest.mark.task("12.metrics")
def test_two_servers_keep_their_own_counts(lesson, story, root):
    first = make_server(lesson, story, root)
    second = make_server(lesson, story, root)
    with serving(first, story) as a, serving(second, story) as b:
        for _ in range(3):
            ask(a, request("GET", "/hello.txt"), story)
        samples = scrape(b, story)
        story.check(value(samples, "http_requests_total", status="200") is None,
                    "no 200 counted on the second server (each server its own registry)",
                    repr(value(samples, "http_requests_total", status="200")))


def settle(server, within=WAIT):
    """Wait until the server holds no connection (its slots free again)."""
    ends = time.monotonic() + within
    while server.active_connections and time.monotonic() < ends:
        time.sleep(0.005)


@pytest.mark.task("12.metrics")
def test_rejections_are_counted_by_reason(lesson, story, root):
    users = lesson.UserStore(n=2**10)
    users.add("alice", "correct horse")
    server = make_server(lesson, story, root, max_clients=2, rate=4, header_timeout=0.3,
                         users=users, max_failures=1)
    with serving(server, story) as address:
        holders = [socket.create_connection(address, timeout=WAIT) for _ in range(2)]
        story.step("2 clients hold the 2 slots (max_clients=2)")
        try:
            ends = time.monotonic() + WAIT
            while server.active_connections < 2 and time.monotonic() < ends:
                time.sleep(0.01)
            with socket.create_connection(address, timeout=WAIT) as third:
                how, _, data = closed_within(third, WAIT)
            story.check(data.startswith(b"HTTP/1.1 503"), "a third client turned away with "
                        "lesson 09's 503 (plain HTTP)", f"{how}, data {short(data)}")
        finally:
            for sock in holders:
                sock.close()
        settle(server)
        with socket.create_connection(address, timeout=WAIT) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\n")
            story.step("a client sent half a request head and stopped (header_timeout=0.3)")
            closed_within(slow, WAIT)
        bad = request("POST", "/login", [("Content-Type", "application/json")],
                      b'{"user": "alice", "password": "wrong"}')
        statuses = []
        for data in (bad, bad, bad, *[request("GET", "/hello.txt")] * 2):
            settle(server)  # a slot comes back a moment after its client saw the close
            statuses.append(ask(address, data, story).status)
        story.check(statuses == [401, 429, 429, 200, 429],
                    "401 then 429 429 (max_failures=1), then 200 and 429 (rate=4: the 5th "
                    "request)",
                    repr(statuses))
        samples = metrics_of(story, server.metrics.render())
        got = {r: value(samples, "http_rejections_total", reason=r)
               for r in ("cap", "slow", "login", "rate")}
        story.check(got == {"cap": 1, "slow": 1, "login": 2, "rate": 1},
                    "http_rejections_total: cap 1, slow 1, login 2, rate 1", repr(got))
        story.check(value(samples, "http_requests_total", status="408") == 1,
                    "the 408 counted by status too", repr(value(samples, "http_requests_total",
                                                                status="408")))


# --------------------------------------------------------------------------- 12.handshake


@pytest.mark.task("12.handshake")
def test_https_works_and_the_cookie_is_secure(lesson, story, root, certs):
    ca, certfile, keyfile, _ = certs
    users = lesson.UserStore(n=2**10)
    users.add("alice", "correct horse")
    server = make_server(lesson, story, root, users=users,
                         tls_context=lesson.make_tls_context(certfile, keyfile),
                         handshake_timeout=FAR)
    story.check(server.tls is True, "server.tls True when a context is given",
                repr(server.tls))
    with serving(server, story) as address:
        with tls_connect(address, ca, story) as sock:
            reader = Reader(sock)
            for _ in range(2):
                sock.sendall(request("GET", "/hello.txt"))
                story.step("sent GET /hello.txt over TLS (kept alive)")
                reply = expect_response(reader, story)
                check_status(story, reply, 200)
                story.check(reply.body == FILE, "the file", short(reply.body))
        waits = []
        for _ in range(5):
            with tls_connect(address, ca, story, "a new TLS client") as sock:
                started = time.perf_counter()
                sock.sendall(request("GET", "/hello.txt"))
                expect_response(Reader(sock), story)
                waits.append(time.perf_counter() - started)
        wait = sorted(waits)[2]
        story.check(wait < 0.025, "the answer within 25 ms of the request on a new TLS "
                    "connection (median of 5): TCP_NODELAY on it, or Nagle's algorithm holds "
                    "the response for the client's delayed ACK (~40 ms)", f"{wait * 1000:.1f} ms")
        login = request("POST", "/login", [("Content-Type", "application/json")],
                        b'{"user": "alice", "password": "correct horse"}')
        reply = ask(address, login, story, ca)
        check_status(story, reply, 200, "alice logged in over TLS")
        cookie = reply.header("set-cookie", "")
        story.check("secure" in [p.strip().lower() for p in cookie.split(";")],
                    "Set-Cookie with Secure over TLS (lesson 11 reads server.tls)", cookie)
    plain = lesson.SecureHTTPServer(root)
    story.check(plain.tls is False and plain.tls_context is None
                and plain.handshake_timeout == 5.0,
                "without a context: server.tls False, tls_context None, handshake_timeout 5.0 "
                "(the defaults)", f"{plain.tls!r}, {plain.tls_context!r}, "
                f"{plain.handshake_timeout!r}")


@pytest.mark.task("12.handshake")
def test_a_stalled_handshake_never_blocks_accept_and_ends_on_its_clock(lesson, story, root,
                                                                       certs, logs):
    ca, certfile, keyfile, _ = certs
    server = make_server(lesson, story, root, handshake_timeout=HANDSHAKE, logger=logs.logger,
                         tls_context=lesson.make_tls_context(certfile, keyfile))
    with serving(server, story) as address:
        ask(address, request("GET", "/hello.txt"), story, ca, who="a first TLS client")
        with socket.create_connection(address, timeout=WAIT) as stalled:
            started = time.monotonic()
            stalled_port = stalled.getsockname()[1]
            story.step(f"a client connected and sent nothing: no ClientHello "
                       f"(handshake_timeout={HANDSHAKE})")
            time.sleep(0.05)
            reply = ask(address, request("GET", "/hello.txt"), story, ca,
                        who="an honest TLS client, meanwhile")
            served = time.monotonic() - started
            check_status(story, reply, 200)
            story.check(served < 0.4, "the honest client served at once (the handshake is not "
                        "on the accept thread)", f"after {served:.2f} s")
            how, _, _ = closed_within(stalled, 3 * HANDSHAKE)
            took = time.monotonic() - started
        story.check(how in ("closed", "reset"), f"the stalled client dropped", how)
        low, high = HANDSHAKE * 0.9, HANDSHAKE * 1.7 + 0.1
        story.check(low <= took <= high, f"the drop {low:.2f}-{high:.2f} s after it connected "
                    f"(handshake_timeout = {HANDSHAKE} s; idle_timeout = {FAR} s)",
                    f"{took:.2f} s")
        samples = metrics_of(story, server.metrics.render())
        story.check(value(samples, "http_rejections_total", reason="handshake") == 1,
                    "http_rejections_total{reason=handshake} 1",
                    repr(value(samples, "http_rejections_total", reason="handshake")))
        want = f"127.0.0.1:{stalled_port} TLS handshake failed: TimeoutError"
        line = wait_for_line(logs, want, server=server)
        story.check(line == want, f"the log line '{want}' (INFO)",
                    short(logs.lines()[-3:], 300))


@pytest.mark.task("12.handshake")
def test_plain_http_on_the_tls_port_is_dropped_cleanly(lesson, story, root, certs):
    ca, certfile, keyfile, _ = certs
    server = make_server(lesson, story, root, handshake_timeout=FAR,
                         tls_context=lesson.make_tls_context(certfile, keyfile))
    with serving(server, story) as address:
        with socket.create_connection(address, timeout=WAIT) as plain:
            plain.sendall(request("GET", "/hello.txt"))
            story.step("a client sent a plain-HTTP request to the TLS port")
            how, took, data = closed_within(plain, WAIT)
        story.check(how in ("closed", "reset") and took < 1.0 and not data.startswith(b"HTTP/1.1 200"),
                    "the connection closed at once, no page served in plain text",
                    f"{how} after {took:.2f} s, data {short(data)}")
        reply = ask(address, request("GET", "/hello.txt"), story, ca, who="a TLS client next")
        check_status(story, reply, 200, "the server carries on")
        samples = metrics_of(story, server.metrics.render())
        story.check(value(samples, "http_rejections_total", reason="handshake") == 1,
                    "http_rejections_total{reason=handshake} 1",
                    repr(value(samples, "http_rejections_total", reason="handshake")))


@pytest.mark.task("12.handshake")
def test_over_the_cap_a_tls_client_is_closed_logged_and_counted(lesson, story, root, certs,
                                                                logs):
    ca, certfile, keyfile, _ = certs
    server = make_server(lesson, story, root, max_clients=1, handshake_timeout=FAR,
                         logger=logs.logger,
                         tls_context=lesson.make_tls_context(certfile, keyfile))
    with serving(server, story) as address:
        with tls_connect(address, ca, story, "a TLS client holding the only slot"):
            with socket.create_connection(address, timeout=WAIT) as second:
                second_port = second.getsockname()[1]
                how, took, data = closed_within(second, WAIT)
            story.step("a second client connected (max_clients=1)")
            story.check(how in ("closed", "reset") and not data and took < 1.0,
                        "the second closed at once, without a plain-text 503 (a TLS client "
                        "could not read it; a handshake would block accept)",
                        f"{how} after {took:.2f} s, data {short(data)}")
            want = f"REJECT 127.0.0.1:{second_port} at capacity (1 connections)"
            line = wait_for_line(logs, want, start="REJECT", server=server)
            story.check(line == want, f"the log line '{want}' (lesson 09's)",
                        short(logs.lines()[-3:], 300))
        samples = metrics_of(story, server.metrics.render())
        story.check(value(samples, "http_rejections_total", reason="cap") == 1,
                    "http_rejections_total{reason=cap} 1",
                    repr(value(samples, "http_rejections_total", reason="cap")))


@pytest.mark.task("12.handshake")
def test_stop_is_quick_with_tls_clients_stalled(lesson, story, root, certs):
    ca, certfile, keyfile, _ = certs
    server = make_server(lesson, story, root, handshake_timeout=30.0, idle_timeout=30.0,
                         tls_context=lesson.make_tls_context(certfile, keyfile))
    with serving(server, story) as address:
        stalled = [socket.create_connection(address, timeout=WAIT) for _ in range(2)]
        idle = tls_connect(address, ca, story, "a TLS client that then says nothing")
        story.step("2 clients stalled mid-handshake (handshake_timeout=30), 1 idle after it")
        try:
            ends = time.monotonic() + WAIT
            while server.active_connections < 3 and time.monotonic() < ends:
                time.sleep(0.01)
            started = time.monotonic()
            stopping = run_in_thread(server.stop, name="grader-stop")
            try:
                stopping.result(timeout=3.0)
            except TimeoutError:
                pass
            took = time.monotonic() - started
            story.step("called stop()")
            story.check(took < 1.0, "stop() to return within 1 s (it must reach connections "
                        "that wrap_socket detached)", f"{took:.2f} s")
        finally:
            for sock in [*stalled, idle]:
                sock.close()


# --------------------------------------------------------------------------- 12.hsts

REQUESTS = [("GET /hello.txt", request("GET", "/hello.txt"), 200),
            ("HEAD /hello.txt", request("HEAD", "/hello.txt"), 200),
            ("GET /missing", request("GET", "/missing"), 404),
            ("POST /hello.txt", request("POST", "/hello.txt", body=b"{}"), 405),
            ("GET /me", request("GET", "/me"), 401),
            ("GET /boom", request("GET", "/boom"), 500),
            ("GET /metrics", request("GET", "/metrics"), 200)]


@pytest.mark.task("12.hsts")
def test_hsts_on_every_response_over_tls(lesson, story, root, certs):
    ca, certfile, keyfile, _ = certs
    server = make_server(lesson, story, root, handshake_timeout=FAR, rate=len(REQUESTS),
                         tls_context=lesson.make_tls_context(certfile, keyfile))
    with serving(server, story) as address:
        for what, data, status in [*REQUESTS, ("one request over the rate", request("GET", "/"), 429)]:
            reply = ask(address, data, story, ca)
            check_status(story, reply, status, what)
            age = hsts_age(reply)
            story.check(age is not None and age >= 86400,
                        f"Strict-Transport-Security: max-age=<a day or more> on {what} over TLS",
                        short(reply.raw_head, 300))
            story.check(reply.header("x-content-type-options") == "nosniff",
                        "lesson 08's security headers kept", short(reply.raw_head, 300))


@pytest.mark.task("12.hsts")
def test_no_hsts_over_plain_http(lesson, story, root):
    server = make_server(lesson, story, root)
    with serving(server, story) as address:
        for what, data, status in REQUESTS:
            reply = ask(address, data, story)
            check_status(story, reply, status, what)
            story.check(reply.header("strict-transport-security") is None
                        and reply.header("x-content-type-options") == "nosniff",
                        f"no Strict-Transport-Security on {what} over plain HTTP (browsers "
                        "ignore it there; an attacker could forge it), the other headers kept",
                        short(reply.raw_head, 300))


# --------------------------------------------------------------------------- 12.program

DEFAULTS = {"rate": 120, "rate_window": 60.0, "trusted_proxy": [], "max_tracked": 10_000,
            "users": None, "session_ttl": 1800.0, "certfile": None, "keyfile": None,
            "handshake_timeout": 5.0, "max_clients": 100, "header_timeout": 10.0,
            "body_timeout": 30.0, "idle_timeout": 5.0, "send_timeout": 10.0,
            "max_body": 1 << 20, "max_json_depth": 32, "port": 0, "host": "127.0.0.1",
            "log_level": "INFO"}


@pytest.mark.task("12.program")
def test_the_parser_has_every_flag_and_default(lesson, story):
    story.step("called build_parser().parse_args([])")
    parser = lesson.build_parser()
    args = vars(parser.parse_args([]))
    got = {name: args.get(name, "<missing>") for name in DEFAULTS}
    story.check(got == DEFAULTS, f"the defaults {DEFAULTS}", repr(got))
    story.check(parser.prog.endswith(".http_server"), "prog 'python -m <package>.http_server'",
                repr(parser.prog))
    text = parser.format_help()
    missing = [flag for flag in ("--rate", "--rate-window", "--trusted-proxy", "--max-tracked",
                                 "--users", "--session-ttl", "--certfile", "--keyfile",
                                 "--handshake-timeout", "--header-timeout", "--max-clients")
               if flag not in text]
    story.check(not missing and "(default: 120)" in text and "(default: None)" not in text
                and "(default: [])" not in text,
                "--help naming every flag, with real defaults ('(default: 120)') and no "
                "'(default: None)' or '(default: [])'", f"missing {missing}; "
                f"{short(text[-400:], 400)}")
    silent = [a.option_strings[0] for a in parser._actions if not (a.help or "").strip()]
    story.check(not silent and "/metrics" in (parser.description or ""),
                "a help text for every flag, and a description naming GET /metrics",
                f"no help: {silent}; description {parser.description!r}")
    args = parser.parse_args(["--trusted-proxy", "10.0.0.1", "--trusted-proxy", "10.8.0.0/16"])
    story.check(args.trusted_proxy == ["10.0.0.1", "10.8.0.0/16"],
                "--trusted-proxy repeatable, a list", repr(args.trusted_proxy))
    for flag in ("--rate", "--rate-window", "--max-tracked", "--session-ttl",
                 "--handshake-timeout"):
        for bad in ("0", "-1"):
            with contextlib.redirect_stderr(io.StringIO()):
                try:
                    parser.parse_args([flag, bad])
                except SystemExit as exc:
                    if exc.code == 2:
                        continue
            story.fail(f"{flag} {bad} refused with exit status 2", "accepted")


@pytest.mark.task("12.program")
@pytest.mark.timeout(20)
def test_main_refuses_half_a_certificate_and_bad_files(lesson, story, certs, tmp_path, capsys,
                                                       signal_safety_net):
    _, certfile, keyfile, _ = certs
    for argv in (["--certfile", certfile], ["--keyfile", keyfile]):
        story.step(f"called main({argv}) (a SIGTERM after 3 s if it runs a server instead)")
        rescue = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
        rescue.name = "grader-rescue"
        rescue.start()
        try:
            status = lesson.main(argv)
        except SystemExit as exc:
            status = exc.code
        finally:
            rescue.cancel()
        err = capsys.readouterr().err
        story.check(status == 2 and "--certfile" in err.splitlines()[-1]
                    and "--keyfile" in err.splitlines()[-1],
                    "exit status 2, the last stderr line naming --certfile and --keyfile",
                    f"{status!r}; stderr ends {short(err[-200:], 200)}")
    bad_users = tmp_path / "users.txt"
    bad_users.write_text("not a users file\n")
    for argv in (["--certfile", certfile, "--keyfile", str(tmp_path / "none.pem")],
                 ["--users", str(bad_users)], ["--trusted-proxy", "not-an-address"],
                 ["--root", str(tmp_path / "no-such-folder")]):
        story.step(f"called main({argv})")
        status = lesson.main(argv)
        captured = capsys.readouterr()
        story.check(status == 2 and captured.err.startswith("error: ")
                    and argv[1] in captured.err and "listening" not in captured.out,
                    "return 2 with 'error: ...' naming the value on stderr, before listening",
                    f"{status!r}; stderr {short(captured.err, 200)}")


class FirstLineOut(io.StringIO):
    """A stand-in for sys.stdout that notices when a whole first line has been flushed."""

    def __init__(self):
        super().__init__()
        self.line_flushed = threading.Event()

    def flush(self):
        super().flush()
        if "\n" in self.getvalue():
            self.line_flushed.set()


def drive_main(out, made, seen, ca):
    """Once the first line is flushed: a client stalls mid-handshake, another asks for
    /metrics (over TLS when ca is given), then SIGTERM to this process."""
    stalled = None
    try:
        if not out.line_flushed.wait(5.0):
            seen["problem"] = f"no flushed first line within 5 s (stdout: {out.getvalue()!r})"
            return
        seen["first"] = out.getvalue().splitlines()[0]
        if not made:
            seen["problem"] = "main() did not create a SecureHTTPServer"
            return
        address = made[-1].address
        stalled = socket.create_connection(address, WAIT)
        sock = socket.create_connection(address, WAIT)
        if ca is not None:
            sock = client_context(ca).wrap_socket(sock, server_hostname="127.0.0.1")
        with sock:
            sock.sendall(request("GET", "/metrics"))
            seen["reply"] = Reader(sock).response().status
    except Exception as exc:
        seen["problem"] = describe(exc)
    finally:
        seen["signalled"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        if stalled is not None:
            seen["stalled"] = stalled


@pytest.mark.task("12.program")
@pytest.mark.timeout(20)
@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_main_passes_every_flag_on_then_returns_0_on_sigterm(
        lesson, story, root, certs, tmp_path, signal_safety_net, monkeypatch, caplog, tls):
    ca, certfile, keyfile, _ = certs
    made = []

    class Recorded(lesson.SecureHTTPServer):
        poll_interval = 0.05

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(lesson, "SecureHTTPServer", Recorded)
    out = FirstLineOut()
    monkeypatch.setattr(sys, "stdout", out)
    caplog.set_level(logging.INFO)
    users = lesson.UserStore(n=2**10)
    users.add("alice", "correct horse")
    users.save(tmp_path / "users.txt")
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    argv = ["--port", str(port), "--root", str(root), "--max-clients", "7",
            "--idle-timeout", "0.9", "--header-timeout", "0.7", "--body-timeout", "0.8",
            "--send-timeout", "1.1", "--max-body", "10", "--max-json-depth", "3", "--rate", "50", "--rate-window", "30",
            "--trusted-proxy", "10.0.0.1", "--trusted-proxy", "10.0.0.2", "--max-tracked", "77",
            "--users", str(tmp_path / "users.txt"), "--session-ttl", "99",
            "--handshake-timeout", "20"]
    if tls:
        argv += ["--certfile", certfile, "--keyfile", keyfile]
    story.step(f"called main({argv}) in this process; a helper thread, once the first line "
               "was flushed, left a client stalled mid-handshake, asked GET /metrics, then "
               "sent this process SIGTERM")
    seen = {}
    driver = threading.Thread(target=drive_main, args=(out, made, seen, ca if tls else None),
                              name="grader-driver", daemon=True)
    driver.start()
    try:
        status = lesson.main(argv)
    except NotImplementedError:
        raise
    except BaseException as exc:
        story.fail("main() to return 0 after SIGTERM", describe(exc))
    returned = time.monotonic()
    driver.join(WAIT)
    if "stalled" in seen:
        seen["stalled"].close()
    story.check("problem" not in seen, "a flushed first line and a server that answers",
                seen.get("problem", ""))
    scheme = "https" if tls else "http"
    story.check(seen.get("first") == f"listening on {scheme}://127.0.0.1:{port}",
                f"the first line 'listening on {scheme}://127.0.0.1:{port}'",
                repr(seen.get("first")))
    story.check(seen.get("reply") == 200, "GET /metrics: 200", repr(seen.get("reply")))
    server = made[-1]
    got = {"tls": server.tls, "handshake_timeout": server.handshake_timeout,
           "max_clients": server.max_clients, "idle_timeout": server.idle_timeout,
           "rate": server.limiter.rate, "rate_window": server.limiter.window,
           "max_tracked": server.limiter.max_tracked,
           "trusted_proxies": tuple(server.trusted_proxies),
           "session_ttl": server.sessions.idle_ttl, "alice": "alice" in server.users,
           "root": server.root, "header_timeout": server.header_timeout,
           "body_timeout": server.body_timeout, "send_timeout": server.send_timeout,
           "max_body": server.max_body, "max_json_depth": server.max_json_depth}
    want = {"tls": tls, "handshake_timeout": 20.0, "max_clients": 7, "idle_timeout": 0.9,
            "rate": 50, "rate_window": 30.0, "max_tracked": 77,
            "trusted_proxies": ("10.0.0.1", "10.0.0.2"), "session_ttl": 99.0, "alice": True,
            "root": root.resolve(), "header_timeout": 0.7, "body_timeout": 0.8,
            "send_timeout": 1.1, "max_body": 10, "max_json_depth": 3}
    story.check(got == want, f"the server main() made has every flag: {want}", repr(got))
    story.check(status == 0, "main() to return 0 after SIGTERM", repr(status))
    took = returned - seen["signalled"]
    story.check(took < 2.0, "main() to return within 2 s of SIGTERM, a client stalled "
                "mid-handshake (handshake_timeout 20 s) notwithstanding", f"{took:.2f} s")
    story.check(signal.getsignal(signal.SIGTERM) is signal_safety_net,
                "the previous SIGTERM handler back after main()", "it was not restored")
    said = [r.getMessage() for r in caplog.records]
    story.check("SIGTERM: stopping" in said, "the log line 'SIGTERM: stopping'",
                short(said[-3:], 300))


@pytest.mark.task("12.program")
@pytest.mark.timeout(15)
def test_main_reports_a_port_in_use(lesson, story, signal_safety_net, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        story.step("the grader listens on a port itself, then called main(['--port', <that "
                   "port>])")
        rescue = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
        rescue.name = "grader-rescue"
        rescue.start()
        try:
            status = lesson.main(["--port", str(port)])
        finally:
            rescue.cancel()
    captured = capsys.readouterr()
    story.check(status == 1 and captured.err.startswith(f"error: cannot listen on 127.0.0.1:{port}")
                and "listening" not in captured.out,
                f"return 1 with 'error: cannot listen on 127.0.0.1:{port}: <why>' on stderr",
                f"{status!r}; stderr {short(captured.err, 200)}")


@pytest.mark.task("12.program")
@pytest.mark.timeout(20)
def test_the_program_serves_https_and_exits_on_sigint(lesson, story, certs, pytestconfig):
    ca, certfile, keyfile, _ = certs
    folder = Path(pytestconfig.getoption("against")).resolve()
    paths = [str(folder.parent), str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    env.pop("PYTHONUNBUFFERED", None)
    command = [sys.executable, "-m", f"{folder.name}.http_server", "--port", "0",
               "--certfile", certfile, "--keyfile", keyfile, "--handshake-timeout", "20"]
    story.step(f"started: python -m {folder.name}.http_server --port 0 --certfile <cert> "
               "--keyfile <key> --handshake-timeout 20")
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        box = {}
        reader = run_in_thread(lambda: box.setdefault("line", proc.stdout.readline()),
                               name="grader-stdout")
        with contextlib.suppress(TimeoutError):
            reader.result(timeout=8.0)
        first = box.get("line", "")
        if not first:
            proc.kill()
            err = proc.communicate(timeout=WAIT)[1]
            for line in reversed(err.splitlines()):
                if line.startswith("NotImplementedError"):
                    raise NotImplementedError(line.partition(":")[2].strip())
            story.fail("a first line 'listening on https://HOST:PORT' within 8 s",
                       f"nothing; stderr ends {short(err[-300:], 300)}")
        story.check(first.startswith("listening on https://127.0.0.1:"),
                    "the first line 'listening on https://127.0.0.1:PORT'", repr(first))
        address = ("127.0.0.1", int(first.rsplit(":", 1)[1]))
        with socket.create_connection(address, WAIT) as stalled:
            reply = ask(address, request("GET", "/healthz"), story, ca)
            check_status(story, reply, 200, "GET /healthz over TLS")
            story.step("one client stalled mid-handshake; sent SIGINT")
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            try:
                status = proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                story.fail("the program to exit within 2 s of SIGINT", "still running after 3 s")
            took = time.monotonic() - started
        story.check(status == 0 and took < 2.0, "exit status 0 within 2 s",
                    f"{status} after {took:.2f} s")
        err = proc.communicate(timeout=WAIT)[1]
        stamped = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO SIGINT: stopping")
        story.check(any(stamped.fullmatch(line) for line in err.splitlines()),
                    "on stderr, lesson 09's log format at INFO: '<date> <time>,<ms> INFO "
                    "SIGINT: stopping'", short(err[-300:], 300))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)
