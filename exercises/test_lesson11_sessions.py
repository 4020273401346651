"""Graders for lesson 11, passwords, sessions and timing attacks.  Run: pytest exercises -k lesson11

Most graders are sans-IO: the stores take a clock, and the grader hands them a fake one it
moves by hand, so "expired after 10 s" is checked at exactly 9 s and 11 s without waiting.
Hashes use scrypt with n=2**10 here (a millisecond each) instead of the lesson's 2**14.

    python -m exercises.http_users add FILE NAME  (the program grader; --against DIR: DIR's)
"""
import base64
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from graderkit import WAIT, describe, run_in_thread, serving, short
from httpkit import Reader, check_status, expect_response, request

REPO = Path(__file__).resolve().parent.parent
N = 2**10  # scrypt's n in these graders: cheap, and not the default (so it must be passed on)
STORED = re.compile(r"scrypt\$n=([0-9]+),r=([0-9]+),p=([0-9]+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")
URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


@pytest.fixture
def lesson(graded):
    return graded("lesson11_sessions")


@pytest.fixture
def users_program(graded):
    return graded("http_users")


class Clock:
    """A fake time.monotonic: it moves only when the grader says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands in for a module (hashlib, hmac, secrets) inside the lesson only: every call of
    `name` is recorded (args, kwargs) and passed on to the real function."""

    def __init__(self, module, name):
        self._module, self._name, self.calls = module, name, []

    def __getattr__(self, attr):
        real = getattr(self._module, attr)
        if attr != self._name:
            return real

        def recorded(*args, **kwargs):
            self.calls.append((args, kwargs))
            return real(*args, **kwargs)
        return recorded


def record(monkeypatch, lesson, module, name) -> Recorder:
    recorder = Recorder(module, name)
    monkeypatch.setattr(lesson, module.__name__, recorder)
    return recorder


def parts(story, stored):
    match = STORED.fullmatch(stored) if isinstance(stored, str) else None
    story.check(match is not None, "a string like scrypt$n=1024,r=8,p=1$<salt base64>$<key "
                "base64>", short(stored, 120))
    n, r, p = (int(match[i]) for i in (1, 2, 3))
    return n, r, p, base64.b64decode(match[4]), base64.b64decode(match[5])


# --------------------------------------------------------------------------- 11.hashing


@pytest.mark.task("11.hashing")
def test_a_hash_is_salted_scrypt_and_never_the_password(lesson, story):
    password = "correct horse battery staple"
    first = lesson.hash_password(password, n=N)
    second = lesson.hash_password(password, n=N)
    story.step(f"hash_password({password!r}, n={N}) twice")
    n, r, p, salt, key = parts(story, first)
    story.check((n, r, p) == (N, 8, 1), f"the parameters n={N},r=8,p=1 in the string",
                short(first, 120))
    story.check(first != second, "two different strings (a fresh random salt each time: equal "
                "passwords must not give equal hashes)", f"the same string twice: {short(first)}")
    story.check(len(salt) >= 16, "a salt of at least 16 bytes", f"{len(salt)} bytes")
    expected = hashlib.scrypt(password.encode(), salt=salt, n=N, r=8, p=1, dklen=len(key))
    story.check(key == expected and len(key) >= 32, "the key to be hashlib.scrypt(password, "
                "salt, n, r, p) of at least 32 bytes", f"{len(key)} bytes {short(key)}")
    for form in (password, password.encode().hex(), base64.b64encode(password.encode()).decode()):
        story.check(form not in first, "no trace of the password in the stored string",
                    short(first, 120))
    fixed = lesson.hash_password(password, salt=b"s" * 16, n=N)
    story.check(fixed == lesson.hash_password(password, salt=b"s" * 16, n=N)
                and parts(story, fixed)[3] == b"s" * 16,
                "the given salt used (the same salt twice: the same string)", short(fixed, 120))


@pytest.mark.task("11.hashing")
def test_verify_accepts_the_password_and_nothing_else(lesson, story):
    stored = lesson.hash_password("s3cret", n=N)
    story.step(f"stored = hash_password('s3cret', n={N})")
    for guess, expected in [("s3cret", True), ("s3cre", False), ("s3cret ", False),
                            ("S3cret", False), ("", False)]:
        got = lesson.verify_password(guess, stored)
        story.check(got is expected, f"verify_password({guess!r}, stored) is {expected}", repr(got))
    n, r, p, salt, key = parts(story, stored)
    other = f"scrypt$n={N * 2},r={r},p={p}${base64.b64encode(salt).decode()}$" \
            f"{base64.b64encode(key).decode()}"
    story.check(lesson.verify_password("s3cret", other) is False, "False when the stored n is "
                "changed (the check recomputes with the stored parameters)", "True")
    for broken in ["s3cret", "md5$abc", stored + "$extra", ""]:
        try:
            lesson.verify_password("s3cret", broken)
        except ValueError:
            continue
        story.fail(f"ValueError for a malformed stored hash {broken!r}", "no exception")


