"""The attack lab (tools/attack.py) is safe and does what it says.

Safety first: a non-loopback target is refused before a single connection is attempted
(socket.create_connection and socket.socket.connect are replaced by recorders, so a broken
check would be caught without any packet leaving the machine). Then each attack runs against
the lesson 05 reference server on 127.0.0.1, port 0, for a fraction of a second; the slow HTTP
attacks run against the stock ThreadingHTTPServer (which they must hold) and a tiny HTTP
server defined here with a deadline for each stage (which must drop them, on time).
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import logging
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from solutions.lesson04_message_server import MessageServer
from solutions.lesson05_guarded_server import GuardedServer
from tools import attack
from tools.attack import (Refused, loopback_target, parse_url, run_flood, run_oversize,
                          run_slow_body, run_slow_headers, run_slow_http, run_slow_read,
                          run_slowloris)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(30)

QUIET = logging.getLogger("tests.attack_tool.server")  # the servers' REJECT lines stay out of the way
QUIET.propagate = False
QUIET.addHandler(logging.NullHandler())


@pytest.fixture
def no_traffic(monkeypatch):
    """Replace every way the tool could connect with a recorder; yields the list of attempts."""
    attempts = []

    def record_create_connection(address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"tried to connect to {address}")

    def record_connect(self, address):
        attempts.append(address)
        raise AssertionError(f"tried to connect to {address}")

    monkeypatch.setattr(socket, "create_connection", record_create_connection)
    monkeypatch.setattr(socket.socket, "connect", record_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", record_connect)
    return attempts


def fake_dns(monkeypatch, answers: dict[str, list[str]]):
    """Make getaddrinfo answer from `answers` (name -> IPs), without asking any DNS server."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        infos = []
        for ip in answers[host]:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            sockaddr = (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)
            infos.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def run_cli(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "tools.attack", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- refusing targets


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "8.8.8.8", "0.0.0.0"])
@pytest.mark.parametrize("attack_name", ["slowloris", "flood", "oversize", "slow-headers",
                                         "slow-body", "slow-read"])
def test_refuses_non_loopback_address_before_connecting(host, attack_name, no_traffic, capsys):
    status = attack.main([attack_name, "--host", host, "--port", "9000"])
    err = capsys.readouterr().err
    assert status == 2
    assert "loopback" in err and host in err
    assert no_traffic == []


@pytest.mark.parametrize("answers", [["93.184.216.34"], ["127.0.0.1", "93.184.216.34"],
                                     ["2001:db8::1"]])
