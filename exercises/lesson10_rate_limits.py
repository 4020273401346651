"""Lesson 10 exercise: rate limits and race conditions.
Notebook: lessons/10_rate_limits.ipynb

A rate limit is shared state: every client thread reads a count, decides, and writes it
back. Without a lock two threads can read the same count and both write "one more".
Build, in order:

    Budget.take()       check-then-act under a lock: exactly N in all, even under a race
    RateLimiter         a token bucket per key, thread-safe, its table bounded
    client_ip()         X-Forwarded-For believed only from one of your proxies
    RateLimitedServer   429 + Retry-After from check_before_body, before any body byte

Grade yourself with:

    pytest exercises -k lesson10

The server builds on the REFERENCE lesson 09 server (swap in yours if you like):
HardenedHTTPServer and its check_before_body(request, peer) hook, lesson 08's HttpError and
log_safe, and LOOPBACK from lesson 06.
"""
from __future__ import annotations

import ipaddress
import math
import sys
import threading
import time

from solutions.lesson06_capstone import LOOPBACK
from solutions.lesson08_validation import HttpError, log_safe  # or yours
from solutions.lesson09_slow_http import SITE, HardenedHTTPServer  # or yours


# --------------------------------------------------------------------------- the race


class UnsafeBudget:
    """At most `limit` requests in all -- WRONG with threads: between the check and the write
    another thread may run, read the same count, and one of the two updates is lost."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        used = self.used  # read
        if used >= self.limit:  # check
            return False
        self.note(used)  # any call here (a log line, a lookup) is a point where threads switch
        self.used = used + 1  # act: writes back what may be a stale count
        return True

    def note(self, used: int) -> None:
        """Stands for the work a real server does between the check and the write."""
        self.last = f"request {used + 1} of {self.limit}"


class Budget(UnsafeBudget):
    """The same check-then-act, made atomic: one lock around the read, the check and the write."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self._lock = threading.Lock()

    def take(self) -> bool:
        raise NotImplementedError("Budget.take(): hold self._lock around the read, the check "
                                  "and the write (super().take() does all three)")


def race(take, threads: int = 8, attempts: int = 2000, switch: float = 1e-6) -> int:
    """Call take() `attempts` times in each of `threads` threads, all started together, with
    the interpreter switching threads every `switch` seconds (restored afterwards); return how
    many calls said True. A correct budget of N says True exactly N times."""
    granted = [0] * threads
    start = threading.Barrier(threads)

    def worker(i):
        start.wait()
        granted[i] = sum(1 for _ in range(attempts) if take())

    old = sys.getswitchinterval()
    sys.setswitchinterval(switch)  # switch far more often than the default 5 ms
    try:
        workers = [threading.Thread(target=worker, args=(i,), daemon=True)
                   for i in range(threads)]
        for worker_thread in workers:
            worker_thread.start()
        for worker_thread in workers:
            worker_thread.join()
    finally:
        sys.setswitchinterval(old)
    return sum(granted)


# --------------------------------------------------------------------------- the limiter


class RateLimiter:
    """A token bucket per key: each key may make `rate` requests at once, and earns them back
    at `rate` per `window` seconds. Thread-safe. At most `max_tracked` keys are remembered;
    a new key beyond that evicts the one seen least recently (whose bucket has most likely
    refilled anyway), so a flood of distinct keys cannot grow memory without limit.

    allow(key) -> (True, 0.0), or (False, seconds until the next request would be allowed).
    """

    def __init__(self, rate: int, window: float, max_tracked: int = 10_000,
                 clock=time.monotonic):
        if rate < 1 or window <= 0 or max_tracked < 1:
            raise ValueError("rate, window and max_tracked must be positive")
        self.rate = rate
        self.window = window
        self.max_tracked = max_tracked
        self.clock = clock
        self._buckets: dict = {}  # key -> (tokens, when counted); order: least recently seen first
        self._lock = threading.Lock()

    def allow(self, key) -> tuple[bool, float]:
        """Under the lock: now = self.clock(); the key's bucket (a new key starts full, and
        may first evict the least recently seen key); refill by the time passed, never above
        `rate`; spend a token, or refuse and say how long until the next one."""
        raise NotImplementedError("RateLimiter.allow(): a token bucket per key in "
                                  "self._buckets, under self._lock, at most max_tracked keys")

    def __len__(self) -> int:
        raise NotImplementedError("RateLimiter.__len__(): how many keys are tracked (under "
                                  "the lock)")


# --------------------------------------------------------------------------- whose request


def _networks(trusted_proxies) -> list:
    return [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]


def _address(text: str):
    """The IP address in `text`, or None if it is not one (a port, a name, garbage)."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_ip(peer_ip: str, forwarded_for: str | None, trusted_proxies=()) -> str:
    """The address to rate-limit. The socket's peer is the only address nobody can forge, so
    it is the answer unless the peer is one of our own proxies (addresses or networks in
    `trusted_proxies`). Then X-Forwarded-For is read from the right: each proxy appends the
    address it saw, so the right-most hop that is not one of ours is the client; everything
    to its left was written by the client and proves nothing. A hop that is not an IP
    address ends the walk: the last trusted address is used instead."""
    raise NotImplementedError("client_ip(): the peer, unless it is a trusted proxy; then "
                              "X-Forwarded-For's right-most hop that is not a trusted proxy")


# --------------------------------------------------------------------------- the server


class RateLimitedServer(HardenedHTTPServer):
    """Lesson 09's server with a rate limit per client: `rate` requests per `rate_window`
    seconds. Every request counts, on new connections and kept-alive ones alike; one over
    the limit gets 429 with Retry-After (whole seconds, at least 1) before its body is read,
    and the connection is closed."""

    def __init__(self, root=SITE, host: str = LOOPBACK, port: int = 0, *, rate: int = 120,
                 rate_window: float = 60.0, trusted_proxies=(), max_tracked: int = 10_000,
                 **kwargs):
        super().__init__(root, host, port, **kwargs)
        self.trusted_proxies = tuple(trusted_proxies)
        _networks(self.trusted_proxies)  # a typo in a proxy address fails here, not per request
        self.limiter = RateLimiter(rate, rate_window, max_tracked)

    def check_before_body(self, request, peer: str) -> None:
        """Count this request for its client (client_ip() of the peer's IP -- not its port);
        over the limit: log a warning naming the client and the limit (rate per window) and
        raise HttpError 429 with Retry-After in whole seconds, at least 1. Then the checks
        of lesson 09 (super())."""
        raise NotImplementedError("RateLimitedServer.check_before_body(): self.limiter.allow("
                                  "client_ip(...)), 429 + Retry-After when refused, then super()")