@pytest.mark.task("11.hashing")
def test_scrypt_is_called_with_the_stored_parameters(lesson, story, monkeypatch):
    scrypt = record(monkeypatch, lesson, hashlib, "scrypt")
    stored = lesson.hash_password("pw")
    story.step("hash_password('pw') with the default parameters")
    story.check(len(scrypt.calls) == 1, "one hashlib.scrypt call", f"{len(scrypt.calls)} calls")
    kwargs = scrypt.calls[0][1]
    story.check((kwargs.get("n"), kwargs.get("r"), kwargs.get("p")) == (2**14, 8, 1),
                "the lesson's defaults n=2**14, r=8, p=1 passed by keyword", repr(kwargs))
    story.check(parts(story, stored)[:3] == (2**14, 8, 1), "n=16384,r=8,p=1 in the string",
                short(stored, 120))
    scrypt.calls.clear()
    weak = lesson.hash_password("pw", n=2**11, r=4, p=2)
    lesson.verify_password("pw", weak)
    story.step("hash_password('pw', n=2**11, r=4, p=2), then verify_password on it")
    used = [(c[1].get("n"), c[1].get("r"), c[1].get("p")) for c in scrypt.calls]
    story.check(used == [(2**11, 4, 2)] * 2, "both scrypt calls with n=2048, r=4, p=2",
                repr(used))
    try:
        big = lesson.hash_password("pw", n=2**15)
    except ValueError as exc:
        story.fail("hash_password('pw', n=2**15) to work (32 MiB: above hashlib's default "
                   "maxmem, so pass maxmem=MAX_MEMORY)", describe(exc))
    story.check(parts(story, big)[0] == 2**15 and lesson.verify_password("pw", big),
                "n=32768 in the string, and verify_password accepting it (maxmem there too)",
                short(big, 120))


@pytest.mark.task("11.hashing")
def test_verify_compares_with_compare_digest(lesson, story, monkeypatch):
    stored = lesson.hash_password("pw", n=N)
    key = parts(story, stored)[4]
    compare = record(monkeypatch, lesson, hmac, "compare_digest")
    right, wrong = lesson.verify_password("pw", stored), lesson.verify_password("nope", stored)
    story.step("verify_password('pw', stored) and verify_password('nope', stored), with "
               "hmac.compare_digest watched")
    story.check(right is True and wrong is False, "True, then False", f"{right!r}, {wrong!r}")
    story.check(len(compare.calls) == 2, "one hmac.compare_digest call per check (== stops at "
                "the first differing byte: its time tells how much matched)",
                f"{len(compare.calls)} calls")
    story.check(all(key in c[0] for c in compare.calls), "the stored key as one of its "
                "arguments", short(compare.calls))


# --------------------------------------------------------------------------- 11.users


@pytest.mark.task("11.users")
def test_an_unknown_user_costs_the_same_hash(lesson, story, monkeypatch):
    users = lesson.UserStore(n=N)
    users.add("alice", "wonderland")
    scrypt = record(monkeypatch, lesson, hashlib, "scrypt")
    story.step(f"UserStore(n={N}) with alice; hashlib.scrypt watched")
    for name, password, expected in [("alice", "wonderland", True), ("alice", "wrong", False),
                                     ("mallory", "wrong", False), ("", "x", False)]:
        scrypt.calls.clear()
        got = users.authenticate(name, password)
        story.step(f"authenticate({name!r}, {password!r}) -> {got!r}")
        story.check(got is expected, f"{expected}", repr(got))
        used = [c[1].get("n") for c in scrypt.calls]
        story.check(used == [N], f"exactly one scrypt call with n={N}, user or no user (a "
                    "missing user that costs nothing is told apart by a stopwatch)", repr(used))


@pytest.mark.task("11.users")
def test_the_users_file_holds_hashes_only(lesson, story, tmp_path):
    users = lesson.UserStore(n=N)
    users.add("alice", "wonderland-1")
    users.add("bob", "builder-2")
    users.add("alice", "wonderland-3")
    path = tmp_path / "users.txt"
    users.save(path)
    text = path.read_text()
    story.step(f"added alice, bob, alice again (new password); saved: {short(text, 200)}")
    story.check("wonderland" not in text and "builder" not in text, "no password in the file",
                short(text, 200))
    if os.name == "posix":
        story.check(path.stat().st_mode & 0o077 == 0, "a file only its owner can read (0600)",
                    oct(path.stat().st_mode & 0o777))
    story.check("alice" in users and "carol" not in users, "'alice' in store, 'carol' not",
                "not so")
    for name, password in [("no:colons", "x"), ("with space", "x"), ("", "x"), ("a" * 65, "x"),
                           ("carol", "")]:
        try:
            users.add(name, password)
        except ValueError:
            continue
        story.fail(f"ValueError for add({name!r}, {password!r}) (names: 1-64 of A-Z a-z 0-9 "
                   "_ . @ -; passwords: not empty)", "no exception")
    loaded = lesson.UserStore.load(path, n=N)
    story.check(len(loaded) == 2 and loaded.authenticate("alice", "wonderland-3")
                and not loaded.authenticate("alice", "wonderland-1")
                and loaded.authenticate("bob", "builder-2"), "the loaded store: 2 users, "
                "alice's new password, bob's", f"{len(loaded)} users")
    for bad in ["alice:not-a-hash\n", "no colon here\n", f"bad name:{users._hashes['bob']}\n"]:
        broken = tmp_path / "broken.txt"
        broken.write_text(text + bad)
        try:
            lesson.UserStore.load(broken, n=N)
        except ValueError:
            continue
        story.fail(f"ValueError for a users file with the line {bad!r}", "no exception")


# --------------------------------------------------------------------------- 11.sessions


