"""Tools the graders share: the task manifest, narrated checks, and careful sockets.

Graders never use *your* framing code to check your framing code: they speak the protocol
with the small, independent helpers below. Every socket here has a timeout, so a grader can
fail but never hang.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
import struct
import threading
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

LOOPBACK = "127.0.0.1"
WAIT = 2.0  # how long a grader waits for any single reply before calling it missing

MANIFEST = Path(__file__).resolve().parent / "tasks.toml"


# --------------------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    section: str
    hint: str  # the first hint: names the idea and the notebook section, no code
    hint2: str  # the second hint: close to code
    lesson: "Lesson" = field(repr=False, compare=False)


@dataclass(frozen=True)
class Lesson:
    number: str
    title: str
    notebook: str
    module: str
    tasks: list = field(default_factory=list, compare=False)


@dataclass(frozen=True)
class Manifest:
    lessons: list
    tasks: dict  # task id -> Task, in course order


@functools.lru_cache(maxsize=None)
def load_manifest(path: Path = MANIFEST) -> Manifest:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    lessons, tasks = [], {}
    for entry in data["lesson"]:
        lesson = Lesson(entry["number"], entry["title"], entry["notebook"], entry["module"])
        for t in entry["task"]:
            missing = [key for key in ("id", "title", "section", "hint", "hint2")
                       if not str(t.get(key, "")).strip()]
            if missing:  # every task gets both hints: a first nudge, then one close to code
                raise ValueError(f"{path.name}: task {t.get('id', '?')} of lesson "
                                 f"{lesson.number} has no {', '.join(missing)}")
            task = Task(t["id"], t["title"], t["section"], t["hint"].strip(),
                        t["hint2"].strip(), lesson)
            lesson.tasks.append(task)
            tasks[task.id] = task
        lessons.append(lesson)
    return Manifest(lessons, tasks)


# --------------------------------------------------------------------------- narration


class Transcript:
    """What the grader did, step by step, so a failure reads like a story:

        What the grader did:
          1. connected to your server
          2. sent b'hello'
        Expected: b'hello' back
        Got:      nothing within 2.0 s (TimeoutError)
    """

    def __init__(self):
        self.steps: list[str] = []

    def step(self, text: str) -> None:
        self.steps.append(text)

    def told(self, expected: str, got: str) -> str:
        """The story so far, ending with what was expected and what happened instead."""
        lines = ["What the grader did:"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)] or ["  (nothing yet)"]
        got = got.replace("\n", "\n          ")  # a second line of "Got:" stays indented
        lines += [f"Expected: {expected}", f"Got:      {got}"]
        return "\n".join(lines)

    def fail(self, expected: str, got: str):
        # `from None`: the socket error that led here is already in "Got:", shown once.
        raise pytest.fail.Exception(self.told(expected, got), pytrace=False) from None

    def check(self, ok: bool, expected: str, got: str) -> None:
        if not ok:
            self.fail(expected, got)


def describe(exc: BaseException) -> str:
    """One line a student can read: the exception's type and message."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def short(data, limit: int = 60) -> str:
    """repr() of data, cut to `limit` characters so a 64 KiB payload does not flood the report."""
    text = repr(data)
    if len(text) <= limit:
        return text
    size = f" ({len(data)} in all)" if hasattr(data, "__len__") else ""
    return f"{text[:limit]}...{size}"


# --------------------------------------------------------------------------- sockets


def connect(address, story: Transcript, timeout: float = WAIT) -> socket.socket:
    story.step(f"connected to {address[0]}:<port> with a {timeout} s timeout")
    try:
        return socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        story.fail("the connection to be accepted", describe(exc))


def read_until_close(sock: socket.socket, limit: int = 1 << 20) -> tuple[bytes, str]:
    """Read until the peer closes. Returns (data, how it ended): 'closed', 'reset' or 'timeout'."""
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return bytes(data), "timeout"
        except ConnectionError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "closed"
        data += chunk
    return bytes(data), "limit"


def frame(body) -> bytes:
    """A protocol frame: 4-byte big-endian length, then the body (text is UTF-8 encoded)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return struct.pack("!I", len(body)) + body


def read_frame(sock: socket.socket) -> bytes:
    """Read one frame's body with plain recv calls; raises ConnectionError at end of stream."""
    def exact(n):
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)
    (length,) = struct.unpack("!I", exact(4))
    return exact(length)


def is_closed(sock: socket.socket, wait: float = WAIT) -> str:
    """'closed' or 'reset' if the peer has closed, else what arrived instead (for the report)."""
    sock.settimeout(wait)
    data, how = read_until_close(sock, limit=1 << 16)
    return how if not data else f"{how} after sending {short(data)}"


