"""Threads or asyncio under many slow connections: a benchmark for lesson 13 (not a test).

    python -m tools.bench_models [--counts 100 1000 5000] [--hold 4] [--requests 200]
                                 [--out lessons/data/13_models.json]

For each model -- lesson 09's HardenedHTTPServer (a thread per connection) and lesson 13's
AsyncHTTPServer (one event loop) -- and each count N, on 127.0.0.1 only:

1. the server runs in a SUBPROCESS of its own (so the attackers' memory is not counted), with
   max_clients above N and a header deadline (120 s) far above the test's length;
2. N slow clients connect and trickle a request head, one header byte every --interval s,
   well inside the deadline: each one holds a connection, as a Slowloris does;
3. after they are all in, an honest client in another subprocess makes --requests GETs of
   /healthz on fresh connections, one after another, and times each one;
4. the server process reports its VmRSS (from /proc/self/status) and its thread count.

Reported per row: connections held (still open at the end of the hold, as the server counts
them), RSS per held connection (RSS under load minus RSS idle, divided by the held count),
the honest client's p50/p99 in ms and its failures. Linux only (/proc). Total run time is
bounded: about 10-20 s per row. The figures depend on the machine: compare rows.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

LOOPBACK = "127.0.0.1"
MODELS = ("threads", "asyncio")
HEAD = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: "


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def status() -> dict:
    """This process's VmRSS (kB) and thread count, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as file:
        for line in file:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "Threads"):
                fields[name] = int(value.split()[0])
    return fields


# --------------------------------------------------------------------------- server side


def serve(model: str, max_clients: int) -> None:
    """Run one server; print 'listening PORT'; answer 'status' on stdin with a JSON line."""
    import logging
    logging.disable(logging.CRITICAL)  # thousands of connections: no log lines to pay for
    raise_fd_limit()
    clocks = dict(max_clients=max_clients, header_timeout=120.0, body_timeout=30.0,
                  idle_timeout=120.0, send_timeout=10.0)
    if model == "threads":
        from solutions.lesson09_slow_http import HardenedHTTPServer
        import solutions.lesson01_lifecycle as lifecycle
        make = lifecycle.make_listener
        # A fair backlog: lesson 01's default (16) would make a 5000-connection burst retry SYNs.
        lifecycle.make_listener = lambda host, port, backlog=16: make(host, port, 1024)
        import solutions.lesson02_threads as threads_module
        threads_module.make_listener = lifecycle.make_listener
        server = HardenedHTTPServer(host=LOOPBACK, **clocks)
    else:
        from solutions.lesson13_asyncio import AsyncHTTPServer
        server = AsyncHTTPServer(host=LOOPBACK, backlog=1024, **clocks)
    with server:
        print(f"listening {server.address[1]}", flush=True)
        for line in sys.stdin:
            if line.strip() == "status":
                print(json.dumps({**status(), "active": server.active_connections}),
                      flush=True)
            else:
                break