@pytest.mark.task("11.sessions")
def test_session_ids_are_long_random_and_new(lesson, story, monkeypatch):
    clock = Clock()
    store = lesson.SessionStore(60, 600, clock)
    drawn = record(monkeypatch, lesson, secrets, "token_urlsafe")
    ids = [store.create("alice") for _ in range(50)]
    story.step("created 50 sessions for alice")
    story.check(len(set(ids)) == 50, "50 different ids", f"{len(set(ids))} different")
    bad = [i for i in ids if not (isinstance(i, str) and URLSAFE.fullmatch(i) and len(i) >= 22)]
    story.check(not bad, "URL-safe ids of at least 22 characters (128 bits)", short(bad))
    sizes = [c[0][0] if c[0] else c[1].get("nbytes") for c in drawn.calls]
    story.check(len(sizes) == 50 and all(s is not None and s >= 16 for s in sizes),
                "each id from secrets.token_urlsafe(n) with n >= 16 bytes", repr(sizes[:5]))
    story.check(all(store.user(i) == "alice" for i in ids), "each id to name alice", "not so")


@pytest.mark.task("11.sessions")
def test_idle_expiry_exactly(lesson, story):
    clock = Clock()
    store = lesson.SessionStore(10.0, 1000.0, clock)
    sid = store.create("alice")
    story.step("SessionStore(idle_ttl=10, absolute_ttl=1000, fake clock); created a session")
    for step, expected in [(9.0, "alice"), (9.0, "alice"), (9.0, "alice"), (11.0, None)]:
        clock.now += step
        got = store.user(sid)
        story.step(f"{step} s later: user(sid) -> {got!r}")
        story.check(got == expected, f"{expected!r} (idle 10 s: 9 s is alive and a use "
                    "restarts the idle clock, 11 s is gone)", repr(got))
    clock.now -= 11.0
    story.check(store.user(sid) is None and len(store) == 0, "the expired session deleted "
                "(even with the clock moved back, it stays gone)", f"{len(store)} sessions")
    sid = store.create("bob")
    clock.now += 10.0
    story.check(store.user(sid) is None, "gone after exactly idle_ttl (10 s) unused", "alive")
    old = store.create("carol")
    clock.now += 10.5
    store.create("dave")
    story.check(len(store) == 1, "carol's expired session purged when dave logs in (sessions "
                "nobody comes back for must not pile up)", f"{len(store)} sessions")
    story.check(store.user(old) is None, "carol's gone", "alive")


@pytest.mark.task("11.sessions")
def test_absolute_expiry_even_when_busy(lesson, story):
    clock = Clock()
    store = lesson.SessionStore(10.0, 30.0, clock)
    sid = store.create("alice")
    story.step("SessionStore(idle_ttl=10, absolute_ttl=30); the session used every 3 s")
    while clock.now + 3 < 1000 + 27.5:
        clock.now += 3
        story.check(store.user(sid) == "alice", f"alive at {clock.now - 1000:.0f} s", "gone")
    clock.now = 1000 + 27.0
    story.check(store.user(sid) == "alice", "alive at 27 s (0.9 x absolute_ttl)", "gone")
    clock.now = 1000 + 30.0
    got = store.user(sid)
    story.check(got is None, "gone at exactly 30 s (absolute_ttl)", repr(got))
    clock.now = 1000 + 33.0
    got = store.user(sid)
    story.check(got is None, "gone at 33 s (1.1 x absolute_ttl), however busy", repr(got))
    other = lesson.SessionStore(10.0, 30.0, clock)
    sid = other.create("bob")
    clock.now += 3
    other.create("carol")
    clock.now += 8
    story.check(len(other) == 2 and other.user(sid) is None and len(other) == 1,
                "bob's session, idle 11 s, gone (and deleted) while carol's lives", "not so")


@pytest.mark.task("11.sessions")
def test_login_always_makes_a_new_id(lesson, story):
    clock = Clock()
    store = lesson.SessionStore(60, 600, clock)
    planted = "attacker-chosen-id-AAAAAAAAAAAAAAAAAAAAAA"
    sid = store.create("alice", replacing=planted)
    story.step(f"create('alice', replacing={planted!r}) (an id the client brought)")
    story.check(sid != planted and store.user(planted) is None, "a new id; the brought one "
                "names nobody (session fixation: the attacker would share alice's login)",
                f"got {short(sid)}")
    again = store.create("alice", replacing=sid)
    story.step("logged in again, replacing the first session")
    story.check(again != sid and store.user(sid) is None and store.user(again) == "alice"
                and len(store) == 1, "a new id, the old one gone, one session in all",
                f"{len(store)} sessions")


@pytest.mark.task("11.sessions")
def test_logout_deletes(lesson, story):
    store = lesson.SessionStore(60, 600, Clock())
    sid, other = store.create("alice"), store.create("bob")
    first, second = store.delete(sid), store.delete(sid)
    story.step("created two sessions, deleted alice's twice")
    story.check(first is True and second is False, "True, then False", f"{first!r}, {second!r}")
    story.check(store.user(sid) is None and store.user(other) == "bob", "alice's gone, bob's "
                "alive", "not so")
    story.check(store.delete(None) is False and store.user(None) is None, "None names no "
                "session (no Cookie header)", "not so")


class Guarded(dict):
    """The store's table, checking at every access that the store's lock is held."""

    def __init__(self, lock, story):
        super().__init__()
        self.lock, self.story, self.unlocked = lock, story, []

    def _held(self) -> bool:
        if hasattr(self.lock, "locked"):
            return self.lock.locked()
        if not hasattr(self.lock, "acquire"):
            return False  # not a lock at all
        box = []  # an RLock: another thread cannot take it while it is held
        worker = threading.Thread(target=lambda: box.append(self.lock.acquire(blocking=False)))
        worker.start()
        worker.join()
        if box[0]:
            self.lock.release()
        return not box[0]


