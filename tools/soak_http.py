"""Soak the HTTP server program with hostile traffic; honest visitors must lose nothing.

    python -m tools.soak_http                                        # the reference server
    python -m tools.soak_http --server exercises.lesson09_slow_http  # your lesson 09 program

The sibling of tools.soak for Part B. It starts the program as a real subprocess on 127.0.0.1
(port 0) with short clocks (--deadline seconds for headers, body and sending; a cap of
--max-clients) over a scratch folder that also holds a big file and, OUTSIDE it, a secret.
Then it runs every hostile scenario of lessons 07-09, each --count times, and after each
one an honest visitor (GET a page, GET /healthz, POST /echo) must get every answer right:

    oversize body       Content-Length over --max-body: 413 before a byte of body is read
    lying length        a body shorter than its Content-Length (then silence, or a close)
    CL + TE             Content-Length together with Transfer-Encoding: refused (smuggling)
    bad lengths         +5, -1, 1_0, two different values: 400
    bad headers         a line without a colon, a folded line, a NUL: 400
    header flood        thousands of headers: 431
    huge header         one 64 KiB header line: 431
    long URI            a 64 KiB request target: 414
    deep JSON           10 000 nested arrays (under the body cap): 400, not a RecursionError
    traversal           .., %2e%2e, %2f, backslashes, absolute paths, NUL, a symlink out:
                        404 and never a byte of the secret
    slow headers        tools.attack slow-headers: dropped by the header deadline
    slow body           tools.attack slow-body: dropped by the body deadline
    slow read           tools.attack slow-read of the big file: dropped by the send timeout
    over the cap        more slow connections than --max-clients: the rest get 503 + Retry-After
    resets              requests cut by a reset (RST) mid-head and mid-body
    flood               connect/close cycles as fast as possible
    pipelined           --count GETs in one send: every reply, in order

After each scenario /healthz must count 1 active connection (its own): a slot that is never
given back would, at the cap, turn every visitor away. Memory and threads come from /proc
(Linux; "n/a" elsewhere). Exit status 1 if an honest request failed, a scenario got an answer
it should not (a leak, a crash, a missing 503, a slot not given back), the server died, or
SIGTERM did not end it with status 0 within 5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tools.attack import run_slow_body, run_slow_headers, run_slow_read
from tools.program import start_listening
from tools.soak import proc_stats

REPO = Path(__file__).resolve().parent.parent
SECRET = b"TOP-SECRET-do-not-serve"
BIG_FILE_SIZE = 16 << 20  # bigger than the socket buffers on both sides (a few MiB each)
MAX_BODY = 65536


# --------------------------------------------------------------------------- talking HTTP


@dataclass
class Reply:
    status: int | None      # None: no reply (the server closed or reset without answering)
    head: bytes = b""
    body: bytes = b""
    closed: bool = False    # the server closed the connection after this reply
    error: str = ""         # how the exchange failed, if it did

    def header(self, name: str) -> str | None:
        match = re.search(rb"\r\n" + name.encode() + rb":[ \t]*([^\r\n]*)", self.head,
                          re.IGNORECASE)
        return match.group(1).decode("latin-1") if match else None


def read_reply(sock: socket.socket, inbox: bytearray) -> Reply:
    """One reply framed by Content-Length (bodies here are never chunked); leftovers stay."""
    while (end := inbox.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            return Reply(None, closed=True, error="closed without a reply")
        inbox += chunk
    head = bytes(inbox[:end + 2])
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    reply = Reply(int(match.group(1)) if match else None, head)
    length = int(reply.header("Content-Length") or 0)
    while len(inbox) < end + 4 + length:
        chunk = sock.recv(65536)
        if not chunk:
            reply.closed, reply.error = True, "closed mid-body"
            break
        inbox += chunk
    reply.body = bytes(inbox[end + 4:end + 4 + length])
    del inbox[:end + 4 + length]
    return reply


def exchange(address, data: bytes, timeout: float = 5.0, then_close: bool = True) -> Reply:
    """Send `data`; read one reply; then see whether the server closes (for up to 1 s)."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may refuse before it has read all we send: read its answer
            inbox = bytearray()
            reply = read_reply(sock, inbox)
            if reply.status is not None and not reply.closed and then_close:
                sock.settimeout(1.0)
                try:
                    reply.closed = sock.recv(1) == b""
                except TimeoutError:
                    reply.closed = False
                except OSError:
                    reply.closed = True
            return reply
    except TimeoutError:
        return Reply(None, error="timed out")
    except OSError as exc:
        return Reply(None, error=f"{type(exc).__name__}")


