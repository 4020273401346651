"""The attack lab (tools/attack.py) is safe and does what it says.

Safety first: a non-loopback target is refused before a single connection is attempted
(socket.create_connection and socket.socket.connect are replaced by recorders, so a broken
check would be caught without any packet leaving the machine). Then each attack runs against
the lesson 05 reference server on 127.0.0.1, port 0, for a fraction of a second.
"""
from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from solutions.lesson04_message_server import MessageServer
from solutions.lesson05_guarded_server import GuardedServer
from tools import attack
from tools.attack import Refused, loopback_target, run_flood, run_oversize, run_slowloris

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
@pytest.mark.parametrize("attack_name", ["slowloris", "flood", "oversize"])
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


@pytest.mark.parametrize("run", [run_slowloris, run_flood, run_oversize])
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


@pytest.mark.parametrize("argv", [[], ["slowloris"], ["flood"], ["oversize"]])
def test_help(argv):
    done = run_cli(*argv, "--help", timeout=10)
    assert done.returncode == 0 and "usage: python -m tools.attack" in done.stdout