def _guard(name):
    method = getattr(dict, name)

    def checked(self, *args, **kwargs):
        if not self._held():
            self.unlocked.append(name)
        return method(self, *args, **kwargs)
    return checked


for _name in ("__getitem__", "__setitem__", "__delitem__", "__contains__", "__iter__",
              "__len__", "get", "pop", "items", "keys", "values", "setdefault", "clear"):
    setattr(Guarded, _name, _guard(_name))


@pytest.mark.task("11.sessions")
def test_the_store_touches_its_table_only_under_its_lock(lesson, story):
    clock = Clock()
    store = lesson.SessionStore(10.0, 100.0, clock)
    story.check(hasattr(store, "_lock") and hasattr(store, "_sessions"), "the given "
                "self._lock and self._sessions (keep them)", "missing")
    table = Guarded(store._lock, story)
    store._sessions = table
    story.step("replaced the store's table by one that checks store._lock at every access")
    sid = store.create("alice")
    store.user(sid)
    store.create("bob")
    clock.now += 20
    store.user(sid)
    store.create("carol", replacing="nobody")
    store.delete(sid)
    len(store)
    story.step("create, user, create, 20 s later user (expired), create, delete, len")
    story.check(not table.unlocked, "every access with the lock held (a check-then-act without "
                "it lets two threads expire or replace one session at once)",
                f"unlocked: {', '.join(sorted(set(table.unlocked)))}")


@pytest.mark.task("11.sessions")
def test_the_store_from_many_threads(lesson, story):
    clock = Clock()

    def slow_clock():
        time.sleep(0)  # hand the GIL over: a race window at every reading of the clock
        return clock.now

    store = lesson.SessionStore(5.0, 50.0, slow_clock)
    store.delete(store.create("first"))  # a stub fails here, at once
    errors, kept = [], []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    story.step("8 threads x 100 rounds of create / user / delete (switch interval 1 us), "
               "while the clock moves so sessions expire underneath them")

    def worker(number):
        try:
            for i in range(100):
                sid = store.create(f"u{number}")
                if store.user(sid) not in (f"u{number}", None):  # None: expired meanwhile
                    errors.append(f"thread {number}: its new session named someone else")
                if i % 3:
                    store.delete(sid)
                else:
                    kept.append(sid)
                    store.user(kept[i % len(kept)])
                if number == 0 and i % 10 == 0:
                    clock.now += 1.0
        except Exception as exc:  # reported below
            errors.append(f"thread {number}: {describe(exc)}")

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        sys.setswitchinterval(old)
    story.check(not errors, "no errors", "; ".join(errors[:3]))
    clock.now += 100
    alive = [sid for sid in kept if store.user(sid) is not None]
    story.check(not alive and len(store) == 0, "every session gone after 100 s", f"{len(store)}")


# --------------------------------------------------------------------------- 11.throttle


@pytest.mark.task("11.throttle")
def test_five_failures_lock_that_user_for_the_window(lesson, story):
    clock = Clock()
    throttle = lesson.LoginThrottle(5, 60.0, clock=clock)
    story.step("LoginThrottle(max_failures=5, window=60, fake clock)")
    story.check(throttle.retry_after("alice") == 0, "alice free at first", "refused")
    for i in range(1, 6):
        throttle.failed("alice")
        clock.now += 1
        wait = throttle.retry_after("alice")
        if i < 5:
            story.check(wait == 0, f"alice still free after {i} failure(s)", f"wait {wait}")
    story.step("5 failures for alice, one a second")
    story.check(wait == 55, "alice refused for 55 s more (the FIRST failure's 60 s window: "
                "it was 5 s ago)", f"{wait!r}")
    story.check(throttle.retry_after("bob") == 0, "bob unaffected (keyed on the user)",
                "bob refused")
    clock.now += 56 * 0.9
    story.check(throttle.retry_after("alice") > 0, "alice still refused at 0.9 x the wait",
                "free")
    clock.now += 56 * 0.2
    story.check(throttle.retry_after("alice") == 0, "alice free once the window has passed",
                f"wait {throttle.retry_after('alice')}")
    throttle.failed("alice")
    story.check(throttle.retry_after("alice") == 0, "one new failure after the window does "
                "not lock again (old failures expired)", "refused")
    exact = lesson.LoginThrottle(2, 60.0, clock=clock)
    start = clock.now
    exact.failed("carol")
    clock.now = start + 60.0
    exact.failed("carol")
    story.check(exact.retry_after("carol") == 0, "a failure exactly one window old no longer "
                "counts (2 failures 60 s apart, max 2 per 60 s: free)", "refused")


@pytest.mark.task("11.throttle")
def test_a_success_forgets_and_the_table_is_bounded(lesson, story):
    clock = Clock()
    throttle = lesson.LoginThrottle(3, 60.0, max_tracked=50, clock=clock)
    for _ in range(2):
        throttle.failed("alice")
    throttle.succeeded("alice")
    throttle.failed("alice")
    throttle.failed("alice")
    story.step("LoginThrottle(3, 60): 2 failures, a success, 2 failures")
    story.check(throttle.retry_after("alice") == 0, "alice free (the success reset her count)",
                "refused")
    throttle.failed("alice")
    story.check(throttle.retry_after("alice") > 0, "alice refused after the 3rd failure since",
                "free")
    for i in range(500):
        throttle.failed(f"name{i}")
    story.step("then one failure each for 500 different names (max_tracked=50)")
    story.check(len(throttle) == 50, "50 names tracked (the bound, no fewer)", f"{len(throttle)}")
    story.check(throttle.retry_after("alice") == 0, "alice (the oldest) evicted by the flood",
                "still refused")
    for i in range(450, 500):
        throttle.failed(f"name{i}")
        throttle.failed(f"name{i}")
    story.check(throttle.retry_after("name499") > 0, "name499 (3 failures, the newest) "
                "refused", "free")
    throttle.retry_after("just-asking")
    story.check(len(throttle) == 50 and throttle.retry_after("name0") == 0,
                "asking about a name does not track it", f"{len(throttle)}")


