"""Soak the server program with hostile traffic and check honest clients lose nothing.

    python -m tools.soak                                   # the reference server
    python -m tools.soak --server exercises.message_server # your lesson 06 program

It starts the server program as a real subprocess on 127.0.0.1 (port 0), then runs each
scenario below, and after each one an honest client must still get every reply:

    oversize    hundreds of forged 4 GiB lengths: each closed within a second, memory flat
    flood       hundreds of connect/close cycles: the thread count returns to its baseline
    resets      connections reset (RST) in the middle of a frame
    bad utf-8   invalid UTF-8 frames: an error reply each, the connection stays usable
    pipelined   hundreds of frames in one send: every reply, in order
    trickle     clients trickling bytes under the idle timeout, while an honest client works

Memory and thread counts come from /proc (Linux); elsewhere they print as "n/a". This is a
benchmark, not a test: it prints figures, and exits 1 if an honest reply was lost, a
scenario broke the server's side of the protocol, or SIGTERM did not end it with status 0.
"""
from __future__ import annotations

import argparse
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from solutions.lesson03_framing import HEADER, encode_frame, recv_msg
from tools.attack import run_flood, run_oversize, run_slowloris

REPO = Path(__file__).resolve().parent.parent
def proc_stats(pid: int) -> dict:
    """Resident memory (KiB) and thread count of a process, from /proc (Linux only)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {"rss_kib": None, "threads": None}
    rss = re.search(r"VmRSS:\s+(\d+)", text)
    threads = re.search(r"Threads:\s+(\d+)", text)
    return {"rss_kib": int(rss.group(1)) if rss else None,
            "threads": int(threads.group(1)) if threads else None}


class Honest:
    """An honest client: asks `echo <n>` and counts replies that came back right."""

    def __init__(self, address):
        self.address = address
        self.asked = self.answered = 0

    def round(self, count: int = 5) -> None:
        try:
            with socket.create_connection(self.address, timeout=2.0) as sock:
                for _ in range(count):
                    self.asked += 1
                    sock.sendall(encode_frame(f"echo {self.asked}"))
                    if recv_msg(sock) == str(self.asked):
                        self.answered += 1
                sock.sendall(encode_frame("quit"))
                recv_msg(sock)
        except OSError:
            pass  # counted: asked but not answered

    @property
    def lost(self) -> int:
        return self.asked - self.answered


def start_server(module: str, flags: list[str]):
    command = [sys.executable, "-m", module, "--port", "0", *flags]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()  # the program's contract: its first stdout line
    match = re.match(r"listening on ([\d.]+):(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"{module} did not print 'listening on HOST:PORT' (got {line!r})")
    return proc, (match.group(1), int(match.group(2)))


def settle(pid: int, threads: int | None, wait: float = 5.0) -> int | None:
    """Wait (up to `wait` s) for the server's thread count to come back to `threads`."""
    ends = time.monotonic() + wait
    while True:
        now = proc_stats(pid)["threads"]
        if now is None or threads is None or now <= threads or time.monotonic() > ends:
            return now
        time.sleep(0.05)


def resets(address, count: int) -> int:
    """Open `count` connections that send half a frame and then reset (RST) the connection."""
    done = 0
    for _ in range(count):
        with socket.create_connection(address, timeout=2.0) as sock:
            sock.sendall(HEADER.pack(100) + b"half a mess")
            # SO_LINGER on with a zero timeout: close() sends RST instead of a polite FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        done += 1
    return done


def bad_utf8(address, count: int) -> int:
    """Send `count` invalid UTF-8 frames on one connection; return how many got the error
    reply (minus one if the same connection then fails an honest echo)."""
    raw = b"caf\xe9 \xff\xfe"  # Latin-1 and stray bytes: not UTF-8
    errors = 0
    with socket.create_connection(address, timeout=2.0) as sock:
        for _ in range(count):
            sock.sendall(HEADER.pack(len(raw)) + raw)
            errors += recv_msg(sock) == "error: invalid UTF-8"
        sock.sendall(encode_frame("echo still here"))
        errors -= recv_msg(sock) != "still here"
    return errors


def pipelined(address, count: int) -> int:
    """Send `count` frames in ONE sendall, then read the replies; return how many matched."""
    with socket.create_connection(address, timeout=5.0) as sock:
        sock.sendall(b"".join(encode_frame(f"echo {i}") for i in range(count)))
        return sum(recv_msg(sock) == str(i) for i in range(count))


