"""Lesson 11 exercise: passwords, sessions and timing attacks.
Notebook: lessons/11_sessions.ipynb

A login has four jobs, each with a classic way to get it wrong:

    store passwords   as salted, deliberately slow hashes (scrypt), never the password itself
    check them        with hmac.compare_digest, and spend the same work on unknown users
    remember a login  with a random session id kept server-side, expired when idle and after
                      an absolute lifetime, replaced at every login, deleted at logout
    slow a guesser    5 failed logins for a user -> 429 for that user until the window passes

Grade yourself with:

    pytest exercises -k lesson11
    python -m exercises.http_users add users.txt alice   (once read_password() is done)

The building blocks are the REFERENCE ones, so this lesson does not depend on your earlier
work (swap in your own if you like): the sans-IO parser and response helpers (lesson 08)
and the server of the lessons before (lesson 09, with lesson 10's rate limit).
"""
from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
from pathlib import Path

from solutions.lesson08_validation import (  # or yours
    HttpError, check_json_type, parse_json, render_response)
from solutions.lesson10_rate_limits import RateLimitedServer  # or yours

# --------------------------------------------------------------------------- password hashes

# scrypt's cost: n (CPU and memory, a power of 2), r (block size), p (parallelism). Memory is
# 128 * n * r bytes: 16 MiB here, tens of milliseconds a hash. Raise n for production
# (OWASP suggests n=2**17); tests pass a smaller n to stay fast.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16  # 128 random bits: no two users (or two sites) share a salt
KEY_BYTES = 32
MAX_MEMORY = 1 << 30  # hashlib refuses scrypt above 32 MiB unless told: allow up to 1 GiB
PREFIX = "scrypt"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None, n: int = SCRYPT_N,
                  r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A self-describing hash: "scrypt$n=16384,r=8,p=1$<salt>$<key>" (base64). It carries its
    own parameters and salt, so verify_password needs nothing else and old hashes keep
    working after the defaults are raised. A fresh random salt unless one is given."""
    raise NotImplementedError("hash_password(): a fresh salt from secrets (SALT_BYTES), "
                              "hashlib.scrypt(..., n=n, r=r, p=p, maxmem=MAX_MEMORY, "
                              "dklen=KEY_BYTES), then the self-describing string")


STORED = re.compile(r"scrypt\$n=([0-9]+),r=([0-9]+),p=([0-9]+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")


def verify_password(password: str, stored: str) -> bool:
    """True when `password` hashes to `stored`. The two keys are compared with
    hmac.compare_digest, whose time does not depend on where they differ. A malformed
    `stored` raises ValueError: a broken users file should be loud, not a failed login."""
    raise NotImplementedError("verify_password(): STORED.fullmatch, scrypt again with the "
                              "stored n, r, p and salt, then hmac.compare_digest")


# --------------------------------------------------------------------------- users

NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # no ':' (the file's separator), no spaces


class UserStore:
    """User names and their password hashes; a file of `name:hash` lines.

    authenticate() costs one hash whether or not the user exists: for an unknown name it
    checks the password against a dummy hash made with the same parameters, so a stopwatch
    cannot tell "no such user" from "wrong password"."""

    def __init__(self, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P):
        self.params = {"n": n, "r": r, "p": p}
        self._hashes: dict[str, str] = {}
        self._dummy = hash_password(secrets.token_urlsafe(16), **self.params)

    def add(self, name: str, password: str) -> None:
        """Add `name`, or give it a new password."""
        if not NAME.fullmatch(name):
            raise ValueError(f"a user name is 1-64 of A-Z a-z 0-9 _ . @ -, not {name!r}")
        if not password:
            raise ValueError("an empty password")
        self._hashes[name] = hash_password(password, **self.params)

    def __contains__(self, name) -> bool:
        return name in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def authenticate(self, name: str, password: str) -> bool:
        """True if `name` exists and `password` is its password. An unknown name costs the
        same hash as a wrong password: verify against self._dummy and answer False."""
        raise NotImplementedError("authenticate(): verify_password against the user's hash, "
                                  "or against self._dummy for an unknown name")

    @classmethod
    def load(cls, path, **params) -> "UserStore":
        store = cls(**params)
        for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
            name, colon, stored = line.partition(":")
            if not (colon and NAME.fullmatch(name) and STORED.fullmatch(stored)):
                raise ValueError(f"{path}, line {number}: not name:scrypt-hash")
            store._hashes[name] = stored
        return store

    def save(self, path) -> None:
        """Write every user, readable by the owner only (0600), replacing the file at once:
        a crash mid-write leaves the old file, never half a new one."""
        path = Path(path)
        temp = path.with_name(path.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.writelines(f"{name}:{stored}\n" for name, stored in self._hashes.items())
        os.replace(temp, path)


# --------------------------------------------------------------------------- sessions


def new_session_id() -> str:
    """32 random bytes from the OS (256 bits), URL-safe: nobody guesses one."""
    return secrets.token_urlsafe(32)


class SessionStore:
    """Server-side sessions: id -> user, with two clocks.

    idle_ttl      a session unused this long (or longer) is gone (a forgotten laptop)
    absolute_ttl  a session this old (or older) is gone however busy (a stolen cookie's life)

    Every method holds the lock for its whole check-then-act: one thread could otherwise
    find a session alive while another deletes it, or expire it twice."""

    def __init__(self, idle_ttl: float, absolute_ttl: float, clock=time.monotonic):
        self.idle_ttl = idle_ttl
        self.absolute_ttl = absolute_ttl
        self.clock = clock
        self._sessions: dict[str, list] = {}  # id -> [user, created, last used]
        self._lock = threading.Lock()

    def create(self, user: str, replacing: str | None = None) -> str:
        """Log `user` in: always a NEW id (an id the client brought stays unauthenticated,
        which defeats session fixation), and the session it replaces, if any, is deleted."""
        raise NotImplementedError("create(): a new_session_id() every time; under the lock: "
                                  "drop `replacing`, purge, store [user, now, now]")

    def user(self, session_id: str | None) -> str | None:
        """The user of a live session, which counts as a use; None if unknown or expired
        (an expired session is deleted on the spot)."""
        raise NotImplementedError("user(): under the lock: look up, delete if expired "
                                  "(idle or absolute), else record the use and return the user")

    def delete(self, session_id: str | None) -> bool:
        """Log out: True if there was such a session."""
        raise NotImplementedError("delete(): pop the session under the lock")

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expired(self, session, now: float) -> bool:
        """[user, created, used] at time `now`: idle_ttl or more since its last use, or
        absolute_ttl or more since its creation."""
        raise NotImplementedError("_expired(): idle since the last use, or too old since "
                                  "creation")

    def _purge(self, now: float) -> None:
        """Drop every expired session (called with the lock held, at each login, so sessions
        nobody comes back for do not pile up)."""
        for session_id in [s for s, session in self._sessions.items()
                           if self._expired(session, now)]:
            del self._sessions[session_id]


COOKIE_FLAGS = "Path=/; HttpOnly; SameSite=Strict"


def session_cookie(session_id: str, max_age: float, *, secure: bool) -> str:
    """The Set-Cookie value. HttpOnly: page scripts (and so an XSS) cannot read it.
    SameSite=Strict: the browser does not send it on requests started by other sites (CSRF).
    Path=/: one cookie for the whole site. Secure: only over HTTPS -- set it whenever the
    server runs TLS (over plain HTTP the browser would refuse to store the cookie).
    Max-Age: the browser forgets it too; session_id "" with max_age 0 clears it."""
    raise NotImplementedError("session_cookie(): session=ID; Max-Age=...; then COOKIE_FLAGS, "
                              "plus ; Secure when secure")


def cookie_value(header: str | None, name: str = "session") -> str | None:
    """The value of cookie `name` in a Cookie header ("a=1; session=xyz"), or None."""
    for part in (header or "").split(";"):
        key, equals, value = part.strip().partition("=")
        if equals and key == name:
            return value
    return None


# --------------------------------------------------------------------------- throttling


class LoginThrottle:
    """After `max_failures` failed logins for one user name within `window` seconds, that
    name is refused (429) until the oldest failure is `window` old. Keyed on the NAME, so
    guessing one account's password from many addresses is slowed too. The price: anyone
    can lock a user out for a window by failing on purpose (lockout DoS) -- so the lock is
    short and temporary, and lesson 10's per-address limit still bounds each guesser."""

    def __init__(self, max_failures: int = 5, window: float = 300.0, max_tracked: int = 10_000,
                 clock=time.monotonic):
        self.max_failures = max_failures
        self.window = window
        self.max_tracked = max_tracked
        self.clock = clock
        self._failures: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def retry_after(self, name: str) -> float:
        """0.0 if `name` may try to log in now, else the seconds until it may."""
        raise NotImplementedError("retry_after(): under the lock, the recent failures; "
                                  "blocked when there are max_failures of them")

    def failed(self, name: str) -> None:
        """Record one failed login for `name` (and keep the table within max_tracked)."""
        raise NotImplementedError("failed(): append now to the name's recent failures, "
                                  "evict the oldest name past max_tracked")

    def succeeded(self, name: str) -> None:
        """A successful login forgets the name's failures."""
        raise NotImplementedError("succeeded(): forget the name's failures")

    def __len__(self) -> int:
        with self._lock:
            return len(self._failures)

    def _recent(self, name: str, now: float) -> collections.deque:
        recent = self._failures.pop(name, collections.deque())  # re-inserted: newest last
        while recent and now - recent[0] >= self.window:
            recent.popleft()
        if recent:
            self._failures[name] = recent
        return recent


# --------------------------------------------------------------------------- the server

AUTH_PATHS = ("/login", "/logout")
NO_STORE = ("Cache-Control", "no-store")  # no cache or proxy keeps a personal answer
JSON_TYPE = ("Content-Type", "application/json")
POST_ONLY = ("Allow", "POST")
# A 401 must name a challenge (RFC 9110); a scheme browsers do not know shows no password box.
CHALLENGE = ("WWW-Authenticate", 'Session realm="course-http"')


class SessionServer(RateLimitedServer):
    """Lesson 09/10's server plus logins: POST /login, GET /me, POST /logout."""

    tls = False  # lesson 12's TLS server sets it: then the cookie gets Secure

    def __init__(self, *args, users: UserStore | None = None, session_ttl: float = 1800.0,
                 session_lifetime: float = 8 * 3600.0, max_failures: int = 5,
                 failure_window: float = 300.0, clock=time.monotonic, **kwargs):
        super().__init__(*args, **kwargs)
        self.users = users if users is not None else UserStore()
        self.sessions = SessionStore(session_ttl, session_lifetime, clock)
        self.throttle = LoginThrottle(max_failures, failure_window, clock=clock)

    def check_before_body(self, request, peer: str) -> None:
        """Lesson 09 allows POST only on /echo: let POST through to /login and /logout too,
        keeping every other check of the lessons before (the rate limit among them)."""
        raise NotImplementedError("check_before_body(): super()'s checks, except its 405 for "
                                  "POST /login and /logout; 415 unless /login's body is JSON")

    def route(self, request, body: bytes):
        """/login and /logout: POST only (405 + Allow: POST). /logout deletes the session
        of the Cookie header, clears the cookie, and answers 200 {"logged_out": true}.
        GET (or HEAD) /me: 200 {"user": NAME} for a live session, else 401 with CHALLENGE.
        Anything else: super().route()."""
        raise NotImplementedError("route(): /login -> self.login(); /logout; /me; else super()")

    def login(self, request, body: bytes):
        """POST /login with {"user": str, "password": str} (else 400): 429 + Retry-After
        while the throttle refuses the name (before hashing); 401 with CHALLENGE for a wrong
        user or password, the same bytes for both; else a NEW session (replacing the one
        the Cookie header named) and 200 {"user": NAME} with its Set-Cookie, whose Max-Age
        is the absolute lifetime (self.sessions.absolute_ttl). Retry-After: whole seconds,
        rounded up."""
        raise NotImplementedError("login(): parse_json, throttle.retry_after, "
                                  "users.authenticate, sessions.create, reply with the cookie")

    @staticmethod
    def reply(data, cookie: str | None = None, head: bool = False) -> bytes:
        body = json.dumps(data).encode()
        headers = [JSON_TYPE, NO_STORE]
        if cookie is not None:
            headers.append(("Set-Cookie", cookie))
        return render_response(200, headers, b"" if head else body, length=len(body))
