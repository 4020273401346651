"""The hardened HTTP server against the stock ThreadingHTTPServer, measured in one run.

    python -m tools.bench_http                 # about a minute; prints one table
    python -m tools.bench_http --plot bench.png

Both servers run as real subprocesses on 127.0.0.1 (port 0), serving the same folder with a
1 KiB file, so neither shares a GIL with the client or the attack:

  hardened  python -m solutions.lesson09_slow_http (the lesson 07-09 server), or
            --server exercises.lesson09_slow_http
  stock     http.server.ThreadingHTTPServer + SimpleHTTPRequestHandler, HTTP/1.1 (keep-alive),
            with the naive POST a student would add (reads exactly Content-Length bytes);
            for (a) also with TCP_NODELAY, since as shipped it stalls ~40 ms per keep-alive
            request (Nagle's algorithm meets the client's delayed ACK)

(a) throughput: keep-alive GET of the 1 KiB file, as fast as --clients connections can ask,
    for --seconds; requests per second.
(b) an honest client: --honest GETs of the 1 KiB file, a NEW connection each (a new visitor
    must win a connection, which is where a busy server hurts), p50/p99 latency and failures;
    first unattacked, then while tools.attack holds --slow-headers slow-header and --slow-body
    slow-body connections. The hardened server runs twice: with its default cap (100), which
    an attack with more connections than that fills, and with a cap above the attack's size,
    where only the deadlines matter.

From Python (the lesson 09 notebook runs a small one):

    result = run_benchmark(seconds=1, honest=40, slow_headers=20, slow_body=5)
    print(result.table())

Figures depend on the machine and on what else runs on it: compare rows, not absolutes.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import resource  # POSIX only: the open-file limit
except ImportError:  # Windows: no such limit to raise
    resource = None

from tools.attack import run_slow_body, run_slow_headers
from tools.program import start_listening
from tools.soak import proc_stats

REPO = Path(__file__).resolve().parent.parent
FILE = "/1k.html"
FILE_SIZE = 1024


# --------------------------------------------------------------------------- the stock server


class StockHandler(http.server.SimpleHTTPRequestHandler):
    """The standard library's file handler as lesson 07 starts from it: keep-alive on, no
    limits; POST reads exactly Content-Length bytes, as the source article's handler does."""
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        reply = json.dumps({"received_bytes": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


# Both servers log a line per request at their defaults (to stderr, which the benchmark
# discards): neither is spared the cost.


class StockServer(http.server.ThreadingHTTPServer):
    block_on_close = False  # stopping must not wait for connections an attack left behind

    def handle_error(self, request, client_address):
        pass  # clients that hang up mid-reply are expected here


class NoDelayStockHandler(StockHandler):
    """The same with Nagle's algorithm off. Both servers write a reply's head and body in two
    sends; with Nagle on, the body waits for the ACK of the head, which the client delays by
    up to 40 ms: a keep-alive request then costs ~40 ms whatever the server does."""
    disable_nagle_algorithm = True


def serve_stock(root: str, nodelay: bool = False) -> int:
    """The stock server as a program (`--serve-stock ROOT`), so it gets its own process."""
    handler = NoDelayStockHandler if nodelay else StockHandler
    server = StockServer(("127.0.0.1", 0), functools.partial(handler, directory=root))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    server.serve_forever(poll_interval=0.1)
    return 0


# --------------------------------------------------------------------------- programs


@dataclass
class Program:
    name: str
    proc: subprocess.Popen
    address: tuple[str, int]

    def stats(self) -> dict:
        return proc_stats(self.proc.pid)

    def stop(self) -> int | str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after 10 s"


def start_program(name: str, command: list[str], ready_timeout: float = 20.0) -> Program:
    """Start `command` from the repo root; wait for 'listening on http://HOST:PORT'."""
    proc, address = start_listening(command, ready_timeout)
    return Program(name, proc, address)


def hardened_command(module: str, root: str, max_clients: int | None = None,
                     extra: list[str] = ()) -> list[str]:
    command = [sys.executable, "-m", module, "--port", "0", "--root", root, *extra]
    return command + (["--max-clients", str(max_clients)] if max_clients else [])


def stock_command(root: str, nodelay: bool = False) -> list[str]:
    return [sys.executable, "-m", "tools.bench_http", "--serve-stock", root] + \
        (["--nodelay"] if nodelay else [])


# --------------------------------------------------------------------------- clients


def _read_reply(sock: socket.socket, inbox: bytearray) -> tuple[int, bytes]:
    """Read one HTTP reply (status, body) framed by Content-Length; leftovers stay in inbox."""
    while (end := inbox.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a reply")
        inbox += chunk
    head = bytes(inbox[:end])
    status = int(head[9:12])
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    length = int(match.group(1)) if match else 0
    while len(inbox) < end + 4 + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-reply")
        inbox += chunk
    body = bytes(inbox[end + 4:end + 4 + length])
    del inbox[:end + 4 + length]
    return status, body


def keepalive_rate(address, seconds: float, clients: int = 1, timeout: float = 5.0) -> float:
    """Requests per second: `clients` keep-alive connections each GET the 1 KiB file in a
    loop for `seconds`. Any failure ends that client's loop (and is an error in the figure)."""
    counts = [0] * clients
    request = f"GET {FILE} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n\r\n".encode()

    def client(n):
        inbox = bytearray()
        with socket.create_connection(address, timeout=timeout) as sock:
            ends = time.perf_counter() + seconds
            while time.perf_counter() < ends:
                sock.sendall(request)
                status, body = _read_reply(sock, inbox)
                if status != 200 or len(body) != FILE_SIZE:
                    raise RuntimeError(f"keep-alive GET answered {status}, {len(body)} bytes")
                counts[n] += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + timeout + 5)
    return sum(counts) / (time.perf_counter() - started)


def honest_get(address, timeout: float) -> tuple[float, str]:
    """One GET on a new connection: (seconds, "ok") or (seconds, why it failed)."""
    request = (f"GET {FILE} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
               "Connection: close\r\n\r\n").encode()
    started = time.perf_counter()
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(request)
            status, body = _read_reply(sock, bytearray())
    except TimeoutError:
        return time.perf_counter() - started, "timeout"
    except ConnectionRefusedError:
        return time.perf_counter() - started, "refused"
    except OSError:
        return time.perf_counter() - started, "reset"
    if status != 200 or len(body) != FILE_SIZE:
        return time.perf_counter() - started, str(status)
    return time.perf_counter() - started, "ok"


# --------------------------------------------------------------------------- results


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: never invents a value that was not measured."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass
class LatencyRow:
    server: str
    attack: str
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    failures: dict = field(default_factory=dict)          # reason -> count
    failure_times: list[float] = field(default_factory=list)  # seconds until each failure
    threads: int | None = None   # server threads while the honest client ran
    rss_mib: float | None = None
    attack_summary: str = ""     # what the attack achieved, e.g. "100 held, 150 refused (503)"

    @property
    def asked(self) -> int:
        return len(self.latencies) + self.failed

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def ms(self, p: float) -> float | None:
        value = percentile(self.latencies, p)
        return None if value is None else value * 1000


def _times(ratio: float) -> str:
    """'1.04x', or '0.005x' for a small ratio (two decimals would print 0.00x)."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.3f}x"


@dataclass
class BenchResult:
    throughput: dict = field(default_factory=dict)  # server -> requests/s
    rows: list[LatencyRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def table(self) -> str:
        s = self.settings
        lines = [f"(a) keep-alive GET {FILE} ({FILE_SIZE} B), {s.get('clients')} connection(s), "
                 f"{s.get('seconds'):g} s each"]
        stock = self.throughput.get("stock")
        fast = self.throughput.get("stock + TCP_NODELAY")
        for name, rate in self.throughput.items():
            ratio = ""
            if not name.startswith("stock") and stock and fast:
                ratio = f"  ({_times(rate / stock)} stock, {_times(rate / fast)} stock + TCP_NODELAY)"
            elif name != "stock" and stock:
                ratio = f"  ({_times(rate / stock)} stock)"
            lines.append(f"    {name:<28} {rate:>8.0f} requests/s{ratio}")
        lines.append("")
        lines.append(f"(b) honest client: {s.get('honest')} GETs of {FILE}, a new connection each; "
                     f"attack = {s.get('slow_headers')} slow-header + {s.get('slow_body')} "
                     f"slow-body connections, one byte every {s.get('interval'):g} s")
        header = (f"    {'server':<28} {'attack':<8} {'p50 ms':>7} {'p99 ms':>8} {'failed':>9} "
                  f"{'threads':>7} {'RSS MiB':>7}  attack connections")
        lines += [header, "    " + "-" * (len(header) - 4)]
        for r in self.rows:
            why = ", ".join(f"{n} {k}" for k, n in sorted(r.failures.items()))
            if r.failure_times:  # a refusal that comes at once is a defence; a hang is not
                why += f", each within {max(r.failure_times) * 1000:.1f} ms"
            p50, p99 = r.ms(50), r.ms(99)
            lines.append(
                f"    {r.server:<28} {r.attack:<8} {'-' if p50 is None else f'{p50:.1f}':>7} "
                f"{'-' if p99 is None else f'{p99:.1f}':>8} {r.failed:>4}/{r.asked:<4} "
                f"{'n/a' if r.threads is None else r.threads:>7} "
                f"{'n/a' if r.rss_mib is None else f'{r.rss_mib:.1f}':>7}  {r.attack_summary}"
                + (f"  [failures: {why}]" if why else ""))
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"throughput": self.throughput, "settings": self.settings, "notes": self.notes,
                "rows": [{"server": r.server, "attack": r.attack, "p50_ms": r.ms(50),
                          "p99_ms": r.ms(99), "failed": r.failed, "asked": r.asked,
                          "failures": r.failures,
                          "slowest_failure_ms": max(r.failure_times, default=0) * 1000,
                          "threads": r.threads, "rss_mib": r.rss_mib,
                          "attack_summary": r.attack_summary} for r in self.rows]}


# --------------------------------------------------------------------------- measuring


def raise_fd_limit(needed: int) -> str:
    """Make sure this process (and the servers it starts) may open `needed` descriptors."""
    if resource is None:
        return "open-file limit: not applicable on this system"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return f"open-file limit {soft} (enough for {needed})"
    new = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    short = "" if new >= needed else f"; still short of {needed}: expect failed connects"
    return f"open-file limit raised from {soft} to {new} for this run{short}"


def _attack_summary(reports) -> str:
    held = sum(r.held for r in reports)
    refused = sum(r.rejected for r in reports)
    dropped = sum(r.dropped for r in reports)
    failed = sum(r.failed for r in reports)
    text = f"{held} held, {refused} refused (503), {dropped} dropped"
    return text + (f", {failed} could not connect" if failed else "")


def honest_latencies(program: Program, row: LatencyRow, count: int, pause: float,
                     timeout: float) -> None:
    for n in range(count):
        seconds, outcome = honest_get(program.address, timeout)
        if outcome == "ok":
            row.latencies.append(seconds)
        else:
            row.failures[outcome] = row.failures.get(outcome, 0) + 1
            row.failure_times.append(seconds)
        if n == count // 2:  # mid-run: what the server carries while it serves us
            stats = program.stats()
            row.threads = stats["threads"]
            row.rss_mib = None if stats["rss_kib"] is None else stats["rss_kib"] / 1024
        time.sleep(pause)


def measure_latency(program: Program, honest: int, slow_headers: int, slow_body: int,
                    interval: float, pause: float, timeout: float) -> list[LatencyRow]:
    """Two rows for one server: unattacked, then under the slow-header + slow-body attack."""
    quiet = LatencyRow(program.name, "none")
    honest_latencies(program, quiet, honest, pause, timeout)
    loud = LatencyRow(program.name, "slow")
    if not slow_headers and not slow_body:
        return [quiet]
    stop = threading.Event()
    reports, threads, readies = [], [], []
    for run, count in ((run_slow_headers, slow_headers), (run_slow_body, slow_body)):
        if not count:
            continue
        ready = threading.Event()
        readies.append(ready)
        thread = threading.Thread(
            target=lambda run=run, count=count, ready=ready: reports.append(run(
                program.address, count, interval, 300.0, stop=stop, ready=ready)),
            daemon=True)
        thread.start()
        threads.append(thread)
    for ready in readies:
        ready.wait(30)
    time.sleep(2 * interval)  # every attacker has sent something: the server is busy with it
    try:
        honest_latencies(program, loud, honest, pause, timeout)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    loud.attack_summary = _attack_summary(reports)
    return [quiet, loud]


def run_benchmark(seconds: float = 5.0, clients: int = 1, honest: int = 200,
                  slow_headers: int = 200, slow_body: int = 50, interval: float = 0.5,
                  pause: float = 0.01, timeout: float = 5.0,
                  server: str = "solutions.lesson09_slow_http", big_cap: int = 1000,
                  header_timeout: float | None = None,
                  body_timeout: float | None = None) -> BenchResult:
    """Run (a) and (b) against the stock server and the hardened program; return the figures."""
    result = BenchResult(settings={"seconds": seconds, "clients": clients, "honest": honest,
                                   "slow_headers": slow_headers, "slow_body": slow_body,
                                   "interval": interval, "server": server})
    result.notes.append(raise_fd_limit(2 * (slow_headers + slow_body) + 200))
    attackers = slow_headers + slow_body
    extra = [] if header_timeout is None else ["--header-timeout", f"{header_timeout:g}"]
    extra += [] if body_timeout is None else ["--body-timeout", f"{body_timeout:g}"]
    with tempfile.TemporaryDirectory(prefix="bench_http_") as root:
        (Path(root) / FILE.lstrip("/")).write_bytes(b"k" * (FILE_SIZE - 1) + b"\n")
        (Path(root) / "index.html").write_text("<!doctype html><title>bench</title>\n")
        plans = [  # (name, command, measure (a)?, measure (b)?)
            ("stock", stock_command(root), True, True),
            ("stock + TCP_NODELAY", stock_command(root, nodelay=True), True, False),
            ("hardened (cap 100)", hardened_command(server, root, None, extra), True, True),
            (f"hardened (cap {big_cap})", hardened_command(server, root, big_cap, extra), False,
             True)]
        for name, command, rate, latency in plans:
            program = start_program(name, command)
            try:
                if rate:
                    result.throughput[name] = keepalive_rate(program.address, seconds, clients,
                                                             timeout)
                if latency:
                    result.rows += measure_latency(program, honest, slow_headers, slow_body,
                                                   interval, pause, timeout)
            finally:
                status = program.stop()
            if status != 0 and not name.startswith("stock"):
                result.notes.append(f"{name}: SIGTERM gave exit status {status}, not 0")
    if result.throughput.get("stock", 1e9) < 100:
        result.notes.append("under 100 requests/s on keep-alive is the Nagle + delayed-ACK "
                            "stall (head and body in two sends, ~40 ms each): compare the "
                            "TCP_NODELAY row")
    if attackers > 100:
        result.notes.append(f"the attack opens {attackers} connections, more than a cap of 100: "
                            "new visitors get 503 until the header/body deadlines (10 s / 30 s "
                            "by default) free slots; with a cap above the attack's size only "
                            "the deadlines act")
    return result


def plot(result: BenchResult, path=None):
    """Requests/s, and honest latency p50/p99 with failures: saved as a PNG at `path`, or,
    with no path (a notebook), returned as a matplotlib Figure."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")  # a file needs no display
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    def wrap(name: str) -> str:
        return name.replace(" (", "\n(").replace(" + ", "\n+ ")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4),
                                      gridspec_kw={"width_ratios": [1, 2.2]})
    names = list(result.throughput)
    colours = ["#2a7ab9" if n.startswith("hardened") else "#999999" for n in names]
    left.bar([wrap(n) for n in names], [result.throughput[n] for n in names], color=colours)
    left.set_title(f"(a) keep-alive GET {FILE}")
    left.set_ylabel("requests / s")
    left.tick_params(axis="x", labelsize=8)
    labels, p50s, p99s = [], [], []
    for r in result.rows:
        labels.append(f"{wrap(r.server)}\n{'ATTACKED' if r.attack == 'slow' else 'no attack'}")
        p50s.append(r.ms(50) or 0.0)
        p99s.append(r.ms(99) or 0.0)
    xs = list(range(len(labels)))
    right.bar([x - 0.2 for x in xs], p50s, width=0.4, label="p50", color="#7fb3d5")
    right.bar([x + 0.2 for x in xs], p99s, width=0.4, label="p99", color="#1f4e79")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(ScalarFormatter())
    right.yaxis.set_minor_formatter(NullFormatter())
    top = max(p99s + [1.0])
    right.set_ylim(top=top * 4)
    for x, r in zip(xs, result.rows):
        if r.failed:
            why = ", ".join(f"{n} {k}" for k, n in sorted(r.failures.items()))
            right.annotate(f"failed\n{r.failed}/{r.asked}\n({why})", (x, top * 1.3),
                           ha="center", fontsize=7, color="#b00020")
    right.set_xticks(xs)
    right.set_xticklabels(labels, fontsize=7)
    right.set_ylabel("honest request latency, ms (successes)")
    right.set_title("(b) an honest client, a new connection per request")
    right.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- the program


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_http",
        description="Benchmark the hardened HTTP server against the stock ThreadingHTTPServer: "
                    "(a) keep-alive requests/s, (b) an honest client's latency and failures "
                    "with and without a slow-header + slow-body attack. Loopback only.")
    parser.add_argument("--server", default="solutions.lesson09_slow_http",
                        help="module of the hardened program (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="(a): seconds of keep-alive requests per server (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=1,
                        help="(a): keep-alive connections at once, 1-16 (default: %(default)s)")
    parser.add_argument("--honest", type=int, default=200,
                        help="(b): honest requests per row, 1-5000 (default: %(default)s)")
    parser.add_argument("--slow-headers", type=int, default=200,
                        help="(b): slow-header connections, 0-1000 (default: %(default)s)")
    parser.add_argument("--slow-body", type=int, default=50,
                        help="(b): slow-body connections, 0-1000 (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=0.5,
                        help="(b): seconds between an attacker's bytes (default: %(default)s)")
    parser.add_argument("--pause", type=float, default=0.01,
                        help="(b): seconds between honest requests (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="the honest client's socket timeout, s (default: %(default)s)")
    parser.add_argument("--header-timeout", type=float,
                        help="pass --header-timeout to the hardened program (default: its own)")
    parser.add_argument("--body-timeout", type=float,
                        help="pass --body-timeout to the hardened program (default: its own)")
    parser.add_argument("--plot", metavar="FILE", help="also save the figures as a PNG")
    parser.add_argument("--json", metavar="FILE", help="also save the figures as JSON")
    parser.add_argument("--serve-stock", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--nodelay", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_stock:
        return serve_stock(args.serve_stock, args.nodelay)
    if not (0 < args.seconds <= 60 and 1 <= args.clients <= 16 and 1 <= args.honest <= 5000
            and 0 <= args.slow_headers <= 1000 and 0 <= args.slow_body <= 1000
            and args.slow_headers + args.slow_body <= 1000 and 0 < args.interval <= 60
            and 0 <= args.pause <= 1 and 0 < args.timeout <= 60):
        parser.error("out of range: --seconds 0-60, --clients 1-16, --honest 1-5000, "
                     "--slow-headers + --slow-body at most 1000, --interval 0-60, --pause 0-1")
    started = time.monotonic()
    result = run_benchmark(args.seconds, args.clients, args.honest, args.slow_headers,
                           args.slow_body, args.interval, args.pause, args.timeout, args.server,
                           header_timeout=args.header_timeout, body_timeout=args.body_timeout)
    print(result.table())
    print(f"total time {time.monotonic() - started:.1f} s; figures depend on the machine and its "
          "load: compare rows, not absolutes")
    if args.plot:
        plot(result, args.plot)
        print(f"plot saved to {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
