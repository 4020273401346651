"""How does an honest client fare while Slowloris attacks? A small benchmark.

    python -m tools.bench_slowloris [--messages 200] [--attackers 8] [--max-clients 12]

Everything runs in this process, on 127.0.0.1 with port 0: a server, an attack in a background
thread (tools.attack.run_slowloris), and an honest client that sends `--messages` requests
("echo hello"), one every `--pause` seconds, and times each round trip. Two kinds of honest
client are measured, because they feel an attack differently:

  one    one connection for all messages (reconnecting only if it is lost). Once it holds a
         thread or a slot it keeps it, so it mostly measures how slow the server has become.
  fresh  a new connection for every message. Each request must win a thread or a slot again,
         which is what a busy server is really like for new visitors, so it is the more
         telling one: it shows denial as failures, not just as latency.

Scenarios: the lesson 04 MessageServer (no cap, no deadline) and the lesson 05 GuardedServer
(cap + per-message deadline), each without and with `--attackers` tricklers; then three rows
with as many tricklers as there are slots, showing why both defences are needed and where
they stop: the cap alone (no deadline), cap + deadline, and cap + deadline against
tricklers that reconnect as soon as they are dropped.

Latencies are over the successful requests only; failures (busy reply, reset, timeout) are
counted separately. The figures depend on the machine: compare rows, not absolute numbers.
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

from solutions.lesson03_framing import encode_frame, recv_msg
from solutions.lesson04_message_server import MessageServer
from solutions.lesson05_guarded_server import GuardedServer
from tools.attack import BUSY, run_slowloris

# The reference framing: this tool measures servers, it does not grade anyone's framing.
@dataclass
class Result:
    server: str
    attack: str
    mode: str
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    failures: dict = field(default_factory=dict)          # reason -> count
    server_threads: int = 0                               # server threads alive mid-attack

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        # nearest-rank percentile: simple, and never invents a value that was not measured
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


class HonestClient:
    """Sends one message at a time and times the round trip; never raises, counts failures."""

    def __init__(self, address, fresh: bool, timeout: float):
        self.address, self.fresh, self.timeout = address, fresh, timeout
        self.sock: socket.socket | None = None

    def request(self, text: str) -> tuple[float | None, str]:
        """(seconds, "ok") or (None, reason)."""
        started = time.perf_counter()
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.sock.sendall(encode_frame(text))
            reply = recv_msg(self.sock)
            elapsed = time.perf_counter() - started
        except TimeoutError:
            self.close()
            return None, "timeout"
        except OSError:  # refused, reset, closed mid-reply
            self.close()
            return None, "dropped"
        if reply == BUSY:
            self.close()
            return None, "busy"
        if self.fresh:
            self.close()
        return elapsed, "ok"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _quiet_logger() -> logging.Logger:
    """The servers log every REJECT; a benchmark would drown in them."""
    logger = logging.getLogger("tools.bench_slowloris.server")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def measure(make_server, server_name: str, attackers: int, reconnect: bool, fresh: bool,
            args) -> Result:
    attack = "none" if not attackers else f"{attackers} tricklers" + (", reconnecting" if reconnect else "")
    result = Result(server_name, attack, "fresh" if fresh else "one")
    before = set(threading.enumerate())
    with make_server() as server:
        stop, ready = threading.Event(), threading.Event()
        attack_thread = None
        if attackers:
            attack_thread = threading.Thread(
                target=run_slowloris, name="bench-attack", daemon=True,
                args=(server.address, attackers, args.interval, 120.0, reconnect),
                kwargs={"stop": stop, "ready": ready})
            attack_thread.start()
            ready.wait(5.0)
            # Let the server's accept loop start a thread for each attacker before we measure.
            settle = time.monotonic() + 1.0
            while len(set(threading.enumerate()) - before) < attackers + 2 and time.monotonic() < settle:
                time.sleep(0.01)
        result.server_threads = len([t for t in set(threading.enumerate()) - before
                                     if t.name.startswith("client-")])
        client = HonestClient(server.address, fresh, args.timeout)
        try:
            for _ in range(args.messages):
                seconds, outcome = client.request("echo hello")
                if outcome == "ok":
                    result.latencies.append(seconds)
                else:
                    result.failures[outcome] = result.failures.get(outcome, 0) + 1
                time.sleep(args.pause)
        finally:
            client.close()
            stop.set()
            if attack_thread is not None:
                attack_thread.join(5.0)
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_slowloris",
        description="Measure an honest client's round-trip latency (p50/p99) and failures with "
                    "no attack and under a Slowloris attack, against the lesson 04 server and "
                    "the lesson 05 guarded server. Everything runs in-process on 127.0.0.1.")
    parser.add_argument("--messages", type=int, default=200,
                        help="honest requests per scenario (default: %(default)s)")
    parser.add_argument("--attackers", type=int, default=8,
                        help="trickling connections (default: %(default)s)")
    parser.add_argument("--max-clients", type=int, default=12,
                        help="the guarded server's cap (default: %(default)s)")
    parser.add_argument("--deadline", type=float, default=0.25,
                        help="the guarded server's per-message deadline, s (default: %(default)s)")
    parser.add_argument("--idle-timeout", type=float, default=1.0,
                        help="both servers' idle timeout, s (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=0.1,
                        help="seconds between an attacker's bytes (default: %(default)s)")
    parser.add_argument("--pause", type=float, default=0.005,
                        help="seconds between honest requests (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="honest client's socket timeout, s (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.messages <= 10_000 or not 0 <= args.attackers <= 200:
        parser.error("--messages must be 1-10000 and --attackers 0-200")

    logger = _quiet_logger()
    cap = args.max_clients

    def plain():
        return MessageServer(idle_timeout=args.idle_timeout, logger=logger)

    def guarded(deadline=args.deadline):
        return lambda: GuardedServer(idle_timeout=args.idle_timeout, logger=logger,
                                     max_clients=cap, message_deadline=deadline)

    scenarios = [  # (label, server factory, attackers, reconnect)
        ("lesson 04 MessageServer", plain, 0, False),
        ("lesson 04 MessageServer", plain, args.attackers, False),
        (f"GuardedServer cap {cap}, deadline", guarded(), 0, False),
        (f"GuardedServer cap {cap}, deadline", guarded(), args.attackers, False),
        (f"GuardedServer cap {cap}, NO deadline", guarded(None), cap, False),
        (f"GuardedServer cap {cap}, deadline", guarded(), cap, False),
        (f"GuardedServer cap {cap}, deadline", guarded(), cap, True),
    ]
    print(f"Honest client: {args.messages} x 'echo hello', one every {args.pause * 1000:g} ms; "
          f"round trip in ms over successful requests.")
    print(f"Servers: idle timeout {args.idle_timeout:g} s; guarded: cap {cap}, per-message "
          f"deadline {args.deadline:g} s. Tricklers send one byte every {args.interval:g} s.")
    print("Modes: one = a single connection for every message; fresh = a new connection per "
          "message (each must win a slot: the more telling one).\n")
    header = (f"{'server':<34} {'attack':<27} {'mode':<5} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'failed':>8}  {'threads':>7}")
    print(header)
    print("-" * len(header))
    started = time.monotonic()
    for label, factory, attackers, reconnect in scenarios:
        for fresh in (False, True):
            r = measure(factory, label, attackers, reconnect, fresh, args)
            why = ", ".join(f"{n} {k}" for k, n in sorted(r.failures.items()))
            print(f"{r.server:<34} {r.attack:<27} {r.mode:<5} {_ms(r.percentile(50)):>7} "
                  f"{_ms(r.percentile(99)):>7} {r.failed:>4}/{args.messages:<3}  "
                  f"{r.server_threads:>7}" + (f"  ({why})" if why else ""), flush=True)
    print(f"\n'threads' = server client threads alive when the honest client started. "
          f"Total time {time.monotonic() - started:.1f} s.")
    print("What to look for: fewer tricklers than slots cost threads, not latency; a cap with "
          "no deadline is\nclosed by as many tricklers as it has slots; the deadline frees "
          "the slots of tricklers that do not\ncome back; tricklers that reconnect keep "
          "winning slots from fresh connections. p99 is noisy; the\nfailure counts are "
          "the story.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