def request(method: str, target: str, headers: dict | None = None, body: bytes = b"",
            host: str = "soak") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------- the honest visitor


class Honest:
    """GET a page, GET /healthz, POST /echo: each on a new connection, each must be right."""

    def __init__(self, address):
        self.address = address
        self.asked = self.answered = 0
        self.problems: list[str] = []

    def check(self, what: str, reply: Reply, ok) -> None:
        self.asked += 1
        if ok(reply):
            self.answered += 1
        else:
            self.problems.append(f"{what}: {reply.status} {reply.error}".strip())

    def round(self) -> None:
        self.check("GET /index.html", exchange(self.address, request("GET", "/index.html"),
                                               then_close=False),
                   lambda r: r.status == 200 and b"soak" in r.body)
        self.check("GET /healthz", exchange(self.address, request("GET", "/healthz"),
                                            then_close=False),
                   lambda r: r.status == 200 and _json(r.body).get("status") == "ok")
        body = json.dumps({"n": self.asked, "honest": True}).encode()
        echo = request("POST", "/echo", {"Content-Type": "application/json",
                                         "Content-Length": len(body)}, body)
        self.check("POST /echo", exchange(self.address, echo, then_close=False),
                   lambda r: r.status == 200 and _json(r.body).get("received") ==
                   json.loads(body))

    @property
    def lost(self) -> int:
        return self.asked - self.answered


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- scenarios
# Each returns (achieved: str, unexpected: list[str]): what happened, and what should not have.


def _expect(replies: list[Reply], allowed: set[int], closed: bool = True) -> tuple[str, list[str]]:
    """Summarise replies as '30 x 431, closed'; anything outside `allowed` is unexpected."""
    counts: dict = {}
    unexpected = []
    for r in replies:
        key = r.status if r.status is not None else (r.error or "no reply")
        counts[key] = counts.get(key, 0) + 1
        if r.status not in allowed:
            unexpected.append(f"answered {key}")
        elif closed and not r.closed:
            unexpected.append(f"{r.status} but the connection stayed open")
    text = ", ".join(f"{n} x {k}" for k, n in sorted(counts.items(), key=str))
    return text, sorted(set(unexpected))


def oversize_body(address, count):
    replies, slowest = [], 0.0
    for _ in range(count):
        started = time.monotonic()
        replies.append(exchange(address, request("POST", "/echo", {
            "Content-Type": "application/json", "Content-Length": 10 ** 12}, b"[1,")))
        slowest = max(slowest, time.monotonic() - started)
    text, bad = _expect(replies, {413})
    return f"{text}; slowest {slowest * 1000:.0f} ms", bad