# --------------------------------------------------------------------------- 11.server


class Probe:
    """GET /me without a cookie, as a parsed request (for the check without sockets)."""
    method, target, version, headers = "GET", "/me", "HTTP/1.1", [("host", "grader.test")]

    def get(self, name, default=None):
        return dict(self.headers).get(name.lower(), default)

    def get_all(self, name):
        return [v for k, v in self.headers if k == name.lower()]

    keep_alive = True


def make_session_server(lesson, story, clock=None, *args, **kwargs):
    """Your SessionServer with alice (password 'wonderland'), hashes at n=2**10; its
    check_before_body and route are tried once without sockets, so a stub fails at once."""
    users = lesson.UserStore(n=N)
    users.add("alice", "wonderland")
    users.add("bob", "builder")

    class Graded(lesson.SessionServer):
        poll_interval = 0.05
        not_implemented = None

        def process(self, conn, addr):
            try:
                super().process(conn, addr)
            except NotImplementedError as exc:
                self.not_implemented = exc

    server = Graded(*args, users=users, clock=clock or Clock(), **kwargs)
    probe = Probe()
    server.check_before_body(probe, "127.0.0.1:1")  # a stub raises NotImplementedError here
    try:
        server.route(probe, b"")
    except lesson.HttpError:
        pass  # the 401 of a request without a session
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    story.step(f"created SessionServer(users=<alice, bob>, clock=<fake>{', ' if args else ''}"
               f"{args})")
    return server


def login_request(user, password, cookie=None, raw=None):
    body = raw if raw is not None else json.dumps({"user": user, "password": password}).encode()
    headers = [("Content-Type", "application/json")]
    if cookie:
        headers.append(("Cookie", cookie))
    return request("POST", "/login", headers, body)


def call_http(address, story, data, what):
    with socket.create_connection(address, WAIT) as sock:
        sock.sendall(data)
        story.step(f"sent {short(data, 110)}")
        return expect_response(Reader(sock), story, what)


def session_of(story, reply):
    cookie = reply.header("set-cookie") or ""
    match = re.match(r"session=([^;]*)", cookie)
    story.check(match is not None, "Set-Cookie: session=<id>; ...", repr(cookie))
    return match[1], [a.strip() for a in cookie.split(";")[1:]]