class Server:
    def __init__(self, model: str, max_clients: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.bench_models", "--serve", model,
             "--max-clients", str(max_clients)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        words = self.proc.stdout.readline().split()
        if words[:1] != ["listening"]:
            raise SystemExit(f"the {model} server did not start")
        self.address = (LOOPBACK, int(words[1]))

    def status(self) -> dict:
        self.proc.stdin.write("status\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- honest client


def honest(port: int, requests: int, timeout: float) -> None:
    """GET /healthz `requests` times, a fresh connection each; print latencies and failures."""
    latencies, failures = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        try:
            with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                failures += 1
                continue
            latencies.append(time.perf_counter() - started)
        except OSError:
            failures += 1
    print(json.dumps({"latencies": latencies, "failures": failures}), flush=True)


def run_honest(port: int, requests: int, timeout: float) -> dict:
    out = subprocess.run([sys.executable, "-m", "tools.bench_models", "--honest", str(port),
                          "--requests", str(requests), "--timeout", str(timeout)],
                         capture_output=True, text=True, timeout=requests * timeout + 30)
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- slow clients


async def slow_client(address, interval: float, stop: asyncio.Event, opened: list,
                      closed: list) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 10)
    except (OSError, asyncio.TimeoutError):
        return
    opened.append(1)
    try:
        writer.write(HEAD)
        while not stop.is_set():
            try:  # the server closing on us ends the read at once
                data = await asyncio.wait_for(reader.read(1024), interval)
                if not data:
                    closed.append(1)
                    return
            except asyncio.TimeoutError:
                writer.write(b"s")  # one more header byte: slow, never late
    except OSError:
        closed.append(1)
    finally:
        writer.transport.abort()


async def attack(address, count: int, interval: float, hold: float, during) -> dict:
    stop = asyncio.Event()
    opened, closed = [], []
    tasks = []
    started = time.monotonic()
    for i in range(count):
        tasks.append(asyncio.create_task(slow_client(address, interval, stop, opened, closed)))
        if i % 100 == 99:
            await asyncio.sleep(0.02)  # connect in bursts of 100: a crowd, not one SYN flood
    while (len(opened) < count - sum(task.done() for task in tasks)  # done early: refused
           and time.monotonic() - started < 30):
        await asyncio.sleep(0.05)
    ramp = time.monotonic() - started
    await asyncio.sleep(hold / 2)
    measured = await asyncio.to_thread(during)
    await asyncio.sleep(max(0.0, hold / 2))
    result = {"opened": len(opened), "closed_by_server": len(closed), "ramp_s": round(ramp, 2),
              **measured}
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return result


def percentile(values, q: float):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def measure(model: str, count: int, args) -> dict:
    server = Server(model, max_clients=count + 100)
    try:
        run_honest(server.address[1], 20, args.timeout)  # warm up (imports, first thread)
        idle = server.status()

        def during():
            honest_result = run_honest(server.address[1], args.requests, args.timeout)
            loaded = server.status()
            return {"honest": honest_result, "loaded": loaded}

        outcome = asyncio.run(attack(server.address, count, args.interval, args.hold, during))
    finally:
        server.close()
    loaded, honest_result = outcome.pop("loaded"), outcome.pop("honest")
    held = loaded["active"]  # the server's own count (the honest client has finished)
    latencies = honest_result["latencies"]
    return {
        "model": model, "slow_connections": count, "held": held,
        "rss_idle_kb": idle["VmRSS"], "rss_loaded_kb": loaded["VmRSS"],
        "rss_per_conn_kb": round((loaded["VmRSS"] - idle["VmRSS"]) / held, 1) if held else None,
        "server_threads": loaded["Threads"],
        "honest_p50_ms": round(percentile(latencies, 0.5) * 1000, 2) if latencies else None,
        "honest_p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
        "honest_requests": args.requests, "honest_failures": honest_result["failures"],
        **outcome,
    }


def table(rows) -> str:
    lines = [f"{'model':8} {'slow':>5} {'held':>5} {'RSS/conn KB':>11} {'threads':>7} "
             f"{'p50 ms':>7} {'p99 ms':>7} {'fail':>5}"]
    for r in rows:
        lines.append(f"{r['model']:8} {r['slow_connections']:5d} {r['held']:5d} "
                     f"{r['rss_per_conn_kb'] if r['rss_per_conn_kb'] is not None else '-':>11} "
                     f"{r['server_threads']:7d} {r['honest_p50_ms'] or '-':>7} "
                     f"{r['honest_p99_ms'] or '-':>7} {r['honest_failures']:5d}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_models",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000, 5000],
                        help="slow connections per row (at most 8000)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between two trickled header bytes")
    parser.add_argument("--hold", type=float, default=4.0,
                        help="seconds the slow clients stay after all have connected")
    parser.add_argument("--requests", type=int, default=200, help="honest requests per row")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds an honest request may take before it counts as failed")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--serve", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--honest", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-clients", type=int, default=100, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        serve(args.serve, args.max_clients)
        return 0
    if args.honest:
        honest(args.honest, args.requests, args.timeout)
        return 0
    if any(not 1 <= n <= 8000 for n in args.counts):
        print("error: --counts must be between 1 and 8000", file=sys.stderr)
        return 2
    if raise_fd_limit() < max(args.counts) + 200:
        print("error: raise ulimit -n above the largest count", file=sys.stderr)
        return 2
    rows, began = [], time.monotonic()
    for count in args.counts:
        for model in args.models:
            row = measure(model, count, args)
            rows.append(row)
            print(table([row]).splitlines()[1], flush=True)
    print(table(rows))
    print(f"({time.monotonic() - began:.0f} s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": f"{platform.system()} {platform.release()}, "
                           f"{os.cpu_count()} CPUs, {platform.machine()}",
                "python": platform.python_version(),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "command": "python -m tools.bench_models " + " ".join(argv or sys.argv[1:]),
                "interval_s": args.interval, "hold_s": args.hold}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
