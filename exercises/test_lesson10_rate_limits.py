"""Graders for lesson 10, rate limits and race conditions.  Run: pytest exercises -k lesson10

The limiter is graded sans-IO with a fake clock the grader moves by hand, so refills and
Retry-After values are exact and no test sleeps. Races are provoked for real: many threads
started together, the interpreter told to switch threads every microsecond, many rounds.
The server is graded over HTTP on 127.0.0.1, port 0.
"""
import inspect
import math
import socket
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from graderkit import WAIT, running, serving, short
from httpkit import Reader, check_status, exchange, expect_response, request


@pytest.fixture
def lesson(graded):
    return graded("lesson10_rate_limits")


class FakeClock:
    """A clock that moves only when the grader says so (seconds, like time.monotonic)."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def hammer(call, threads: int, attempts: int) -> int:
    """call() `attempts` times in each of `threads` threads started together, with thread
    switches every microsecond (restored after); how many calls returned a true value."""
    granted = [0] * threads
    errors = []
    start = threading.Barrier(threads)

    def worker(i):
        try:
            start.wait(WAIT)
            granted[i] = sum(1 for _ in range(attempts) if call())
        except BaseException as exc:  # handed back to the grader
            errors.append(exc)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=worker, args=(i,), name="grader-racer", daemon=True)
                   for i in range(threads)]
        for worker_thread in workers:
            worker_thread.start()
        for worker_thread in workers:
            worker_thread.join(WAIT)
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]
    return sum(granted)


def tries(limiter, key, n):
    return [limiter.allow(key) for _ in range(n)]


def allowed(results):
    return [ok for ok, _ in results]


# --------------------------------------------------------------------------- 10.race


@pytest.mark.task("10.race")
def test_a_budget_grants_exactly_its_limit(lesson, story):
    budget = lesson.Budget(3)
    story.step("created Budget(3) and called take() 5 times in one thread")
    got = [budget.take() for _ in range(5)]
    story.check(got == [True, True, True, False, False], "[True, True, True, False, False]",
                repr(got))


@pytest.mark.task("10.race")
def test_a_budget_grants_exactly_its_limit_under_a_race(lesson, story):
    lesson.Budget(1).take()  # a stub fails here, at once
    story.step("25 rounds: Budget(3000), 8 threads x 500 take() started together, thread "
               "switches every microsecond")
    for round_ in range(25):
        got = hammer(lesson.Budget(3000).take, threads=8, attempts=500)
        story.check(got == 3000, "exactly 3000 True in every round (the check and the update "
                    "made one step under a lock)", f"{got} in round {round_ + 1}")


@pytest.mark.task("10.race")
def test_race_runs_every_call_with_fast_switches_and_restores_the_interval(lesson, story):
    lesson.Budget(1).take()  # a stub fails here, at once
    seen = set()
    lock = threading.Lock()

    def take():
        with lock:
            seen.add(sys.getswitchinterval())
            return len(seen) > 0
    before = sys.getswitchinterval()
    story.step("race(take) with the defaults, and race(take, threads=3, attempts=7, "
               "switch=2e-6), where take() records the switch interval and says True")
    got = (lesson.race(take), lesson.race(take, threads=3, attempts=7, switch=2e-6))
    story.check(got == (16000, 21), "(16000, 21): 8 x 2000 calls, then 3 x 7", repr(got))
    story.check(seen == {1e-6, 2e-6}, "take() ran with the switch interval given (1e-6 by "
                "default)", repr(seen))
    story.check(sys.getswitchinterval() == before, f"the interval restored to {before}",
                repr(sys.getswitchinterval()))


# --------------------------------------------------------------------------- 10.limiter


@pytest.mark.task("10.limiter")
def test_exactly_rate_requests_then_a_refusal_with_retry_after(lesson, story):
    clock = FakeClock()
    limiter = lesson.RateLimiter(4, 2.0, clock=clock)
    story.step("RateLimiter(4, 2.0) on a frozen clock: allow('a') 6 times")
    got = tries(limiter, "a", 6)
    story.check(allowed(got) == [True] * 4 + [False] * 2, "4 allowed, then refused", repr(got))
    story.check(all(wait == 0 for ok, wait in got[:4]), "retry_after 0 when allowed", repr(got))
    for ok, wait in got[4:]:
        story.check(math.isclose(wait, 0.5, abs_tol=1e-9), "retry_after 0.5 s when refused "
                    "(a token comes back every 2.0 / 4 = 0.5 s)", repr(wait))


@pytest.mark.task("10.limiter")
def test_tokens_come_back_at_the_rate(lesson, story):
    clock = FakeClock()
    limiter = lesson.RateLimiter(4, 2.0, clock=clock)
    tries(limiter, "a", 4)
    story.step("RateLimiter(4, 2.0): spent 4, then moved the clock 0.375 s")
    clock.advance(0.375)
    ok, wait = limiter.allow("a")
    story.check(not ok and math.isclose(wait, 0.125, abs_tol=1e-9), "refused, retry_after "
                "0.125 s (0.5 s per token, 0.375 s passed)", repr((ok, wait)))
    clock.advance(0.125)
    story.step("moved the clock 0.125 s more (0.5 s in all)")
    got = tries(limiter, "a", 2)
    story.check(allowed(got) == [True, False], "one more allowed, then refused again",
                repr(got))
    clock.advance(1.0)
    story.step("moved the clock 1.0 s more")
    got = tries(limiter, "a", 3)
    story.check(allowed(got) == [True, True, False], "two allowed (1.0 s = 2 tokens)",
                repr(got))


@pytest.mark.task("10.limiter")
def test_a_long_pause_refills_the_bucket_but_no_more(lesson, story):
    clock = FakeClock()
    limiter = lesson.RateLimiter(3, 1.0, clock=clock)
    tries(limiter, "a", 3)
    clock.advance(100.0)
    story.step("RateLimiter(3, 1.0): spent 3, waited 100 s, then allow('a') 5 times")
    got = allowed(tries(limiter, "a", 5))
    story.check(got == [True] * 3 + [False] * 2, "3 allowed (a full bucket holds `rate`, "
                "not 100 s worth)", repr(got))


@pytest.mark.task("10.limiter")
def test_refusals_do_not_spend_tokens(lesson, story):
    clock = FakeClock()
    limiter = lesson.RateLimiter(2, 1.0, clock=clock)
    tries(limiter, "a", 2)
    story.step("RateLimiter(2, 1.0): spent 2, then 50 refused calls, then the clock moved "
               "0.5 s (one token)")
    tries(limiter, "a", 50)
    clock.advance(0.5)
    ok, wait = limiter.allow("a")
    story.check(ok, "allowed: a refused request is not served, so it costs nothing",
                repr((ok, wait)))


@pytest.mark.task("10.limiter")
def test_each_key_has_its_own_bucket(lesson, story):
    clock = FakeClock()
    limiter = lesson.RateLimiter(3, 60.0, clock=clock)
    story.step("RateLimiter(3, 60.0): 4 calls for 'a', then 4 for 'b'")
    a, b = allowed(tries(limiter, "a", 4)), allowed(tries(limiter, "b", 4))
    story.check(a == b == [True] * 3 + [False], "3 allowed for each key", f"a {a}, b {b}")
    story.check(len(limiter) == 2, "len(limiter) == 2 keys tracked", repr(len(limiter)))
    story.check(not limiter.allow("a")[0], "'a' still refused", "allowed")


@pytest.mark.task("10.limiter")
def test_the_parameters_must_make_sense(lesson, story):
    for args in [(0, 1.0), (3, 0.0), (3, -1.0), (-1, 1.0)]:
        story.step(f"RateLimiter{args}")
        with pytest.raises(ValueError):
            lesson.RateLimiter(*args)
    story.step("RateLimiter(3, 1.0, max_tracked=0)")
    with pytest.raises(ValueError):
        lesson.RateLimiter(3, 1.0, max_tracked=0)
    limiter = lesson.RateLimiter(1, 0.001, max_tracked=1, clock=FakeClock())
    story.check(allowed(tries(limiter, "a", 2)) == [True, False], "RateLimiter(1, 0.001, "
                "max_tracked=1) works: 1 allowed, then refused", "something else")
    defaults = {name: p.default for name, p in
                inspect.signature(lesson.RateLimiter).parameters.items()}
    story.check(defaults.get("max_tracked") == 10_000 and defaults.get("clock") is
                time.monotonic, "defaults max_tracked=10_000, clock=time.monotonic",
                repr(defaults))


@pytest.mark.task("10.limiter")
# No shrinking: a stub's NotImplementedError fails the first example at once.
@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 12)), max_size=60))
def test_no_key_ever_gets_more_than_the_bucket_allows(lesson, steps):
    """For every key and every pair of its allowed calls at times t0 <= t1: at most
    rate + (t1 - t0) * rate / window of them (a bucket of `rate`, refilled at the rate)."""
    rate, window = 4, 2.0
    clock = FakeClock(0.0)
    limiter = lesson.RateLimiter(rate, window, clock=clock)
    times = {}
    for key, eighths in steps:
        clock.advance(eighths / 8)
        ok, wait = limiter.allow(key)
        assert (wait == 0) if ok else (0 < wait <= window), (ok, wait)
        if ok:
            times.setdefault(key, []).append(clock.now)
    for key, seen in times.items():
        for i in range(len(seen)):
            for j in range(i, len(seen)):
                budget = rate + (seen[j] - seen[i]) * rate / window
                assert j - i + 1 <= budget + 1e-9, (key, seen)


@pytest.mark.task("10.limiter")
def test_the_limiter_is_exact_under_a_race(lesson, story):
    lesson.RateLimiter(1, 1.0, clock=FakeClock()).allow("a")  # a stub fails here, at once
    story.step("25 rounds: RateLimiter(2000, 60.0) on a frozen clock, 8 threads x 500 "
               "allow('k') started together, thread switches every microsecond")
    for round_ in range(25):
        limiter = lesson.RateLimiter(2000, 60.0, clock=FakeClock())
        got = hammer(lambda: limiter.allow("k")[0], threads=8, attempts=500)
        story.check(got == 2000, "exactly 2000 allowed in every round (read, check and spend "
                    "as one step under a lock)", f"{got} in round {round_ + 1}")


# --------------------------------------------------------------------------- 10.bounded


@pytest.mark.task("10.bounded")
def test_a_flood_of_distinct_keys_cannot_grow_the_table(lesson, story):
    clock = FakeClock()
    limiter = lesson.RateLimiter(5, 60.0, max_tracked=50, clock=clock)
    story.step("RateLimiter(5, 60.0, max_tracked=50): one call each from 5000 distinct keys")
    largest = 0
    for i in range(5000):
        ok, _ = limiter.allow(f"flood-{i}")
        story.check(ok, "every new key allowed its first request", f"flood-{i} refused")
        largest = max(largest, len(limiter))
    story.check(largest == 50, "len(limiter) never above 50, and 50 at the end",
                f"largest {largest}, at the end {len(limiter)}")
    limiter = lesson.RateLimiter(5, 60.0, clock=clock)
    story.step("RateLimiter(5, 60.0) (max_tracked by default): 10,001 distinct keys")
    for i in range(10_001):
        limiter.allow(i)
    story.check(len(limiter) == 10_000, "len(limiter) == 10,000 (the default max_tracked)",
                repr(len(limiter)))


@pytest.mark.task("10.bounded")
def test_the_least_recently_seen_key_is_evicted_first(lesson, story):
    clock = FakeClock()
    limiter = lesson.RateLimiter(2, 60.0, max_tracked=50, clock=clock)
    tries(limiter, "busy", 3)
    story.step("RateLimiter(2, 60.0, max_tracked=50): 'busy' spent its 2 tokens; 30 new keys; "
               "'busy' tried again; 30 more new keys")
    for i in range(30):
        limiter.allow(f"new-{i}")
    story.check(not limiter.allow("busy")[0], "'busy' refused (still tracked)", "allowed")
    for i in range(30, 60):
        limiter.allow(f"new-{i}")
    story.check(not limiter.allow("busy")[0], "'busy' still refused: it was seen 30 keys ago, "
                "and 49 keys were seen after it (evict the LEAST RECENTLY SEEN, not the "
                "first inserted)", "allowed: its bucket was forgotten")
    story.check(len(limiter) == 50, "len(limiter) == 50", repr(len(limiter)))
    for i in range(60, 110):
        limiter.allow(f"new-{i}")
    story.check(limiter.allow("busy")[0], "'busy' forgotten after 50 newer keys: a full "
                "bucket again", "refused")


@pytest.mark.task("10.bounded")
def test_many_threads_and_many_keys_keep_the_bound(lesson, story):
    limiter = lesson.RateLimiter(1000, 60.0, max_tracked=100, clock=FakeClock())
    counter = iter(range(10**9))
    story.step("RateLimiter(1000, 60.0, max_tracked=100): 8 threads x 500 calls, each with a "
               "new key, started together")
    got = hammer(lambda: limiter.allow(f"k{next(counter)}")[0], threads=8, attempts=500)
    story.check(got == 4000, "all 4000 allowed (each key is new)", repr(got))
    story.check(len(limiter) == 100, "len(limiter) == 100 afterwards", repr(len(limiter)))


# --------------------------------------------------------------------------- 10.client_ip


PROXY = "10.0.0.2"


@pytest.mark.task("10.client_ip")
@pytest.mark.parametrize("forwarded", [None, "", "203.0.113.9", "203.0.113.9, 10.0.0.2"])
def test_without_a_trusted_proxy_the_peer_is_the_client(lesson, story, forwarded):
    story.step(f"client_ip('198.51.100.7', {forwarded!r}, ())")
    got = lesson.client_ip("198.51.100.7", forwarded, ())
    story.check(got == "198.51.100.7", "'198.51.100.7': with no trusted proxy a header proves "
                "nothing (anyone can write it)", repr(got))


@pytest.mark.task("10.client_ip")
def test_a_header_from_an_untrusted_peer_is_ignored(lesson, story):
    story.step(f"client_ip('198.51.100.7', '203.0.113.9', ({PROXY!r},)): the peer is NOT the "
               "trusted proxy")
    got = lesson.client_ip("198.51.100.7", "203.0.113.9", (PROXY,))
    story.check(got == "198.51.100.7", "'198.51.100.7' (the peer: it is not our proxy)",
                repr(got))


@pytest.mark.task("10.client_ip")
@pytest.mark.parametrize("forwarded, trusted, expected", [
    ("203.0.113.9", (PROXY,), "203.0.113.9"),
    (" 203.0.113.9 ", (PROXY,), "203.0.113.9"),
    ("6.6.6.6, 203.0.113.9", (PROXY,), "203.0.113.9"),
    ("6.6.6.6, 203.0.113.9, 10.0.0.3", (PROXY, "10.0.0.3"), "203.0.113.9"),
    ("6.6.6.6, 203.0.113.9, 10.0.0.3", ("10.0.0.1/24",), "203.0.113.9"),
    ("10.0.0.4, 10.0.0.3", ("10.0.0.1/24",), "10.0.0.4"),
    ("2001:db8::5", (PROXY,), "2001:db8::5"),
    ("203.0.113.9", ("10.0.0.9/24",), "203.0.113.9"),
])
def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client(
        lesson, story, forwarded, trusted, expected):
    story.step(f"client_ip({PROXY!r}, {forwarded!r}, {trusted!r})")
    got = lesson.client_ip(PROXY, forwarded, trusted)
    story.check(got == expected, f"{expected!r} (read from the right; hops to the left of "
                "the first untrusted one were written by the client)", repr(got))


@pytest.mark.task("10.client_ip")
def test_a_peer_that_is_not_an_address_is_returned_as_it_is(lesson, story):
    story.step(f"client_ip('not-an-ip', '203.0.113.9', ({PROXY!r},))")
    got = lesson.client_ip("not-an-ip", "203.0.113.9", (PROXY,))
    story.check(got == "not-an-ip", "'not-an-ip' (no proxy of ours has that address)",
                repr(got))


@pytest.mark.task("10.client_ip")
@pytest.mark.parametrize("forwarded, expected", [
    (None, PROXY), ("", PROXY), (" , ", PROXY), ("not-an-ip", PROXY),
    ("203.0.113.9:4444", PROXY), ("203.0.113.9, garbage", PROXY),
    ("garbage, 203.0.113.9", "203.0.113.9"), ("999.1.1.1", PROXY),
])
def test_garbage_in_the_header_falls_back_to_the_last_trusted_address(
        lesson, story, forwarded, expected):
    story.step(f"client_ip({PROXY!r}, {forwarded!r}, ({PROXY!r},))")
    got = lesson.client_ip(PROXY, forwarded, (PROXY,))
    story.check(got == expected, f"{expected!r} (a hop that is not an IP address is not "
                "believed, nor anything left of it)", repr(got))


# --------------------------------------------------------------------------- 10.server


def probe(lesson):
    """Fails at once on a stub: the server's check_before_body, called directly."""
    from solutions.lesson08_validation import parse_head
    server = lesson.RateLimitedServer(rate=5)
    server.check_before_body(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "127.0.0.1:9")