def attempt(work, *args):
    """Run one scenario; a server that breaks it is reported, not a traceback."""
    try:
        return work(*args)
    except (OSError, ValueError) as exc:
        return f"failed: {type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="solutions.message_server",
                        help="module of the server program to start (default: %(default)s)")
    parser.add_argument("--count", type=int, default=300,
                        help="connections per hostile scenario (default: %(default)s)")
    args = parser.parse_args(argv)
    count = max(1, min(args.count, 1000))

    flags = ["--idle-timeout", "2", "--message-deadline", "1", "--max-clients", "12"]
    proc, address = start_server(args.server, flags)
    honest = Honest(address)
    rows = []

    def row(name, achieved, before, after):
        honest.round()
        rows.append((name, achieved, before, after, honest.lost))

    try:
        honest.round()
        base = proc_stats(proc.pid)

        before = proc_stats(proc.pid)
        report = run_oversize(address, connections=count, wait=2.0)
        slowest = max((r.seconds for r in report.results), default=0.0)
        row("oversize (4 GiB length)", f"{report.closed_within_1s}/{count} closed within 1 s, "
            f"slowest {slowest * 1000:.1f} ms", before, proc_stats(proc.pid))

        before = proc_stats(proc.pid)
        flood = run_flood(address, connections=count, duration=60, concurrency=20)
        settle(proc.pid, base["threads"])
        outcomes = ", ".join(f"{n} {how}" for how, n in sorted(flood.outcomes.items()))
        row("flood (connect/close)", f"{flood.attempts} cycles: {outcomes}", before,
            proc_stats(proc.pid))

        before = proc_stats(proc.pid)
        n = attempt(resets, address, count)
        settle(proc.pid, base["threads"])
        row("resets mid-frame", n if isinstance(n, str) else f"{n} connections reset", before,
            proc_stats(proc.pid))

        before = proc_stats(proc.pid)
        ok = attempt(bad_utf8, address, count)
        row("invalid UTF-8", ok if isinstance(ok, str) else
            f"{ok}/{count} error replies, connection kept", before, proc_stats(proc.pid))

        before = proc_stats(proc.pid)
        ok = attempt(pipelined, address, count)
        row("pipelined frames", ok if isinstance(ok, str) else f"{ok}/{count} replies in order",
            before, proc_stats(proc.pid))

        before = proc_stats(proc.pid)
        stop = threading.Event()

        def keep_asking():  # an honest client working all through the attack
            while not stop.is_set():
                honest.round()
                time.sleep(0.05)

        during = threading.Thread(target=keep_asking, daemon=True)
        during.start()
        trickle = run_slowloris(address, connections=8, interval=0.5, duration=3.0)
        stop.set()
        during.join(5)
        settle(proc.pid, base["threads"])
        row("8 tricklers (byte / 0.5 s)", f"{trickle.dropped}/8 dropped by the 1 s deadline "
            f"({trickle.replies} completed)",
            before, proc_stats(proc.pid))
    finally:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = "killed after 10 s"
        stopped_in = time.monotonic() - started

    def fmt(stats):
        rss = "n/a" if stats["rss_kib"] is None else f"{stats['rss_kib'] / 1024:.1f} MiB"
        threads = "n/a" if stats["threads"] is None else str(stats["threads"])
        return f"{rss:>9} {threads:>4}"

    print(f"server: python -m {args.server} {' '.join(flags)}  (pid {proc.pid})")
    print(f"baseline: RSS and threads {fmt(base)}")
    print(f"{'scenario':<28} {'before (RSS thr)':>16} {'after (RSS thr)':>16}  honest lost  achieved")
    for name, achieved, before, after, lost in rows:
        print(f"{name:<28} {fmt(before):>16} {fmt(after):>16}  {lost:>11}  {achieved}")
    print(f"honest requests: {honest.asked} asked, {honest.answered} answered, {honest.lost} lost")
    print(f"SIGTERM: exit status {status} after {stopped_in:.2f} s")
    broken = [name for name, achieved, *_ in rows if achieved.startswith("failed:")]
    return 0 if honest.lost == 0 and status == 0 and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