def test_refuses_a_hostname_that_resolves_off_this_machine(answers, monkeypatch, no_traffic, capsys):
    # Even one non-loopback answer is refused: we could not know which one we would hit.
    fake_dns(monkeypatch, {"victim.example": answers})
    assert attack.main(["slowloris", "--host", "victim.example", "--port", "9000"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    with pytest.raises(Refused):
        run_oversize(("victim.example", 9000), connections=1)
    assert no_traffic == []


def test_refuses_an_unresolvable_name(monkeypatch, no_traffic):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(Refused, match="cannot resolve"):
        loopback_target("nowhere.invalid", 9000)
    assert no_traffic == []


@pytest.mark.parametrize("run", [run_slowloris, run_flood, run_oversize, run_slow_headers,
                                 run_slow_body, run_slow_read])
def test_api_refuses_non_loopback_too(run, no_traffic):
    with pytest.raises(Refused):
        run(("10.0.0.1", 9000), 1)
    assert no_traffic == []


def test_accepts_loopback_names_and_addresses():
    assert loopback_target("127.0.0.1", 9000) == ("127.0.0.1", 9000)
    assert loopback_target("127.0.0.2", 9000) == ("127.0.0.2", 9000)  # all of 127/8 is loopback
    ip, port = loopback_target("localhost", 9000)
    assert ip in ("127.0.0.1", "::1") and port == 9000


def test_cli_refusal_exit_status_and_message():
    # 192.0.2.1 is reserved for documentation (TEST-NET-1): even a broken check would reach nobody.
    done = run_cli("slowloris", "--host", "192.0.2.1", "--port", "9000", timeout=10)
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr and done.stdout == ""


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("argv", [
    ["slowloris", "--port", "9000", "--connections", "5000"],
    ["slowloris", "--port", "9000", "--connections", "0"],
    ["slowloris", "--port", "9000", "--duration", "301"],
    ["slowloris", "--port", "9000", "--interval", "0"],
    ["flood", "--port", "9000", "--connections", "1001"],
    ["flood", "--port", "9000", "--duration", "1000"],
    ["oversize", "--port", "9000", "--connections", "5000"],
    ["oversize", "--port", "9000", "--length", "4294967296"],
    ["oversize", "--port", "0"],
])
def test_bounds_are_enforced_before_connecting(argv, no_traffic, capsys):
    assert attack.main(argv) == 2
    assert "refused" in capsys.readouterr().err
    assert no_traffic == []


def test_api_bounds(no_traffic):
    with pytest.raises(Refused):
        run_slowloris(("127.0.0.1", 9000), connections=1001)
    with pytest.raises(Refused):
        run_flood(("127.0.0.1", 9000), connections=10, duration=301)
    assert no_traffic == []


# --------------------------------------------------------------------------- the attacks


@pytest.fixture
def guarded():
    """A factory for reference GuardedServers, all stopped at teardown."""
    servers = []

    def start(**options):
        options = {"idle_timeout": 1.0, "logger": QUIET, **options}
        server = GuardedServer(**options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_slowloris_beats_a_per_recv_timeout():
    # One byte every 0.1 s never lets a 0.5 s idle timeout fire: held for twice that long.
    with MessageServer(idle_timeout=0.5, logger=QUIET) as server:
        report = run_slowloris(server.address, connections=4, interval=0.1, duration=1.0)
    assert (report.held, report.rejected, report.dropped) == (4, 0, 0), report.summary()
    assert report.opened == 4 and report.failed == 0
    assert report.headline().startswith("4 held for ")


def test_slowloris_is_dropped_by_a_message_deadline(guarded):
    server = guarded(message_deadline=0.3)
    report = run_slowloris(server.address, connections=4, interval=0.1, duration=1.5)
    assert (report.held, report.rejected, report.dropped) == (0, 0, 4), report.summary()
    assert all(e.how in ("closed", "reset") for e in report.endings)
    assert all(e.lifetime < 1.2 for e in report.endings)  # a bound that detects "never dropped"
    assert "dropped by the server:" in report.summary()


def test_slowloris_over_the_cap_gets_the_busy_reply(guarded):
    server = guarded(max_clients=2, message_deadline=5.0)
    report = run_slowloris(server.address, connections=4, interval=0.1, duration=0.6)
    assert (report.held, report.rejected, report.dropped) == (2, 2, 0), report.summary()


def test_slowloris_reconnects_only_when_asked(guarded):
    server = guarded(message_deadline=0.2)
    report = run_slowloris(server.address, connections=2, interval=0.05, duration=0.7,
                           reconnect=True)
    assert report.dropped >= 2 and report.opened > 2, report.summary()
    assert "reconnecting" in report.summary()


def test_slowloris_stops_on_the_event_from_a_background_thread(guarded):
    server = guarded(message_deadline=30.0)
    stop, ready, box = threading.Event(), threading.Event(), {}
    worker = threading.Thread(target=lambda: box.update(report=run_slowloris(
        server.address, 3, 0.1, 60.0, stop=stop, ready=ready)), daemon=True)
    worker.start()
    assert ready.wait(5.0)
    stop.set()
    worker.join(2.0)
    assert not worker.is_alive(), "the attack did not stop within 2 s of the stop event"
    report = box["report"]
    assert report.stopped and report.held == 3
    assert "stopped early" in report.summary()


def test_flood_counts_accepted_and_busy(guarded):
    server = guarded(max_clients=1, message_deadline=5.0)
    # Hold the only slot with a real conversation, so the server has certainly taken it.
    with socket.create_connection(server.address, timeout=2.0) as holder:
        holder.sendall(attack.HEADER.pack(10) + b"echo hello")
        holder.settimeout(2.0)
        assert holder.recv(100).endswith(b"hello")
        report = run_flood(server.address, connections=20, duration=5.0, concurrency=4)
    assert report.attempts == 20
    assert report.outcomes["busy"] == 20, report.summary()
    with MessageServer(idle_timeout=1.0, logger=QUIET) as plain:
        report = run_flood(plain.address, connections=20, duration=5.0, concurrency=4, linger=0.05)
    assert report.outcomes["accepted"] == 20, report.summary()


def test_oversize_is_closed_quickly(guarded):
    server = guarded()
    report = run_oversize(server.address, connections=10)
    assert report.closed == 10 and report.closed_within_1s == 10, report.summary()
    assert "closed by the server:" in report.summary()


def test_oversize_notices_a_server_that_waits(guarded):
    # A small announced length is legal: the server waits for the body, and the tool says so.
    server = guarded(message_deadline=5.0)
    report = run_oversize(server.address, connections=2, length=10, wait=0.2)
    assert report.count("open") == 2 and report.closed == 0, report.summary()


def test_nothing_listening_exits_1(capsys):
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert attack.main(["oversize", "--port", str(port), "--connections", "2"]) == 1
    assert "could not connect" in capsys.readouterr().err


# --------------------------------------------------------------------------- the program


def test_cli_runs_an_attack_and_prints_a_summary(guarded):
    server = guarded(message_deadline=0.3)
    port = str(server.address[1])
    done = run_cli("slowloris", "--port", port, "--connections", "3", "--interval", "0.1",
                   "--duration", "1")
    assert done.returncode == 0, done.stderr
    assert "dropped by the server:              3" in done.stdout, done.stdout
    done = run_cli("oversize", "--port", port, "--connections", "3")
    assert done.returncode == 0, done.stderr
    assert "closed by the server:               3" in done.stdout, done.stdout


def test_ctrl_c_stops_the_attack_and_still_prints_the_summary(guarded):
    server = guarded(message_deadline=30.0)
    attack_program = subprocess.Popen(
        [sys.executable, "-m", "tools.attack", "slowloris", "--port", str(server.address[1]),
         "--connections", "3", "--interval", "0.2", "--duration", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Ctrl-C stops" in attack_program.stdout.readline()  # the attack has begun
        time.sleep(0.3)
        attack_program.send_signal(signal.SIGINT)
        out, err = attack_program.communicate(timeout=5)
    finally:
        attack_program.kill()
    assert attack_program.returncode == 0, err
    assert "stopped early" in out and "held open to the end:               3" in out, out


@pytest.mark.parametrize("argv", [[], ["slowloris"], ["flood"], ["oversize"], ["slow-headers"],
                                  ["slow-body"], ["slow-read"]])
def test_help(argv):
    done = run_cli(*argv, "--help", timeout=10)
    assert done.returncode == 0 and "usage: python -m tools.attack" in done.stdout


# --------------------------------------------------------------------------- slow HTTP: safety

@pytest.mark.parametrize("attack_name", ["slow-headers", "slow-body", "slow-read"])
@pytest.mark.parametrize("url", ["http://10.0.0.1:8080/", "http://8.8.8.8/", "http://[2001:db8::1]:80/",
                                 "http://0.0.0.0:8080/"])
def test_slow_http_refuses_a_non_loopback_url(attack_name, url, no_traffic, capsys):
    assert attack.main([attack_name, "--url", url]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    assert no_traffic == []


@pytest.mark.parametrize("attack_name", ["slow-headers", "slow-body", "slow-read"])
def test_slow_http_refuses_a_name_that_resolves_elsewhere(attack_name, monkeypatch, no_traffic,
                                                          capsys):
    fake_dns(monkeypatch, {"shop.example": ["127.0.0.1", "203.0.113.7"],
                           "localhost.evil.example": ["198.51.100.9"]})
    assert attack.main([attack_name, "--url", "http://shop.example:8080/"]) == 2
    assert attack.main([attack_name, "--host", "localhost.evil.example", "--port", "80"]) == 2
    err = capsys.readouterr().err
    assert "203.0.113.7" in err and "198.51.100.9" in err
    with pytest.raises(Refused):
        run_slow_http(attack_name, ("shop.example", 8080), 1)
    assert no_traffic == []


@pytest.mark.parametrize("argv", [
    ["slow-headers", "--port", "9000", "--connections", "1001"],
    ["slow-headers", "--port", "9000", "--connections", "0"],
    ["slow-headers", "--port", "9000", "--duration", "301"],
    ["slow-headers", "--port", "9000", "--duration", "0"],
    ["slow-headers", "--port", "9000", "--interval", "0"],
    ["slow-headers", "--port", "9000", "--rate", "0"],
    ["slow-headers"],                                   # no target at all
    ["slow-headers", "--url", "https://127.0.0.1:9000/"],  # TLS is not spoken here
    ["slow-headers", "--url", "http://127.0.0.1:99999/"],
    ["slow-body", "--port", "9000", "--body-size", "0"],
    ["slow-body", "--url", "http://127.0.0.1:9000/echo", "--connections", "5000"],
    ["slow-read", "--port", "9000", "--read-bytes", "-1"],
    ["slow-read", "--port", "9000", "--pipeline", "0"],
    ["slow-read", "--port", "9000", "--rcvbuf", "0"],
    ["slow-read", "--port", "9000", "--path", "/a b"],
])
def test_slow_http_bounds_are_enforced_before_connecting(argv, no_traffic, capsys):
    assert attack.main(argv) == 2
    assert "refused" in capsys.readouterr().err
    assert no_traffic == []


def test_slow_http_api_bounds(no_traffic):
    address = ("127.0.0.1", 9000)
    for kwargs in ({"connections": 1001}, {"duration": 300.5}, {"interval": 61},
                   {"path": "no-slash"}, {"rate": 0}, {"drain": 11}):
        with pytest.raises(Refused):
            run_slow_headers(address, **kwargs)
    with pytest.raises(Refused, match="unknown attack"):
        run_slow_http("slow-everything", address)
    assert no_traffic == []


def test_parse_url():
    assert parse_url("http://127.0.0.1:8080/a/b?c=d") == ("127.0.0.1", 8080, "/a/b?c=d")
    assert parse_url("http://localhost") == ("localhost", 80, "/")
    assert parse_url("http://[::1]:81/x") == ("::1", 81, "/x")


# --------------------------------------------------------------------------- slow HTTP: servers

BIG = 8 << 20  # bytes: a reply bigger than the kernel's socket buffers on loopback (a few MiB)


class QuietStock(http.server.SimpleHTTPRequestHandler):
    """The stock handler as lesson 07 starts from it: keep-alive on, no limits of any kind,
    plus the naive POST a student would write (reads exactly Content-Length bytes)."""
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        reply = b'{"received": %d}' % len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


class StockServer(http.server.ThreadingHTTPServer):
    block_on_close = False  # teardown must not wait for threads the attack left behind

    def handle_error(self, request, client_address):
        pass  # a client that hung up mid-reply is expected here


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text("<p>hello</p>\n")
    (root / "big.bin").write_bytes(b"b" * BIG)
    return root


@pytest.fixture
def stock(site):
    server = StockServer(("127.0.0.1", 0), functools.partial(QuietStock, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()
    thread.join(2.0)


class TinyHttp:
    """Just enough of an HTTP server to be attacked: a thread per connection, and each lesson 09
    defence as an option. A deadline (not a per-recv timeout) for the request head from the
    first byte, another for the body, a send timeout after which a slow reader is reset (or, with
    polite=True, simply closed), and a cap answered with 503 on the accept thread."""

    def __init__(self, header_deadline=30.0, body_deadline=30.0, send_timeout=30.0,
                 max_clients=1000, polite=False, reply_size=BIG):
        self.header_deadline, self.body_deadline = header_deadline, body_deadline
        self.send_timeout, self.max_clients, self.polite = send_timeout, max_clients, polite
        self.reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % reply_size + b"r" * reply_size
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.listener.settimeout(0.05)
        self.address = self.listener.getsockname()
        self.active = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with self.lock:
                full = self.active >= self.max_clients
                self.active += not full
            if full:
                conn.setblocking(False)
                with contextlib.suppress(OSError):
                    conn.send(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                              b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def read_until(self, conn, done, deadline):
        data = bytearray()
        while not done(data):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            conn.settimeout(left)
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError
            data += chunk
        return bytes(data)

    def handle(self, conn):
        try:
            head = self.read_until(conn, lambda d: b"\r\n\r\n" in d,
                                   time.monotonic() + self.header_deadline)
            head, _, extra = head.partition(b"\r\n\r\n")
            if head.startswith(b"POST"):
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                self.read_until(conn, lambda d: len(extra) + len(d) >= length,
                                time.monotonic() + self.body_deadline)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            else:
                conn.settimeout(self.send_timeout)
                try:
                    conn.sendall(self.reply)  # since 3.5 the timeout bounds the whole sendall
                except TimeoutError:
                    if not self.polite:  # SO_LINGER 0: close() resets, freeing the buffers
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            time.sleep(0.05)
        except TimeoutError:
            with contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                             b"Content-Length: 0\r\n\r\n")
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.active -= 1

    def close(self):
        self.stopping.set()
        self.thread.join(2.0)
        self.listener.close()


@pytest.fixture
def tiny():
    servers = []

    def start(**options):
        servers.append(TinyHttp(**options))
        return servers[-1].address

    yield start
    for server in servers:
        server.close()


def check_dropped_on_time(report, deadline, status=None):
    """Every connection dropped, each no earlier than 0.9x the deadline and no later than 1.7x
    (plus one attack interval, our own clock's grain): a deadline twice too long would fail."""
    assert report.held == 0 and report.rejected == 0, report.summary()
    assert report.dropped == report.connections, report.summary()
    for ending in report.endings:
        assert deadline * 0.9 <= ending.lifetime <= deadline * 1.7 + report.interval, report.summary()
        if status is not None:
            assert ending.status == status, report.summary()


# --------------------------------------------------------------------------- slow HTTP: attacks

def test_slow_headers_holds_the_stock_server(stock):
    report = run_slow_headers(stock, connections=5, interval=0.05, duration=0.5)
    assert (report.opened, report.held, report.rejected, report.dropped) == (5, 5, 0, 0), \
        report.summary()
    assert not report.replies  # the stock server is still waiting for the end of the headers
    opener = len(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{stock[1]}\r\nUser-Agent: tools.attack\r\n"
                 "X-Slow: ")
    assert report.bytes_sent - 5 * opener >= 5 * 4, "the header bytes were not trickled"


def test_slow_headers_is_dropped_by_a_header_deadline(tiny):
    report = run_slow_headers(tiny(header_deadline=0.4), connections=5, interval=0.05,
                              duration=1.5)
    check_dropped_on_time(report, 0.4, status=408)
    assert report.replies == {408: 5}
    assert "dropped by the server:              5" in report.summary()
    assert "408 x5" in report.summary()


def test_slow_body_holds_the_stock_server(stock):
    report = run_slow_body(stock, connections=5, interval=0.05, duration=0.5)
    assert (report.opened, report.held, report.dropped) == (5, 5, 0), report.summary()
    assert not report.replies
    opener = len(f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:{stock[1]}\r\nUser-Agent: tools.attack"
                 "\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n")
    assert report.bytes_sent - 5 * opener >= 5 * 4, "the body bytes were not trickled"


def test_slow_body_is_dropped_by_a_body_deadline_not_the_header_one(tiny):
    # The headers arrive at once; only the body is slow. A 30 s header deadline does not help.
    report = run_slow_body(tiny(body_deadline=0.4), connections=5, interval=0.05, duration=1.5)
    check_dropped_on_time(report, 0.4, status=408)


def test_slow_body_that_completes_is_answered_and_goes_on(stock):
    # A 10-byte body is done in 0.2 s; the stock server answers and keeps the connection alive,
    # so the attack starts another request on it.
    report = run_slow_body(stock, connections=2, interval=0.02, duration=0.9, body_size=10)
    assert report.replies[200] >= 4 and report.held == 2, report.summary()


def test_slow_read_holds_the_stock_server(stock):
    report = run_slow_read(stock, connections=3, interval=0.05, duration=0.5, path="/big.bin",
                           drain=0)
    assert (report.opened, report.held, report.dropped) == (3, 3, 0), report.summary()
    assert report.replies == {200: 3}
    assert report.notes == []  # 8 MiB is well over the socket buffers
    # Really slow: the head and a byte per tick, not the 8 MiB the server is trying to send.
    assert report.bytes_received < 3 * 64 * 1024, report.bytes_received


def test_slow_read_is_reset_by_a_send_timeout(tiny):
    # The reset is seen within one attack interval of the server's send timeout.
    report = run_slow_read(tiny(send_timeout=0.4), connections=3, interval=0.05, duration=1.5,
                           drain=0.3)
    check_dropped_on_time(report, 0.4)
    assert all(e.how == "reset" for e in report.endings), report.summary()


def test_slow_read_notices_a_polite_close_at_the_end(tiny):
    # A server that closes without a reset leaves the rest of the reply queued behind our tiny
    # window: only reading it quickly at the end shows that the reply was cut short.
    report = run_slow_read(tiny(send_timeout=0.3, polite=True), connections=2, interval=0.05,
                           duration=0.6, drain=2.0)
    assert report.held == 0 and report.dropped == 2, report.summary()
    assert all(e.how == "cut short" for e in report.endings)
    assert "found cut short at the end" in report.summary()


def test_slow_read_reading_nothing_is_held_too(stock):
    report = run_slow_read(stock, connections=2, interval=0.05, duration=0.5, path="/big.bin",
                           read_bytes=0, drain=0.2)
    assert report.held == 2, report.summary()


def test_slow_read_of_a_small_file_says_it_proves_little(stock):
    report = run_slow_read(stock, connections=1, interval=0.05, duration=0.3,
                           path="/index.html", drain=0.2)
    assert report.replies == {200: 1}
    assert "may fit in the kernel's socket buffers" in report.summary()


@pytest.mark.parametrize("run", [run_slow_headers, run_slow_body])
def test_slow_http_over_the_cap_is_refused_with_503(run, tiny):
    report = run(tiny(max_clients=2), connections=5, interval=0.05, duration=0.5)
    assert (report.held, report.rejected, report.dropped) == (2, 3, 0), report.summary()
    assert report.replies == {503: 3}
    assert "refused (503 over the cap):         3" in report.summary()


def test_slow_http_reconnects_only_when_asked(tiny):
    address = tiny(header_deadline=0.2)
    once = run_slow_headers(address, connections=2, interval=0.05, duration=0.7)
    again = run_slow_headers(address, connections=2, interval=0.05, duration=0.7, reconnect=True)
    assert once.opened == 2 and once.dropped == 2, once.summary()
    assert again.opened > 2 and again.dropped >= 2, again.summary()
    assert "reconnecting" in again.summary()


def test_slow_http_nothing_listening_is_counted_as_failed():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = run_slow_headers(("127.0.0.1", port), connections=3, interval=0.05, duration=0.5)
    assert report.opened == 0 and report.failed == 3 and report.held == 0, report.summary()


@pytest.mark.parametrize("run", [run_slow_headers, run_slow_read])
def test_slow_http_stops_on_the_event_from_a_background_thread(run, stock):
    stop, ready, box = threading.Event(), threading.Event(), {}
    worker = threading.Thread(target=lambda: box.update(report=run(
        stock, 3, 0.05, 60.0, stop=stop, ready=ready, path="/big.bin", drain=0.2)), daemon=True)
    worker.start()
    assert ready.wait(5.0)
    time.sleep(0.2)
    stop.set()
    worker.join(2.0)
    assert not worker.is_alive(), "the attack did not stop within 2 s of the stop event"
    report = box["report"]
    assert report.stopped and report.held == 3, report.summary()
    assert "stopped early" in report.summary()


def test_cli_slow_headers_against_a_deadline(tiny):
    address = tiny(header_deadline=0.3)
    done = run_cli("slow-headers", "--url", f"http://127.0.0.1:{address[1]}/", "--connections",
                   "4", "--interval", "0.05", "--duration", "1.2")
    assert done.returncode == 0, done.stderr
    assert "dropped by the server:              4" in done.stdout, done.stdout
    assert "408 x4" in done.stdout, done.stdout


def test_cli_slow_read_against_the_stock_server(stock):
    done = run_cli("slow-read", "--port", str(stock[1]), "--path", "/big.bin", "--connections",
                   "2", "--interval", "0.05", "--duration", "0.4")
    assert done.returncode == 0, done.stderr
    assert "held open to the end:               2" in done.stdout, done.stdout