def make_server(lesson, story, tmp_path, logs, **kwargs):
    """Your RateLimitedServer on a small site, wrapped so a NotImplementedError raised in a
    client thread reaches the test."""
    probe(lesson)
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "hello.txt").write_bytes(b"hello\n")

    class Graded(lesson.RateLimitedServer):
        poll_interval = 0.05
        not_implemented = None

        def process(self, conn, addr):
            try:
                super().process(conn, addr)
            except NotImplementedError as exc:
                self.not_implemented = exc

    values = dict(header_timeout=5.0, body_timeout=5.0, idle_timeout=5.0, send_timeout=5.0,
                  logger=logs.logger)
    values.update(kwargs)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    story.step(f"created RateLimitedServer(<site>, {args})")
    return Graded(site, **values)


GET = request("GET", "/hello.txt")


def parsed(raw: bytes):
    from solutions.lesson08_validation import parse_head
    return parse_head(raw)


def refusal(call):
    """The HttpError call() raised, or None if it returned."""
    from solutions.lesson08_validation import HttpError
    try:
        call()
    except HttpError as exc:
        return exc
    return None


@pytest.mark.task("10.server")
def test_check_before_body_keys_on_the_ip_and_keeps_lesson_09_checks(lesson, story):
    probe(lesson)
    get_head = parsed(request("GET", "/hello.txt"))
    server = lesson.RateLimitedServer(rate=1, trusted_proxies=("127.0.0.1",))
    story.step("RateLimitedServer(rate=1, trusted_proxies=('127.0.0.1',)), its "
               "check_before_body called directly with IPv6 peers '2001:db8::1:5555', "
               "'2001:db8::2:5555', then '2001:db8::1:6666'")
    for peer in ["2001:db8::1:5555", "2001:db8::2:5555"]:
        error = refusal(lambda: server.check_before_body(get_head, peer))
        story.check(error is None, f"{peer}: no refusal (a first request)", repr(error))
    error = refusal(lambda: server.check_before_body(get_head, "2001:db8::1:6666"))
    story.check(error is not None and error.status == 429, "429 for 2001:db8::1 from "
                "another port (the key is the IP: the part before the LAST colon)", repr(error))
    retry = dict((k.lower(), v) for k, v in error.headers).get("retry-after")
    story.check(retry == "60", "Retry-After: 60 (1 request per 60 s by default)", repr(retry))
    two = parsed(request("GET", "/", [("X-Forwarded-For", "6.6.6.6"),
                                      ("X-Forwarded-For", "203.0.113.1")]))
    one = parsed(request("GET", "/", [("X-Forwarded-For", "203.0.113.1")]))
    story.step("from the trusted proxy 127.0.0.1: a request with two X-Forwarded-For "
               "headers ('6.6.6.6' and '203.0.113.1', one list), then one with "
               "'203.0.113.1' alone")
    story.check(refusal(lambda: server.check_before_body(two, "127.0.0.1:7")) is None,
                "no refusal for the first", "refused")
    error = refusal(lambda: server.check_before_body(one, "127.0.0.1:8"))
    story.check(error is not None and error.status == 429, "429 for the second: both are "
                "client 203.0.113.1 (several headers are one comma-separated list)",
                repr(error))
    post = parsed(request("POST", "/other", [("Content-Type", "application/json"),
                                              ("Content-Length", "2")]))
    error = refusal(lambda: lesson.RateLimitedServer(rate=5).check_before_body(post, "1.2.3.4:5"))
    story.check(error is not None and error.status == 405, "405 for POST /other (lesson 09's "
                "checks still run: call super())", repr(error))
    with pytest.raises(ValueError):
        story.step("RateLimitedServer(trusted_proxies=('not an address',))")
        lesson.RateLimitedServer(trusted_proxies=("not an address",))
    story.step("RateLimitedServer() with the defaults: 121 requests from 192.0.2.1")
    server = lesson.RateLimitedServer()
    errors = [refusal(lambda: server.check_before_body(get_head, "192.0.2.1:1000"))
              for _ in range(121)]
    story.check(errors[:120] == [None] * 120 and errors[120] is not None
                and errors[120].status == 429, "120 allowed, the 121st refused (120 per 60 s)",
                f"refused at {[i + 1 for i, e in enumerate(errors) if e][:3]}")
    retry = dict((k.lower(), v) for k, v in errors[120].headers).get("retry-after")
    story.check(retry == "1", "Retry-After: 1 (a token every 0.5 s, rounded UP)", repr(retry))
    story.step("RateLimitedServer(rate=1): 192.0.2.1 twice, then 10,000 other addresses, "
               "then 192.0.2.1 again")
    server = lesson.RateLimitedServer(rate=1)
    server.check_before_body(get_head, "192.0.2.1:1000")
    story.check(refusal(lambda: server.check_before_body(get_head, "192.0.2.1:1001"))
                is not None, "the second refused", "allowed")
    for i in range(10_000):
        server.check_before_body(get_head, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:9")
    story.check(refusal(lambda: server.check_before_body(get_head, "192.0.2.1:1002")) is None,
                "allowed: forgotten after 10,000 newer keys (max_tracked=10_000 by default)",
                "still refused")
    defaults = {name: p.default for name, p in
                inspect.signature(lesson.RateLimitedServer).parameters.items()}
    wanted = dict(rate=120, rate_window=60.0, trusted_proxies=(), max_tracked=10_000)
    story.check(all(defaults.get(k) == v for k, v in wanted.items()),
                f"the defaults {wanted}", repr(defaults))


def get(address, story, headers=(), who="the client"):
    return exchange(address, request("GET", "/hello.txt", headers), story,
                    "a response", who=who)


def check_429(story, reply, low=1, high=1):
    check_status(story, reply, 429, "over the limit")
    retry = reply.header("retry-after", "")
    story.check(retry.isdigit() and low <= int(retry) <= high,
                f"Retry-After in whole seconds, {low}..{high}", repr(retry))
    story.check(reply.header("x-content-type-options", "").lower() == "nosniff"
                and "frame-ancestors" in reply.header("content-security-policy", ""),
                "the security headers (nosniff, a CSP with frame-ancestors) on the 429",
                short(reply.raw_head, 400))
    story.check((reply.header("connection") or "").lower() == "close",
                "Connection: close on the 429", short(reply.raw_head, 300))


@pytest.mark.task("10.server")
def test_the_request_over_the_limit_gets_429_each_on_a_new_connection(
        lesson, story, tmp_path, logs):
    server = make_server(lesson, story, tmp_path, logs, rate=3, rate_window=30.0)
    with serving(server, story) as address:
        for i in range(3):
            check_status(story, get(address, story, who=f"connection {i + 1}"), 200,
                         "within the limit")
        check_429(story, get(address, story, who="connection 4"), 9, 10)
    story.check(any("127.0.0.1" in line and "30" in line for line in logs.lines(30)),
                "a WARNING log line naming the client 127.0.0.1 and the limit (3 per 30 s)",
                repr(logs.lines()))


@pytest.mark.task("10.server")
def test_it_listens_where_asked_and_on_any_free_port_by_default(lesson, story, tmp_path, logs):
    probe(lesson)
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    story.step(f"RateLimitedServer(<site>, '127.0.0.1', {port}) (a port just free), and two "
               "RateLimitedServer() with the default port, all started")
    servers = [lesson.RateLimitedServer(tmp_path, "127.0.0.1", port, logger=logs.logger),
               lesson.RateLimitedServer(logger=logs.logger),
               lesson.RateLimitedServer(logger=logs.logger)]
    for server in servers:
        server.poll_interval = 0.05
    with running(servers[0], story) as first, running(servers[1], story) as second, \
            running(servers[2], story) as third:
        story.check(first[1] == port, f"the first on port {port}", repr(first[1]))
        story.check(second[1] != third[1] and 0 not in (second[1], third[1]),
                    "the other two on two different free ports (port 0 by default)",
                    f"{second[1]} and {third[1]}")


@pytest.mark.task("10.server")
def test_keep_alive_counts_every_request(lesson, story, tmp_path, logs):
    server = make_server(lesson, story, tmp_path, logs, rate=3, rate_window=2.7)
    with serving(server, story) as address:
        with socket.create_connection(address, timeout=WAIT) as sock:
            reader = Reader(sock)
            for i in range(3):
                sock.sendall(GET)
                story.step(f"sent request {i + 1} on one kept-alive connection")
                check_status(story, expect_response(reader, story), 200, "within the limit")
            sock.sendall(GET)
            story.step("sent request 4 on the same connection")
            check_429(story, expect_response(reader, story), 1, 1)
            story.check(sock.recv(1) == b"", "the connection closed after the 429", "more bytes")


@pytest.mark.task("10.server")
def test_tokens_come_back_over_real_time(lesson, story, tmp_path, logs):
    server = make_server(lesson, story, tmp_path, logs, rate=2, rate_window=1.0)
    with serving(server, story) as address:
        for _ in range(2):
            check_status(story, get(address, story), 200)
        check_status(story, get(address, story), 429, "2 per 1.0 s spent")
        time.sleep(0.6)
        story.step("waited 0.6 s (a token comes back every 0.5 s)")
        check_status(story, get(address, story), 200, "a token came back")


@pytest.mark.task("10.server")
def test_a_refused_request_s_body_is_never_read(lesson, story, tmp_path, logs):
    server = make_server(lesson, story, tmp_path, logs, rate=1, rate_window=30.0,
                         body_timeout=3.0)
    with serving(server, story) as address:
        check_status(story, get(address, story), 200)
        with socket.create_connection(address, timeout=WAIT) as sock:
            sock.sendall(request("POST", "/echo", [("Content-Type", "application/json"),
                                                   ("Content-Length", "1000")]))
            story.step("sent a POST head announcing 1000 body bytes, and no body")
            started = time.monotonic()
            reply = expect_response(Reader(sock), story)
            took = time.monotonic() - started
        check_429(story, reply, 30, 30)
        story.check(took < 1.0, "the 429 at once, without waiting for the body "
                    "(body_timeout is 3 s)", f"after {took:.2f} s")


@pytest.mark.task("10.server")
def test_a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
        lesson, story, tmp_path, logs):
    server = make_server(lesson, story, tmp_path, logs, rate=3, rate_window=30.0)
    with serving(server, story) as address:
        for i in range(3):
            check_status(story, get(address, story, [("X-Forwarded-For", f"203.0.113.{i}")]),
                         200)
        reply = get(address, story, [("X-Forwarded-For", "203.0.113.99")],
                    who="the same client, claiming a new address")
        check_429(story, reply, 9, 10)


@pytest.mark.task("10.server")
def test_behind_a_trusted_proxy_each_client_has_its_own_limit(lesson, story, tmp_path, logs):
    server = make_server(lesson, story, tmp_path, logs, rate=2, rate_window=30.0,
                         trusted_proxies=("127.0.0.1",), max_tracked=2)
    with serving(server, story) as address:
        def via_proxy(client):
            return get(address, story, [("X-Forwarded-For", f"6.6.6.6, {client}")],
                       who=f"the proxy for {client}")
        for _ in range(2):
            check_status(story, via_proxy("203.0.113.1"), 200)
        check_429(story, via_proxy("203.0.113.1"), 15, 15)
        check_status(story, via_proxy("203.0.113.2"), 200, "another client, its own limit")
        check_status(story, via_proxy("203.0.113.3"), 200, "another client, its own limit")
        check_status(story, via_proxy("203.0.113.1"), 200, "max_tracked=2: 203.0.113.1 "
                     "was the least recently seen of 3, so it was forgotten")