def lying_length(address, count, deadline):
    """Announce 1000 bytes, send 10, then go silent: the body deadline must answer (408) or
    close. Then announce 1000 and close our side: the server must just let go."""
    lie = request("POST", "/echo", {"Content-Type": "application/json", "Content-Length": 1000},
                  b'{"a": "bc')
    silent: list[Reply] = []
    waiting = [threading.Thread(target=lambda: silent.append(exchange(
        address, lie, timeout=deadline * 3 + 5)), daemon=True) for _ in range(min(count, 5))]
    for thread in waiting:  # at the same time: each waits out the whole body deadline
        thread.start()
    for thread in waiting:
        thread.join(deadline * 3 + 10)
    for _ in range(count):
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(request("POST", "/echo", {"Content-Type": "application/json",
                                                   "Content-Length": 1000}, b"[1, 2"))
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
    text, bad = _expect([r for r in silent if r.status is not None], {408})
    gone = sum(1 for r in silent if r.status is None and r.closed)
    return (f"silent after 10 of 1000 bytes: {text or '-'}"
            + (f", {gone} closed without 408" if gone else "")
            + f"; {count} half-closed early"), bad + sorted({f"no answer: {r.error}" for r in silent
                                                            if r.status is None and not r.closed})


def cl_and_te(address, count):
    body = b"5\r\nhello\r\n0\r\n\r\n"
    replies = [exchange(address, request("POST", "/echo", {
        "Content-Type": "application/json", "Content-Length": len(body),
        "Transfer-Encoding": "chunked"}, body)) for _ in range(count)]
    return _expect(replies, {400, 501})