class NeverReturned(TimeoutError):
    """A call the grader made in a thread was still running when the grader stopped waiting."""

    def __init__(self, called: str, timeout: float):
        super().__init__(f"{called} never returned within {timeout} s")
        self.called = called


def run_in_thread(target, *args, name: str = "grader-helper"):
    """Run target(*args) in a daemon thread; returns a handle whose .result(timeout) gives the
    return value, re-raises its exception, or raises NeverReturned if it is still running."""
    box: dict = {}
    called = getattr(target, "__name__", "")
    called = f"{called}()" if called.isidentifier() else "the call"

    def runner():
        try:
            box["value"] = target(*args)
        except BaseException as exc:  # handed back to the grader, which reports it
            box["error"] = exc

    thread = threading.Thread(target=runner, name=name, daemon=True)
    thread.start()

    class Handle:
        @staticmethod
        def raise_if_failed(wait: float = 0.05):
            """Re-raise at once if target already failed (a stub's NotImplementedError)."""
            thread.join(wait)
            if "error" in box:
                raise box["error"]

        @staticmethod
        def result(timeout: float = WAIT):
            thread.join(timeout)
            if thread.is_alive():
                raise NeverReturned(called, timeout)
            if "error" in box:
                raise box["error"]
            return box["value"]

        @classmethod
        def result_for(cls, story: "Transcript", expected: str, timeout: float = WAIT):
            """result(), but a hang or an exception fails the test with `expected` and what
            happened instead (a stub's NotImplementedError passes through untouched)."""
            try:
                return cls.result(timeout)
            except NotImplementedError:
                raise
            except NeverReturned as exc:
                story.fail(expected, str(exc))  # "recv_msg() never returned within 2.0 s"
            except Exception as exc:
                story.fail(expected, describe(exc))

    return Handle()


# --------------------------------------------------------------------------- servers


def new_threads_after(before: set, grace: float = 0.0) -> list[threading.Thread]:
    """Threads started since `before` (grader helpers, named 'grader-...', left out) that are
    still alive after up to `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        alive = [t for t in threading.enumerate()
                 if t not in before and t.is_alive() and not t.name.startswith("grader-")]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.01)


@contextlib.contextmanager
def running(server, story: Transcript):
    """start() a server object, yield its address, and stop() it afterwards. The test fails if
    start() or stop() raises or hangs, if a thread the server runs is not a daemon (it would
    keep Python from exiting), or if any of its threads is still alive when stop() returns."""
    before = set(threading.enumerate())
    try:
        server.start()
        address = tuple(server.address)
    except NotImplementedError:
        raise
    except Exception as exc:
        story.fail("start() to bind, listen and return", describe(exc))
    story.step("started your server with start()")
    body_ok = False
    try:
        yield address
        body_ok = True
    finally:
        serving_threads = new_threads_after(before)  # seen just before stop(): clients too
        stopping = run_in_thread(server.stop, name="grader-stop")
        try:
            stopping.result(timeout=3.0)
        except NotImplementedError:
            if body_ok:
                raise
        except Exception as exc:
            if body_ok:
                story.step("called stop()")
                story.fail("stop() to return within 3 s", describe(exc))
    # Checked at once: "gone when stop() returns" means stop() joined them, not that they
    # happen to end a moment later.
    leftover = new_threads_after(before)
    story.step("called stop()")
    not_daemon = [t.name for t in serving_threads if not t.daemon]
    story.check(not not_daemon, "every thread the server starts to be a daemon thread "
                "(daemon=True), so a stuck client can never keep Python from exiting",
                f"not daemon: {', '.join(not_daemon)}")
    if leftover:
        late = new_threads_after(before, grace=1.0)
        story.fail("stop() to end every thread the server started before it returns (join them)",
                   f"{len(leftover)} still running when stop() returned: "
                   f"{', '.join(t.name for t in leftover)}"
                   + ("; they ended within a second after: stop() does not wait for them"
                      if not late else ""))


BOOM = "boom (raised on purpose by the grader's reply_to)"


def make_server(cls, story, boom=False, sndbuf=None, **kwargs):
    """Your server class, wrapped so that the grader hears about a NotImplementedError (or
    any other exception) raised in the server's own threads, where a test cannot see it.

    boom=True also plants a bug: reply_to raises RuntimeError for the message "boom", to test
    that the server survives a handler that crashes (that planted error is not narrated).
    sndbuf=N gives each client connection an N-byte send buffer (SO_SNDBUF), as on a busy
    host: a client that reads slowly then fills it after a few replies (back-pressure)."""

    class Graded(cls):
        poll_interval = 0.01  # ThreadedServer's accept loop: stop() returns sooner
        not_implemented = None

        def _stub(self, exc):
            self.not_implemented = exc  # reported by serving(); not worth a traceback

        def process(self, conn, addr):
            if sndbuf is not None:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            try:
                super().process(conn, addr)
            except NotImplementedError as exc:
                self._stub(exc)
            except OSError:
                raise  # timeouts, resets, closed connections: the normal ways out
            except Exception as exc:
                if BOOM not in str(exc):
                    story.step(f"(meanwhile, your server's handler raised {describe(exc)})")
                raise

        # The server's admit()/release() hooks (lesson 02) run on the server's own threads
        # too: a stub's NotImplementedError there is reported the same way.
        if hasattr(cls, "admit"):
            def admit(self, conn, addr):
                try:
                    return super().admit(conn, addr)
                except NotImplementedError as exc:
                    self._stub(exc)
                    return False

        if hasattr(cls, "release"):
            def release(self, conn, addr):
                try:
                    return super().release(conn, addr)
                except NotImplementedError as exc:
                    self._stub(exc)

        def reply_to(self, text):
            if boom and text == "boom":
                raise RuntimeError(BOOM)
            return super().reply_to(text)

    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "logger")
    story.step(f"created {cls.__name__}({args})")
    return Graded(**kwargs)


@contextlib.contextmanager
def serving(server, story: Transcript):
    """running(), plus: a stub's NotImplementedError raised in a server thread (see
    make_server) fails the test as "Not implemented yet", whatever the test saw first."""
    try:
        with running(server, story) as address:
            yield address
    except BaseException:
        if server.not_implemented is not None:
            raise server.not_implemented from None
        raise
    if server.not_implemented is not None:
        raise server.not_implemented


# --------------------------------------------------------------------------- logs


class ListHandler(logging.Handler):
    """Keeps every log record in a list, so a grader can read what the server logged."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def lines(self, min_level=logging.DEBUG):
        return [r.getMessage() for r in list(self.records) if r.levelno >= min_level]