def without_date(raw_head: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", raw_head)


@pytest.mark.task("11.server")
def test_session_cookie_flags(lesson, story):
    plain = lesson.session_cookie("abc", 3600, secure=False)
    tls = lesson.session_cookie("abc", 3600, secure=True)
    story.step(f"session_cookie('abc', 3600, secure=False) -> {plain!r}")
    attributes = [a.strip() for a in plain.split(";")]
    lowered = [a.lower() for a in attributes]
    story.check(attributes[0] == "session=abc", "session=abc first", plain)
    for flag, why in [("httponly", "page scripts cannot read it"),
                      ("path=/", "one cookie for the whole site"),
                      ("max-age=3600", "the browser forgets it too")]:
        story.check(flag in lowered, f"{flag} ({why})", plain)
    story.check("samesite=strict" in lowered or "samesite=lax" in lowered,
                "SameSite=Strict or Lax (not sent on other sites' requests: CSRF)", plain)
    story.check("secure" not in lowered, "no Secure over plain HTTP (the browser would drop "
                "the cookie)", plain)
    story.check("secure" in [a.lower() for a in tls.split("; ")], "Secure with secure=True",
                tls)
    cleared = lesson.session_cookie("", 0, secure=False)
    story.check(cleared.startswith("session=;") and "max-age=0" in cleared.lower(),
                "session=; ... Max-Age=0 to clear it", cleared)


@pytest.mark.task("11.server")
def test_cookie_value_finds_the_session(lesson, story):
    lesson.session_cookie("x", 1, secure=False)  # a stub fails here, at once
    for header, expected in [("session=abc", "abc"), ("a=1; session=abc; b=2", "abc"),
                             ("sessionx=1;session=abc", "abc"), ("session", None),
                             ("xsession=abc", None), ("", None), (None, None),
                             ("session=a=b", "a=b")]:
        got = lesson.cookie_value(header)
        story.check(got == expected, f"cookie_value({header!r}) == {expected!r}", repr(got))


@pytest.mark.task("11.server")
def test_login_me_logout(lesson, story):
    server = make_session_server(lesson, story)
    with serving(server, story) as address:
        reply = call_http(address, story, request("GET", "/me"), "a 401 for GET /me")
        check_status(story, reply, 401, "no session yet")
        story.check(bool(reply.header("www-authenticate")), "a WWW-Authenticate challenge on "
                    "the 401", short(reply.raw_head, 300))
        reply = call_http(address, story, request("POST", "/login?next=/a?b", [
            ("Content-Type", "application/json")], b'{"user": "alice", "password": "wonderland"}'),
            "a 200")
        check_status(story, reply, 200, "the right password (POST /login?next=/a?b)")
        story.check(reply.json() == {"user": "alice"}, '{"user": "alice"}', short(reply.body))
        sid, attributes = session_of(story, reply)
        lowered = [a.lower() for a in attributes]
        story.check("httponly" in lowered and "path=/" in lowered and "secure" not in lowered
                    and any(a.startswith("samesite=") for a in lowered)
                    and any(re.fullmatch(r"max-age=[1-9][0-9]*", a) for a in lowered),
                    "HttpOnly, SameSite, Path=/, a Max-Age, no Secure (tls is False)",
                    repr(attributes))
        story.check(reply.header("cache-control") == "no-store", "Cache-Control: no-store",
                    short(reply.raw_head, 300))
        story.check("max-age=28800" in lowered, "Max-Age = the absolute lifetime (8 h by "
                    "default): the server enforces idle expiry itself, and a browser that "
                    "dropped the cookie after the idle time would log out a busy user",
                    repr(attributes))
        me = call_http(address, story, request("GET", "/me", [("Cookie", f"session={sid}")]),
                       "200 for /me")
        check_status(story, me, 200, "a valid session cookie")
        story.check(me.json() == {"user": "alice"}, '{"user": "alice"}', short(me.body))
        me = call_http(address, story, request("GET", "/me", [
            ("Cookie", f"theme=dark; session={sid}; lang=en")]), "200 for /me")
        check_status(story, me, 200, "the session among other cookies")
        me = call_http(address, story, request("GET", "/me?next=/a?b", [
            ("Cookie", f"session={sid}")]), "200 for /me?next=/a?b")
        check_status(story, me, 200, "a query string after /me")
        story.check(me.header("content-type") == "application/json"
                    and me.header("cache-control") == "no-store", "Content-Type: "
                    "application/json and Cache-Control: no-store", short(me.raw_head, 300))
        with socket.create_connection(address, WAIT) as sock:
            sock.sendall(request("HEAD", "/me", [("Cookie", f"session={sid}")]))
            story.step("sent HEAD /me with the cookie")
            reader = Reader(sock)
            head = expect_response(reader, story, "a 200 head", head_only=True)
            check_status(story, head, 200, "HEAD /me")
            sock.settimeout(0.3)
            try:
                extra = bytes(reader.buffer) + sock.recv(100)
            except TimeoutError:
                extra = bytes(reader.buffer)
            story.check(extra == b"" and head.header("content-length") == str(len(me.body)),
                        "no body after the head, Content-Length as for GET",
                        short(extra) + " " + short(head.raw_head, 200))
        out = call_http(address, story, request("POST", "/logout", [
            ("Cookie", f"session={sid}")], length=True), "200 for /logout")
        check_status(story, out, 200, "logout")
        story.check(out.json() == {"logged_out": True}, '{"logged_out": true}', short(out.body))
        cleared, attributes = session_of(story, out)
        story.check(cleared == "" and "max-age=0" in [a.lower() for a in attributes],
                    "the cookie cleared (session=; Max-Age=0)", out.header("set-cookie"))
        me = call_http(address, story, request("GET", "/me", [("Cookie", f"session={sid}")]),
                       "401 for /me")
        check_status(story, me, 401, "the session was deleted at logout")


@pytest.mark.task("11.server")
def test_wrong_user_and_wrong_password_look_the_same(lesson, story):
    server = make_session_server(lesson, story)
    with serving(server, story) as address:
        wrong_password = call_http(address, story, login_request("alice", "nope"), "a 401")
        no_user = call_http(address, story, login_request("mallory", "nope"), "a 401")
    check_status(story, wrong_password, 401, "alice, wrong password")
    check_status(story, no_user, 401, "no such user")
    story.check(without_date(wrong_password.raw_head) == without_date(no_user.raw_head)
                and wrong_password.body == no_user.body, "the same bytes for both (Date "
                "aside): nothing tells 'no such user' from 'wrong password'",
                f"{short(wrong_password.raw_head, 300)}\nvs {short(no_user.raw_head, 300)}")
    story.check(wrong_password.header("set-cookie") is None, "no cookie for a failed login",
                short(wrong_password.raw_head, 300))
    story.check(bool(wrong_password.header("www-authenticate")), "a WWW-Authenticate "
                "challenge on the login's 401 too", short(wrong_password.raw_head, 300))
    nobody = lesson.SessionServer()
    story.step("created SessionServer() without users")
    try:
        nobody.route(Probe(), b"")
    except lesson.HttpError as exc:
        story.check(exc.status == 401, "401 for /me", f"{exc.status}")
    story.check(len(nobody.users) == 0 and not nobody.users.authenticate("alice", "x"),
                "an empty UserStore: nobody can log in", repr(nobody.users))


@pytest.mark.task("11.server")
def test_login_replaces_a_brought_session_id(lesson, story):
    server = make_session_server(lesson, story)
    with serving(server, story) as address:
        planted = "fixed-by-the-attacker-AAAAAAAAAAAAAAAAAAAAA"
        reply = call_http(address, story, login_request("alice", "wonderland",
                                                        f"session={planted}"), "a 200")
        check_status(story, reply, 200)
        first, _ = session_of(story, reply)
        story.check(first != planted, "a new id, not the one the client brought (fixation)",
                    first)
        me = call_http(address, story, request("GET", "/me", [("Cookie", f"session={planted}")]),
                       "401 for the brought id")
        check_status(story, me, 401, "the attacker's id names nobody")
        reply = call_http(address, story, login_request("bob", "builder", f"session={first}"),
                          "a 200")
        second, _ = session_of(story, reply)
        me = call_http(address, story, request("GET", "/me", [("Cookie", f"session={first}")]),
                       "401 for the replaced id")
        story.check(second != first and me.status == 401, "a new id at the second login, the "
                    "first one gone", f"{me.status}")


@pytest.mark.task("11.server")
def test_five_failures_then_429_for_that_user_only(lesson, story):
    clock = Clock()
    server = make_session_server(lesson, story, clock, failure_window=60.0)
    with serving(server, story) as address:
        for i in range(5):
            reply = call_http(address, story, login_request("alice", f"guess{i}"), "a 401")
            check_status(story, reply, 401, f"wrong password {i + 1} of 5")
        clock.now += 0.5
        story.step("the fake clock moved 0.5 s")
        reply = call_http(address, story, login_request("alice", "wonderland"), "a 429")
        check_status(story, reply, 429, "5 failures: alice refused, even the right password")
        retry = reply.header("retry-after") or ""
        story.check(retry == "60", "Retry-After: 60 (59.5 s left, rounded up to whole seconds)",
                    repr(retry))
        clock.now += 59.0
        story.step("the fake clock moved 59 s more (0.5 s left)")
        reply = call_http(address, story, login_request("alice", "wonderland"), "a 429")
        check_status(story, reply, 429, "still inside the window")
        story.check(reply.header("retry-after") == "1", "Retry-After: 1",
                    repr(reply.header("retry-after")))
        for i in range(4):
            call_http(address, story, login_request("bob", f"guess{i}"), "a 401")
        check_status(story, call_http(address, story, login_request("bob", "builder"), "a 200"),
                     200, "bob's 4 failures, then his password")
        for i in range(4):
            call_http(address, story, login_request("bob", f"again{i}"), "a 401")
        reply = call_http(address, story, login_request("bob", "builder"), "a 200")
        check_status(story, reply, 200, "bob is not alice, and his success reset his count")
        clock.now += 1.5
        story.step("the fake clock moved past the window (failure_window=60)")
        reply = call_http(address, story, login_request("alice", "wonderland"), "a 200")
        check_status(story, reply, 200, "the window has passed")


@pytest.mark.task("11.server")
def test_sessions_expire_on_the_servers_clock(lesson, story):
    clock = Clock()
    server = make_session_server(lesson, story, clock, session_ttl=100.0,
                                 session_lifetime=1000.0)
    with serving(server, story) as address:
        sid, _ = session_of(story, call_http(address, story, login_request("alice", "wonderland"),
                                             "a 200"))
        for step, status in [(90, 200), (90, 200), (110, 401)]:
            clock.now += step
            me = call_http(address, story, request("GET", "/me", [("Cookie", f"session={sid}")]),
                           "a response")
            check_status(story, me, status, f"{step} s idle, session_ttl=100")


@pytest.mark.task("11.server")
def test_methods_types_and_the_rest_of_the_server(lesson, story):
    server = make_session_server(lesson, story)
    with serving(server, story) as address:
        for data, status, why in [
                (request("GET", "/login"), 405, "login is POST only"),
                (request("GET", "/logout"), 405, "logout is POST only"),
                (request("POST", "/login", [("Content-Type", "text/plain")], b"user=alice"), 415,
                 "a login body must be JSON"),
                (login_request(None, None, raw=b'{"user": "alice"}'), 400, "no password"),
                (login_request(None, None, raw=b'["alice", "wonderland"]'), 400, "not an object"),
                (login_request(None, None, raw=b'{"user": 1, "password": "x"}'), 400,
                 "a user that is not a string"),
                (request("POST", "/other", [("Content-Type", "application/json")], b"{}"), 405,
                 "lesson 09's rule for other paths kept"),
                (request("POST", "/echo", [("Content-Type", "application/json")], b"[1]"), 200,
                 "lesson 09's /echo kept"),
                (request("GET", "/healthz"), 200, "lesson 09's /healthz kept")]:
            reply = call_http(address, story, data, f"a {status}")
            check_status(story, reply, status, why)
        reply = call_http(address, story, request("GET", "/login"), "a 405")
        story.check(reply.header("allow") == "POST", "Allow: POST", short(reply.raw_head))


@pytest.mark.task("11.server")
def test_logins_still_count_against_the_rate_limit(lesson, story):
    server = make_session_server(lesson, story, rate=4, rate_window=60.0)
    with serving(server, story) as address:
        for i in range(3):  # the 4th request of this address was the grader's probe
            reply = call_http(address, story, login_request("alice", "wonderland"), "a 200")
            check_status(story, reply, 200, f"login {i + 1}: within rate=4 per 60 s")
        reply = call_http(address, story, login_request("bob", "builder"), "a 429")
        check_status(story, reply, 429, "lesson 10's limit per address applies to POST /login "
                     "too (check_before_body calls super() first)")


@pytest.mark.task("11.server")
def test_a_tls_server_sends_a_secure_cookie(lesson, story):
    server = make_session_server(lesson, story)
    server.tls = True  # what lesson 12's TLS server says; this grader still speaks plain HTTP
    story.step("set server.tls = True")
    with serving(server, story) as address:
        reply = call_http(address, story, login_request("alice", "wonderland"), "a 200")
        sid, attributes = session_of(story, reply)
        story.check("secure" in [a.lower() for a in attributes], "Secure on the cookie",
                    repr(attributes))
        out = call_http(address, story, request("POST", "/logout", [
            ("Cookie", f"session={sid}")], length=True), "200 for /logout")
    _, attributes = session_of(story, out)
    story.check("secure" in [a.lower() for a in attributes], "Secure on the cookie that clears "
                "it too", repr(attributes))


@pytest.mark.task("11.server")
def test_the_defaults_and_the_lessons_before(lesson, story, tmp_path):
    (tmp_path / "hello.txt").write_bytes(b"static\n")
    server = make_session_server(lesson, story)
    throttle = lesson.LoginThrottle()
    story.step("SessionServer(users=...) and LoginThrottle() with their defaults")
    story.check((server.sessions.idle_ttl, server.sessions.absolute_ttl) == (1800.0, 28800.0)
                and (server.throttle.max_failures, server.throttle.window) == (5, 300.0)
                and (throttle.max_failures, throttle.window, throttle.max_tracked)
                == (5, 300.0, 10_000), "the given defaults (30 min idle, 8 h, 5 failures per "
                "5 min, 10000 names)", "changed")
    story.check(server.tls is False, "tls False (lesson 12 sets it)", repr(server.tls))
    server = make_session_server(lesson, story, None, tmp_path, "127.0.0.1", 0)
    story.step("(with lesson 09's positional arguments: a folder, '127.0.0.1', 0)")
    with serving(server, story) as address:
        reply = call_http(address, story, request("GET", "/hello.txt"), "a 200")
    story.check(reply.status == 200 and reply.body == b"static\n", "the folder's file",
                str(reply))


# --------------------------------------------------------------------------- 11.program


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.task("11.program")
def test_read_password_from_a_pipe_or_a_terminal(users_program, story, monkeypatch):
    got = users_program.read_password(io.StringIO("pa ss\r\nsecond line\n"))
    story.step("read_password(<a pipe holding 'pa ss\\r\\nsecond line\\n'>)")
    story.check(got == "pa ss", "'pa ss' (one line, without its line ending, spaces kept)",
                repr(got))
    for text in ["", "\n"]:
        try:
            users_program.read_password(io.StringIO(text))
        except ValueError:
            continue
        story.fail(f"ValueError for an empty password ({text!r})", "no exception")
    answers = iter(["typed", "typed"])
    monkeypatch.setattr(users_program.getpass, "getpass", lambda prompt="": next(answers))
    got = users_program.read_password(Terminal("not this\n"))
    story.check(got == "typed", "at a terminal: getpass's answer (no echo)", repr(got))
    answers = iter(["typed", "other"])
    try:
        users_program.read_password(Terminal())
    except ValueError:
        pass
    else:
        story.fail("ValueError when the two typed passwords differ", "no exception")


@pytest.mark.task("11.program")
def test_add_writes_a_hash_and_never_takes_a_password_flag(users_program, lesson, story,
                                                           monkeypatch, tmp_path, capsys):
    path = tmp_path / "users.txt"
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw-of-alice\n"))
    status = users_program.main(["add", str(path), "alice", "--scrypt-n", str(N)])
    story.step("main(['add', FILE, 'alice', '--scrypt-n', '1024']) with 'pw-of-alice' on stdin")
    story.check(status == 0 and path.is_file(), "status 0 and the file written",
                f"{status!r}, exists: {path.is_file()}")
    text = path.read_text()
    story.check("pw-of-alice" not in text and text.startswith("alice:scrypt$n=1024,"),
                "alice:scrypt$n=1024,... and no password", short(text, 120))
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw-of-bob\n"))
    users_program.main(["add", str(path), "bob", "--scrypt-n", str(N)])
    users = lesson.UserStore.load(path, n=N)
    story.check(users.authenticate("alice", "pw-of-alice") and users.authenticate("bob",
                "pw-of-bob"), "both users in the file, each with their password", "not so")
    capsys.readouterr()
    for argv in (["--help"], ["add", "--help"]):
        try:
            users_program.main(argv)
        except SystemExit as exc:
            story.check(exc.code == 0, f"status 0 for {argv}", repr(exc.code))
    help_text = capsys.readouterr().out
    story.check("FILE" in help_text.upper() and "--password" not in help_text,
                "help for add FILE NAME, and no --password flag", short(help_text, 300))
    for argv, stdin in [(["add", str(path), "no:colons"], "x\n"),
                        (["add", str(path), "carol"], "\n"),
                        (["add", str(path), "carol", "--scrypt-n", "1000"], "x\n"),
                        (["add", str(tmp_path / "missing" / "u.txt"), "carol"], "x\n"),
                        (["remove", str(path), "alice"], "")]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            status = users_program.main(argv)
        except SystemExit as exc:
            status = exc.code
        story.check(status == 2, f"exit status 2 for {argv[1:] if argv[0] == 'add' else argv}",
                    repr(status))
    capsys.readouterr()


@pytest.mark.task("11.program")
def test_the_program_runs_with_the_password_on_stdin(users_program, story, tmp_path):
    users_program.read_password(io.StringIO("x\n"))  # a stub fails here, at once
    package = Path(users_program.__file__).parent
    path = tmp_path / "users.txt"
    command = [sys.executable, "-m", f"{package.name}.http_users", "add", str(path), "dora",
               "--scrypt-n", str(N)]
    story.step(f"ran python -m {package.name}.http_users add FILE dora --scrypt-n 1024, "
               "'explorer' on stdin")
    paths = [str(package.parent), str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run(command, input="explorer\n", capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=30)
    story.check(done.returncode == 0 and "dora" in done.stdout, "status 0 and a line naming "
                "dora", f"{done.returncode}: {short(done.stdout + done.stderr, 300)}")
    text = path.read_text()
    story.check("explorer" not in text and text.startswith("dora:scrypt$"), "dora's hash in "
                "the file, not her password", short(text, 120))