def bad_lengths(address, count):
    variants = [{"Content-Length": "+5"}, {"Content-Length": "-1"}, {"Content-Length": "1_0"},
                {"Content-Length": "0x10"}, {"Content-Length": " 5 5"}]
    replies = []
    for n in range(count):
        headers = {"Content-Type": "application/json", **variants[n % len(variants)]}
        replies.append(exchange(address, request("POST", "/echo", headers, b"[1,2]")))
    twice = b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n" \
            b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n[1,2]"
    replies += [exchange(address, twice) for _ in range(max(1, count // 5))]
    return _expect(replies, {400})


def bad_headers(address, count):
    variants = [b"GET / HTTP/1.1\r\nHost: soak\r\nno colon here\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: soak\r\nX-A: 1\r\n folded: line\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: soak\r\nX-A: nul\x00byte\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: soak\r\n: empty name\r\n\r\n",
                b"GET / HTTP/1.1\r\nX-No-Host: 1\r\n\r\n",
                b"GARBAGE\r\n\r\n"]
    replies = [exchange(address, variants[n % len(variants)]) for n in range(count)]
    return _expect(replies, {400})


def header_flood(address, count):
    flood = b"GET / HTTP/1.1\r\nHost: soak\r\n" + b"".join(
        b"X-F-%d: %d\r\n" % (i, i) for i in range(5000)) + b"\r\n"
    return _expect([exchange(address, flood) for _ in range(count)], {431})


def huge_header(address, count):
    huge = b"GET / HTTP/1.1\r\nHost: soak\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
    return _expect([exchange(address, huge) for _ in range(count)], {431})


def long_uri(address, count):
    long = b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: soak\r\n\r\n"
    return _expect([exchange(address, long) for _ in range(count)], {414})


def deep_json(address, count):
    body = b"[" * 10_000 + b"]" * 10_000  # 20 KB: under the body cap, far over any depth cap
    deep = request("POST", "/echo", {"Content-Type": "application/json",
                                     "Content-Length": len(body)}, body)
    return _expect([exchange(address, deep, then_close=False) for _ in range(count)],
                   {400, 413, 422}, closed=False)


TRAVERSALS = ["/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt",
              "/..%5csecret.txt", "/..\\secret.txt", "/docs/../../secret.txt", "//secret.txt",
              "/%2fetc%2fpasswd", "/link-out/secret.txt", "/secret-link", "/index.html%00.txt",
              "/./../secret.txt", "/%252e%252e/secret.txt"]


def traversal(address, count):
    replies, leaks = [], []
    for n in range(count):
        target = TRAVERSALS[n % len(TRAVERSALS)]
        reply = exchange(address, request("GET", target), then_close=False)
        replies.append(reply)
        if SECRET in reply.body or SECRET in reply.head:
            leaks.append(f"LEAKED the secret for {target}")
    text, bad = _expect(replies, {400, 404}, closed=False)
    return f"{len(TRAVERSALS)} kinds: {text}", bad + leaks


def slow(run, address, count, deadline, **options):
    """An attack from tools.attack for 3 deadlines + 1 s: every connection must be dropped."""
    report = run(address, connections=count, interval=min(0.2, deadline / 3),
                 duration=3 * deadline + 1.0, **options)
    bad = []
    if report.held:
        bad.append(f"{report.held} still held after {report.elapsed:.1f} s")
    if report.failed or report.rejected:
        bad.append(f"{report.failed} could not connect, {report.rejected} refused (503)")
    ends = [e.lifetime for e in report.endings if e.how != "cut short"]
    when = f" after {min(ends):.1f}-{max(ends):.1f} s" if ends else ""
    cut = sum(1 for e in report.endings if e.how == "cut short")
    when += f", {cut} replies found cut short" if cut else ""
    codes = ", ".join(f"{code} x{n}" for code, n in sorted(report.replies.items()))
    return f"{report.dropped}/{report.opened} dropped{when}" + (f" ({codes})" if codes else ""), bad


def over_the_cap(address, count, cap, deadline):
    """cap + count slow connections: exactly `count` must be refused with 503 + Retry-After."""
    report = run_slow_headers(address, connections=cap + count, interval=min(0.2, deadline / 3),
                              duration=min(1.0, deadline * 0.8))
    probe = exchange(address, request("GET", "/index.html"))  # after the attack let go
    bad = []
    if report.rejected < count:
        bad.append(f"only {report.rejected} of the {count} over the cap got 503")
    held_or_dropped = report.held + report.dropped
    if held_or_dropped < cap * 0.9:
        bad.append(f"only {held_or_dropped} admitted of a cap of {cap}")
    return (f"{report.held + report.dropped} admitted, {report.rejected} refused with 503 "
            f"(cap {cap}); next visitor: {probe.status}"), bad


def retry_after_at_the_cap(address, cap, tries: int = 3):
    """Hold every slot with silent connections; the next visitor must get 503 + Retry-After.
    (Tried up to `tries` times: on a busy machine a holder can be late, and a late holder
    leaves a slot free, which is not the server's fault.)"""
    for attempt in range(1, tries + 1):
        holders = []
        try:
            for _ in range(cap):
                holders.append(socket.create_connection(address, timeout=5))
            time.sleep(0.2)  # let the accept thread admit them all
            reply = exchange(address, request("GET", "/index.html"), then_close=False)
        finally:
            for sock in holders:
                sock.close()
        if reply.status == 503:
            break
        time.sleep(0.5)  # the server notices the holders left, then we try again
    said = f"{reply.status}, Retry-After: {reply.header('Retry-After')}"
    bad = [] if reply.status == 503 and reply.header("Retry-After") else \
        [f"the visitor over the cap got {said}"]
    return f"visitor over a full cap: {said}" + (f" (try {attempt})" if attempt > 1 else ""), bad


def resets(address, count):
    for n in range(count):
        with socket.create_connection(address, timeout=5) as sock:
            if n % 2:
                sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: so")
            else:
                sock.sendall(request("POST", "/echo", {"Content-Type": "application/json",
                                                       "Content-Length": 100}, b'{"half": '))
            # SO_LINGER on with a zero timeout: close() sends RST instead of a polite FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return f"{count} connections reset mid-head / mid-body", []


def flood(address, count):
    outcomes: dict = {}
    for _ in range(count):
        try:
            with socket.create_connection(address, timeout=5):
                key = "connected"
        except OSError as exc:
            key = type(exc).__name__
        outcomes[key] = outcomes.get(key, 0) + 1
    text = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
    return f"{count} connect/close cycles: {text}", []


def pipelined(address, count):
    data = b"".join(request("GET", "/index.html" if n % 2 else "/healthz")
                    for n in range(count))
    good = 0
    try:
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(data)
            inbox = bytearray()
            for n in range(count):
                reply = read_reply(sock, inbox)
                ok = reply.status == 200 and (b"soak" in reply.body if n % 2
                                              else b'"status"' in reply.body)
                good += ok
                if reply.closed:
                    break
    except OSError as exc:
        return f"{good}/{count} replies in order, then {type(exc).__name__}", \
            [f"pipelining broke after {good} replies"]
    return f"{good}/{count} replies in order", [] if good == count else \
        [f"only {good} of {count} pipelined replies"]


# --------------------------------------------------------------------------- the program


def make_site(folder: Path) -> Path:
    """A root with a page, a big file, a symlink out; a secret beside the root."""
    root = folder / "www"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>soak</title><p>soak test page\n")
    (root / "docs" / "note.txt").write_text("a note\n")
    with open(root / "big.bin", "wb") as big:
        big.truncate(BIG_FILE_SIZE)  # a sparse file: 16 MiB of zeros, instantly
    (folder / "secret.txt").write_bytes(SECRET + b"\n")
    try:
        os.symlink(folder, root / "link-out")
        os.symlink(folder / "secret.txt", root / "secret-link")
    except (OSError, NotImplementedError):
        pass  # no symlinks here (Windows without privileges): those two just 404
    return root


def start_server(module: str, flags: list[str], timeout: float = 20.0):
    try:
        return start_listening([sys.executable, "-m", module, "--port", "0", *flags], timeout)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def settle(pid: int, threads: int | None, wait: float) -> None:
    """Wait (up to `wait` s) for the server's thread count to come back to `threads`."""
    ends = time.monotonic() + wait
    while time.monotonic() < ends:
        now = proc_stats(pid)["threads"]
        if now is None or threads is None or now <= threads:
            return
        time.sleep(0.05)


def settle_active(address, wait: float) -> int | None:
    """/healthz's active_connections once it is back to 1 (our own request), or after `wait`
    s. A count that never comes back is a slot leaked for good: at the cap, every visitor
    would get 503."""
    ends = time.monotonic() + wait
    while True:
        reply = exchange(address, request("GET", "/healthz"), then_close=False)
        active = _json(reply.body).get("active_connections")
        if not isinstance(active, int) or active <= 1 or time.monotonic() > ends:
            return active if isinstance(active, int) else None
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.soak_http",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="solutions.lesson09_slow_http",
                        help="module of the HTTP server program (default: %(default)s)")
    parser.add_argument("--count", type=int, default=50,
                        help="connections per hostile scenario, 1-300 (default: %(default)s)")
    parser.add_argument("--deadline", type=float, default=1.0,
                        help="the server's header/body/send clocks, s (default: %(default)s)")
    parser.add_argument("--max-clients", type=int, default=20,
                        help="the server's cap (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (1 <= args.count <= 300 and 0.1 <= args.deadline <= 10 and 2 <= args.max_clients <= 200):
        parser.error("--count 1-300, --deadline 0.1-10, --max-clients 2-200")
    count, deadline, cap = args.count, args.deadline, args.max_clients
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="soak_http_") as scratch:
        root = make_site(Path(scratch))
        flags = ["--root", str(root), "--header-timeout", f"{deadline:g}",
                 "--body-timeout", f"{deadline:g}", "--send-timeout", f"{deadline:g}",
                 "--idle-timeout", f"{max(2.0, 2 * deadline):g}", "--max-clients", str(cap),
                 "--max-body", str(MAX_BODY)]
        proc, address = start_server(args.server, flags)
        honest = Honest(address)
        rows = []
        died = ""
        scenarios = [
            ("oversize body (1 TB)", lambda: oversize_body(address, count)),
            ("lying Content-Length", lambda: lying_length(address, count, deadline)),
            ("Content-Length + TE", lambda: cl_and_te(address, count)),
            ("bad Content-Length", lambda: bad_lengths(address, count)),
            ("malformed headers", lambda: bad_headers(address, count)),
            ("header flood (5000)", lambda: header_flood(address, max(1, count // 5))),
            ("huge header (64 KiB)", lambda: huge_header(address, max(1, count // 5))),
            ("long URI (64 KiB)", lambda: long_uri(address, max(1, count // 5))),
            ("deep JSON (10000)", lambda: deep_json(address, max(1, count // 10))),
            ("path traversal", lambda: traversal(address, max(count, len(TRAVERSALS)))),
            ("slow headers", lambda: slow(run_slow_headers, address, min(count, cap), deadline)),
            ("slow body", lambda: slow(run_slow_body, address, min(count, cap), deadline)),
            ("slow read (16 MiB)", lambda: slow(run_slow_read, address, min(count, cap, 10),
                                                deadline, path="/big.bin", drain=2.0)),
            ("over the cap", lambda: over_the_cap(address, min(count, 50), cap, deadline)),
            ("503 + Retry-After", lambda: retry_after_at_the_cap(address, cap)),
            ("resets mid-request", lambda: resets(address, count)),
            ("connect/close flood", lambda: flood(address, count * 4)),
            ("pipelined requests", lambda: pipelined(address, count)),
        ]
        try:
            honest.round()
            base = proc_stats(proc.pid)
            for name, work in scenarios:
                before = proc_stats(proc.pid)
                lost_before = honest.lost
                try:
                    achieved, unexpected = work()
                except (OSError, ValueError) as exc:
                    achieved, unexpected = "broke", [f"{type(exc).__name__}: {exc}"]
                if proc.poll() is not None:
                    died = f"the server died during '{name}' (exit status {proc.returncode})"
                    rows.append((name, achieved, unexpected, before, {}, 0))
                    break
                settle(proc.pid, base["threads"], wait=3 * deadline + 2)
                active = settle_active(address, wait=3 * deadline + 2)
                if active != 1:
                    unexpected = unexpected + [f"/healthz counts {active} active connections "
                                               "with only its own request open"]
                honest.round()
                rows.append((name, achieved, unexpected, before, proc_stats(proc.pid),
                             honest.lost - lost_before))
        finally:
            stop_started = time.monotonic()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                status = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                status = "killed after 5 s"
            stopped_in = time.monotonic() - stop_started

    def fmt(stats):
        rss = stats.get("rss_kib")
        threads = stats.get("threads")
        return (f"{'n/a' if rss is None else f'{rss / 1024:.1f}':>6} "
                f"{'n/a' if threads is None else threads:>4}")

    print(f"server: python -m {args.server} {' '.join(flags[2:])}  (pid {proc.pid})")
    print(f"baseline: RSS MiB, threads {fmt(base)}")
    print(f"{'scenario':<24} {'RSS thr before':>14} {'after':>11}  lost  result  achieved")
    for name, achieved, unexpected, before, after, lost in rows:
        verdict = "ok" if not unexpected else "BAD"
        print(f"{name:<24} {fmt(before):>14} {fmt(after) if after else 'n/a':>11}  {lost:>4}  "
              f"{verdict:<6}  {achieved}")
        for problem in unexpected:
            print(f"{'':<24} {'':>14} {'':>11}  {'':>4}  {'':<6}  ! {problem}")
    for problem in honest.problems:
        print(f"honest request failed: {problem}")
    print(f"honest requests: {honest.asked} asked, {honest.answered} answered, {honest.lost} lost")
    if died:
        print(died)
    print(f"SIGTERM: exit status {status} after {stopped_in:.2f} s")
    print(f"total time {time.monotonic() - started:.1f} s")
    bad = [name for name, _, unexpected, *_ in rows if unexpected]
    return 0 if honest.lost == 0 and status == 0 and not died and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