def wait_for_line(logs: ListHandler, *parts, min_level=logging.DEBUG, wait=WAIT, start="",
                  server=None):
    """The first logged line that begins with `start` and contains every one of parts,
    waiting up to `wait` s; or None. Server threads log a moment after the client sees the
    effect, so look more than once. With server= (from make_server), a stub's
    NotImplementedError in a server thread ends the wait at once."""
    ends = time.monotonic() + wait
    while True:
        if server is not None and server.not_implemented is not None:
            raise server.not_implemented
        for line in logs.lines(min_level):
            if line.startswith(start) and all(part in line for part in parts):
                return line
        if time.monotonic() > ends:
            return None
        time.sleep(0.02)


# --------------------------------------------------------------------------- conversations


def ask(sock: socket.socket, story: Transcript, message, who: str = "the client") -> str:
    """Send one frame and return the reply frame's text (failing with the story if none, or
    if the reply is not UTF-8: the protocol says every frame is UTF-8 text)."""
    sock.sendall(frame(message))
    story.step(f"{who} sent the frame {short(message)}")
    try:
        reply = read_frame(sock)
    except OSError as exc:
        story.fail(f"a reply frame to {short(message)} within {WAIT} s", describe(exc))
    try:
        return reply.decode("utf-8")
    except UnicodeDecodeError:
        story.fail("a reply in UTF-8", short(reply))


def expect(sock: socket.socket, story: Transcript, message, expected: str,
           who: str = "the client") -> None:
    """ask(), and fail unless the reply is exactly `expected`."""
    reply = ask(sock, story, message, who)
    story.check(reply == expected, f"the reply {short(expected)}", short(reply))
    story.step(f"{who} got {short(reply)}")


BUSY = "server busy, try later"  # what a server with a cap on clients says to one too many
BUSY_AT_ONCE = 0.5  # seconds: "at once" even on a slow machine, yet shorter than any wait


def expect_busy(address, story: Transcript, who: str = "one client too many",
                check_close: bool = True) -> str:
    """Connect and, without sending anything, expect the busy frame at once (a server that
    makes the extra client wait still spends a thread on it), then, if check_close, a close.
    Returns peer_of(that client), to look for in the server's log."""
    started = time.monotonic()
    with connect(address, story) as client:
        try:
            reply = read_frame(client)
        except OSError as exc:
            story.fail(f"{who} to be told {BUSY!r} at once (not made to wait)", describe(exc))
        took = time.monotonic() - started
        story.check(reply == BUSY.encode(), f"{who} to be told {BUSY!r}", short(reply))
        story.step(f"{who} was told {BUSY!r} after {took:.2f} s")
        story.check(took <= BUSY_AT_ONCE, f"the busy reply at once (within {BUSY_AT_ONCE} s of "
                    "connecting): never wait for a slot to free up", f"after {took:.2f} s")
        if check_close:
            how = is_closed(client)
            story.check(how in ("closed", "reset"), "the server to close a rejected connection",
                        how)
        return peer_of(client)


def peer_of(sock: socket.socket) -> str:
    """How the server sees this client: '127.0.0.1:<client port>' (as it logs it)."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def trickle(sock: socket.socket, data: bytes, stop: threading.Event, interval: float = 0.1) -> int:
    """Send data one byte every `interval` s until done, stopped or cut off (a Slowloris
    client: each gap is short enough to beat a per-recv timeout). Returns the bytes sent."""
    sent = 0
    try:
        for i in range(len(data)):
            if stop.is_set():
                break
            sock.send(data[i:i + 1])
            sent += 1
            time.sleep(interval)
    except OSError:
        pass
    return sent


@contextlib.contextmanager
def trickling(sock: socket.socket, story: Transcript, data: bytes, interval: float = 0.1):
    """A background thread that trickles `data` on sock; yields a function that stops it
    and returns how many bytes it sent. Leaving the block stops it too."""
    stop = threading.Event()
    story.step(f"the client started sending {len(data)} bytes, one every {interval} s "
               f"(that takes {len(data) * interval:.1f} s)")
    sender = run_in_thread(trickle, sock, data, stop, interval, name="grader-trickle")

    def finish():
        stop.set()
        return sender.result(timeout=WAIT)

    try:
        yield finish
    finally:
        stop.set()


# A defence due after D seconds must act between EARLY*D and LATE*D: a deadline twice too
# long fails, yet a machine three times slower than usual (a late wake-up) still passes.
EARLY, LATE = 0.9, 1.7


def check_on_time(story: Transcript, what: str, elapsed: float, clock: float) -> None:
    """`what` happened `elapsed` s after its clock started; it was due after `clock` s."""
    story.check(EARLY * clock <= elapsed <= LATE * clock,
                f"{what} after about {clock} s (between {EARLY * clock:.2f} and "
                f"{LATE * clock:.2f} s, counted from the right moment)",
                f"after {elapsed:.2f} s")


def expect_dropped(client: socket.socket, story: Transcript, why: str, wait: float = WAIT,
                   clock: float | None = None, since: float | None = None) -> None:
    """The server must hang up on `client` within `wait` seconds, for the reason `why`.

    With clock=D and since=T (a time.monotonic() value): the hang-up must come D seconds
    after T, within check_on_time's bounds (and the wait stops soon after the late bound)."""
    started = time.monotonic()
    if clock is not None:
        since = started if since is None else since
        wait = max(0.1, since + LATE * clock + 0.3 - started)
    how = is_closed(client, wait=wait)
    story.check(how in ("closed", "reset"), f"the server to hang up within {wait:.1f} s ({why})",
                f"still open after {wait:.1f} s" if how == "timeout" else how)
    ended = time.monotonic()
    if clock is None:
        story.step(f"the server hung up after {ended - started:.2f} s")
        return
    story.step(f"the server hung up {ended - since:.2f} s after the clock started ({why})")
    check_on_time(story, f"the hang-up ({why})", ended - since, clock)


def reset(sock: socket.socket, story: Transcript, what: str = "") -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN, an abrupt reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    story.step(f"the client reset the connection{' ' + what if what else ''} "
               "(SO_LINGER 0, then close: an RST, not a goodbye)")


def slow_reader(address, story: Transcript, rcvbuf: int = 4096) -> socket.socket:
    """A client with a tiny receive buffer: once it stops reading, the server's sends block
    (or come up short) after a few KiB. SO_RCVBUF must be set before connect()."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(WAIT)
    story.step(f"connected a client with a {rcvbuf}-byte receive buffer (SO_RCVBUF)")
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        story.fail("the connection to be accepted", describe(exc))
    return sock


def check_is_now(story: Transcript, text: str) -> None:
    """`text` must be the current time in UTC, ISO-8601 with its offset, to the second: a
    time without an offset means something different on every machine that reads it."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        story.fail("an ISO-8601 time that datetime.fromisoformat() can parse, e.g. "
                   "'2025-01-31T12:00:00+00:00'", short(text))
    story.check(when.utcoffset() is not None and not when.utcoffset(),
                "a UTC time that says so: '+00:00' at the end (datetime.now(timezone.utc))",
                short(text))
    gap = abs((datetime.now(timezone.utc) - when).total_seconds())
    story.check(gap < 60, "the current time (within a minute)", f"{text}, {gap:.0f} s from now")


# --------------------------------------------------------------------------- programs in-process


@pytest.fixture
def signal_safety_net():
    """While a test sends itself SIGTERM: if main() has not installed its handlers, the
    signal lands here (and fails the test) instead of killing pytest."""
    def net(signum, frame):
        raise RuntimeError(f"{signal.Signals(signum).name} reached no handler of yours")
    saved = {s: signal.signal(s, net) for s in (signal.SIGINT, signal.SIGTERM)}
    yield net
    for s, handler in saved.items():
        signal.signal(s, handler)
