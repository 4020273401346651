"""Lab helpers for the lesson notebooks: test harness, not teaching.

The notebooks import these so that their code cells show only the idea being taught. Each
helper is small, uses loopback and timeouts, and never prints (notebook cells print).
One section per group of lessons; each helper says which lesson uses it.
"""
from __future__ import annotations

import logging
import os
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

# -- lessons 01-03 ---------------------------------------------------------------------------


def tcp_pair(timeout: float = 2.0) -> tuple[socket.socket, socket.socket]:
    """A real loopback TCP connection: (client, server_side), both with `timeout`.

    No thread needed: connect() completes in the listener's backlog, then we accept()."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(timeout)
        client = socket.create_connection(listener.getsockname(), timeout=timeout)
        server_side, _ = listener.accept()
    server_side.settimeout(timeout)
    return client, server_side


def hung_up(sock: socket.socket, within: float) -> bool:
    """Wait up to `within` seconds without sending. True if the peer closed or reset."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:  # a reset is a hang-up too
        return True


def echo(sock: socket.socket, data: bytes) -> bytes:
    """Send `data` to an echo server and read back as many bytes (or fewer, if it closes)."""
    sock.sendall(data)
    reply = bytearray()
    while len(reply) < len(data):
        chunk = sock.recv(len(data) - len(reply))
        if not chunk:
            break
        reply += chunk
    return bytes(reply)


def leave_time_wait() -> int:
    """Lesson 01: serve one client with the server closing first, then close the listener.
    Returns the port, which is left holding a connection in TIME_WAIT."""
    with socket.create_server(("127.0.0.1", 0)) as old:
        old.settimeout(2.0)
        port = old.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as client:
            conn, _ = old.accept()
            conn.close()  # the server hangs up first: its side goes to TIME_WAIT
            client.recv(1)  # b"": the client sees it and closes too
    return port


def second_client_wait(address, hold: float = 1.0) -> tuple[float, bytes]:
    """Lesson 02: a first client gets one echo, then stays connected and silent for `hold`
    seconds; meanwhile a second client sends one byte. Returns (its wait in s, its reply)."""
    with socket.create_connection(address, timeout=5.0) as first:
        echo(first, b"1")
        leave = threading.Timer(hold, first.close)
        with socket.create_connection(address, timeout=5.0) as second:
            leave.start()
            started = time.monotonic()
            reply = echo(second, b"2")
            waited = time.monotonic() - started
        leave.cancel()
        leave.join()
    return waited, reply


class Spy:
    """Lesson 03: wraps a socket and records every recv()/recv_into() (size asked, bytes got).

    A safety net refuses any single recv() over 64 MiB, so a reader that trusts a forged
    length cannot make the notebook reserve gigabytes."""

    SAFETY_NET = 64 * 1024 * 1024

    def __init__(self, sock):
        self.sock, self.asked, self.got = sock, [], 0

    def recv(self, n):
        self.asked.append(n)
        if n > self.SAFETY_NET:
            raise MemoryError(f"lab safety net: refused a recv({n:,})")
        data = self.sock.recv(n)
        self.got += len(data)
        return data

    def recv_into(self, buffer, nbytes=0):
        n = nbytes or len(buffer)
        self.asked.append(n)
        got = self.sock.recv_into(buffer, n)
        self.got += got
        return got


def trickle(sock: socket.socket, data: bytes, pause: float = 0.005) -> threading.Thread:
    """Lesson 03: send `data` one byte at a time from a daemon thread; returns the thread."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each byte its own packet

    def run():
        try:
            for i in range(len(data)):
                sock.sendall(data[i:i + 1])
                time.sleep(pause)
        except OSError:
            pass  # the reader hung up: nothing to report from a background thread

    thread = threading.Thread(target=run, name="lab-trickle", daemon=True)
    thread.start()
    return thread


def check_decoder(make_decoder, trials: int = 200, seed: int = 3) -> str:
    """Lesson 03 mini-challenge: feed three "!I" frames to a fresh decoder in random-sized
    pieces (seeded: the same cuts every run); say whether every way decoded correctly."""
    texts = ["hello", "", "héllo ✓ " * 30]
    stream = b"".join(struct.pack("!I", len(t.encode())) + t.encode() for t in texts)
    rng = random.Random(seed)
    for trial in range(trials):
        decoder, got, at = make_decoder(), [], 0
        try:
            while at < len(stream):
                step = rng.randint(1, 40)
                got += decoder.feed(stream[at:at + step])
                at += step
        except Exception as exc:
            return f"trial {trial}: {type(exc).__name__}: {exc}"
        if got != texts:
            return f"trial {trial}: wrong messages: {got!r:.70}"
    return f"all {trials} ways of cutting the stream decoded correctly"


# -- lessons 04-06 ---------------------------------------------------------------------------
# Plumbing around the demos of lessons 04-06: logs from server threads, thread counts, an
# attack in the background, a GIL stall measured, programs started as a terminal would.

REPO = Path(__file__).resolve().parent.parent


def collect_log(name: str = "lab", fmt: str = "%(levelname)-7s %(message)s"):
    """Lessons 04-05: a logger whose lines land in a list, and that list.

    Server threads must never print in a notebook (the text would land in whatever cell is
    running), so they log here and the notebook prints the list. The list also receives
    ThreadedServer's own lines (drops, crashes). Safe to call again: old handlers go."""
    lines: list[str] = []

    class ToList(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = ToList()
    handler.setFormatter(logging.Formatter(fmt))
    for logger_name in (name, "solutions.lesson02_threads"):
        logger = logging.getLogger(logger_name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logging.getLogger(name), lines


def client_threads() -> int:
    """Client threads alive now (ThreadedServer names each one client-IP:PORT)."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("client-"))


def wait_until(condition, timeout: float = 2.0, step: float = 0.01) -> bool:
    """Poll `condition()` until it is true or `timeout` s have passed; return its last value."""
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(step)
    return bool(condition())


def wait_for_threads(count: int, timeout: float = 5.0) -> int:
    """Wait until exactly `count` client threads are alive (or `timeout` s); return the count."""
    wait_until(lambda: client_threads() == count, timeout)
    return client_threads()


class ThreadStarts:
    """Lesson 05: count the client threads started inside a `with` block.

    It wraps threading.Thread.start for the duration of the block, so it counts every thread
    a server starts, including those that end at once."""

    def __init__(self, prefix: str = "client-"):
        self.prefix, self.count, self._lock = prefix, 0, threading.Lock()

    def __enter__(self):
        self._original = original = threading.Thread.start
        counter = self

        def start(thread, *args, **kwargs):
            if thread.name.startswith(counter.prefix):
                with counter._lock:
                    counter.count += 1
            return original(thread, *args, **kwargs)

        threading.Thread.start = start
        return self

    def __exit__(self, *exc_info):
        threading.Thread.start = self._original


def ask(address, text: str, timeout: float = 2.0) -> str:
    """Lesson 05: one request on a fresh connection; the reply, or the error's name."""
    from solutions.lesson03_framing import encode_frame, recv_msg
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(encode_frame(text))
            return recv_msg(sock)
    except (OSError, ValueError) as exc:
        return type(exc).__name__


class Attack:
    """Lesson 05: tools.attack.run_slowloris in a background thread; stop() returns its report."""

    def __init__(self, address, connections: int, interval: float, reconnect: bool = False):
        from tools.attack import run_slowloris
        self._stop, ready, self._box = threading.Event(), threading.Event(), {}
        self._thread = threading.Thread(
            target=lambda: self._box.update(report=run_slowloris(
                address, connections, interval, 60.0, reconnect, stop=self._stop, ready=ready)),
            name="lab-attack", daemon=True)
        self._thread.start()
        ready.wait(5.0)  # every attacking connection has been opened

    def stop(self):
        self._stop.set()
        self._thread.join(5.0)
        return self._box.get("report")


def trickle_for(address, seconds: float, interval: float, announce: int = 100):
    """Lesson 05: announce a message of `announce` bytes, then send its body one byte every
    `interval` s for up to `seconds`, watching for a hang-up between bytes.
    Returns (still connected at the end, seconds connected)."""
    with socket.create_connection(address, timeout=2.0) as sock:
        started = time.monotonic()
        sock.sendall(struct.pack("!I", announce))
        while time.monotonic() - started < seconds:
            try:
                if hung_up(sock, within=interval):
                    return False, time.monotonic() - started
                sock.sendall(b".")
            except OSError:
                return False, time.monotonic() - started
        return True, time.monotonic() - started


def honest_client(address, requests: int = 80, pause: float = 0.01):
    """Lesson 05: `requests` times "echo hello", each on a fresh connection, `pause` s apart.
    Returns (round-trip times in s of the requests answered "hello", number that failed)."""
    times, failed = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        if ask(address, "echo hello") == "hello":
            times.append(time.perf_counter() - started)
        else:
            failed += 1
        time.sleep(pause)
    return times, failed


def after_each_client(server, clients: dict, log_lines: list, measure) -> list:
    """Lesson 05: one connection per entry of `clients` (name -> the bytes it sends), one after
    another. The server ends each conversation (its CLOSE line is awaited), except "hangs up",
    which closes at once. Returns measure() after each client has been dealt with."""
    results = []
    closes = lambda: sum(" CLOSE " in line for line in log_lines)
    for name, data in clients.items():
        before = closes()
        with socket.create_connection(server.address, timeout=2.0) as sock:
            sock.sendall(data)
            if name != "hangs up":
                wait_until(lambda: closes() > before)
        wait_until(lambda: closes() > before) and wait_for_threads(0)
        results.append(measure())
    return results


def longest_stall(work, tick: float = 0.002) -> tuple[float, float]:
    """Lesson 04: run `work()` in a worker thread while a ticker thread wakes every `tick` s.

    Returns (seconds the work took, the ticker's longest gap between two wake-ups meanwhile).
    A gap as long as the work means the worker kept the GIL: no other thread ran at all."""
    ticks: list[float] = []
    done = threading.Event()
    span: list[float] = []

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(tick)

    def worker():
        started = time.perf_counter()
        work()
        span.extend([started, time.perf_counter()])

    ticking = threading.Thread(target=ticker, name="lab-ticker", daemon=True)
    ticking.start()
    time.sleep(0.05)  # the ticker is ticking before the work begins
    working = threading.Thread(target=worker, name="lab-worker", daemon=True)
    working.start()
    working.join()
    time.sleep(0.05)
    done.set()
    ticking.join()
    began, ended = span
    inside = [t for t in ticks if began - 0.05 <= t <= ended + 0.05]
    gap = max(b - a for a, b in zip(inside, inside[1:]))
    return ended - began, gap


# Programs (lesson 06): started with this Python, from the repo root, as a terminal would.
ENV = dict(os.environ, COLUMNS="100", PYTHONIOENCODING="utf-8",
           PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
PROGRAMS: list[subprocess.Popen] = []  # every program started here, so stop_all() finds them


def python_m(module: str, *args) -> list[str]:
    """The command line for `python -m module args...` with the notebook's own Python."""
    return [sys.executable, "-m", module, *map(str, args)]


def run(module: str, *args, input: str | None = None, timeout: float = 60.0):
    """Run a program to the end; the finished subprocess.CompletedProcess (text mode)."""
    return subprocess.run(python_m(module, *args), input=input, capture_output=True, text=True,
                          encoding="utf-8", cwd=REPO, env=ENV, timeout=timeout)


def show_run(result) -> None:
    """Print a finished program's stdout and stderr lines, then its exit status."""
    for line in result.stdout.splitlines():
        print("stdout |", line)
    for line in result.stderr.splitlines():
        print("stderr |", line)
    print("exit status:", result.returncode)


def log_tail(line: str) -> str:
    """A program's log line without its leading date and time (they change every run)."""
    return line.split(" ", 2)[-1]


def kind(line: str) -> str:
    """CONNECT, MSG, DROP, REJECT, CLOSE...: the word after the log level."""
    words = log_tail(line).split()
    return words[1] if len(words) > 1 else ""


def stop_all() -> None:
    """Stop every program started here that still runs: SIGTERM, then a kill if it hangs."""
    for proc in PROGRAMS:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ServerProgram:
    """Lesson 06: a server program in the background: its first line, address and log.

    The first stdout line is read with a timeout (a program that fails to start raises
    instead of freezing the notebook); stderr (the log) is read into `log` by a thread."""

    def __init__(self, *flags, module: str = "solutions.message_server", wait: float = 10.0):
        self.proc = subprocess.Popen(
            python_m(module, *flags), cwd=REPO, env=ENV, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
        PROGRAMS.append(self.proc)
        self.log: list[str] = []
        first: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_stdout, args=(first,), daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()
        try:
            self.first_line = first.get(timeout=wait)
        except queue.Empty:
            self.first_line = ""
        if not self.first_line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"no 'listening on' line within {wait} s; log: {self.log}")
        host, port = self.first_line.split()[-1].rsplit(":", 1)
        self.address = (host, int(port))

    def _read_stdout(self, first):
        first.put(self.proc.stdout.readline().rstrip("\n"))
        for _ in self.proc.stdout:  # keep the pipe drained
            pass

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_for(self, word: str, count: int = 1, since: int = 0, wait: float = 5.0) -> bool:
        """Wait until `count` log lines from index `since` on contain `word`; True if in time."""
        return wait_until(lambda: sum(word in line for line in self.log[since:]) >= count, wait)

    def stop(self, sig=signal.SIGTERM, wait: float = 5.0):
        """Send `sig` (SIGTERM: a polite request to stop); return the exit status. A program
        that does not stop within `wait` s is killed, and the status says so (-9)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr_reader.join(wait)  # the last log lines are in before we return
        return self.proc.returncode


# -- lessons 07-09 ---------------------------------------------------------------------------
# HTTP plumbing for lessons 07-09: a stock http.server in a background thread, raw requests
# over a socket, replies printed without the parts that change every run.

import contextlib  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402


@contextlib.contextmanager
def http_running(server):
    """Lesson 07: serve an http.server (socketserver) instance in a daemon thread for the
    `with` block; then shutdown() and server_close(), so the port is free again."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="lab-http-serve", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(2.0)


def read_reply(source, no_body: bool = False) -> bytes:
    """Lessons 07-09: one whole HTTP response, head and body, from a socket or from a file made
    by sock.makefile("rb") (use one file per connection: it keeps what follows the reply).
    The body is Content-Length bytes, none if `no_body` (the answer to HEAD), or everything
    up to the close if there is no length. b"" if the server had closed."""
    file = source.makefile("rb") if isinstance(source, socket.socket) else source
    head = bytearray()
    while True:
        line = file.readline(65537)
        if not line:
            return bytes(head)
        head += line
        if line in (b"\r\n", b"\n"):
            break
    match = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", bytes(head), re.IGNORECASE)
    if no_body:
        return bytes(head)
    return bytes(head) + (file.read() if match is None else file.read(int(match.group(1))))


def exchange(address, *requests: bytes, timeout: float = 2.0) -> list[bytes]:
    """Lessons 07-09: send each raw request on ONE connection and read one reply after each;
    return the replies. b"" means the server had closed; an error is returned as its name,
    e.g. b"<TimeoutError>". A request b"" sends nothing and reads the next reply (pipelining)."""
    replies = []
    with socket.create_connection(address, timeout=timeout) as sock:
        file = sock.makefile("rb")
        for raw in requests:
            try:
                sock.sendall(raw)
                replies.append(read_reply(file, no_body=raw.startswith(b"HEAD ")))
            except (ConnectionError, TimeoutError) as exc:
                replies.append(f"<{type(exc).__name__}>".encode())
                break
        file.close()
    return replies


def status(reply: bytes) -> str:
    """'200 OK' from b'HTTP/1.1 200 OK\\r\\n...' (or the whole text, if it is no reply)."""
    line = reply.split(b"\r\n", 1)[0].decode("latin-1")
    return line.split(" ", 1)[1] if line.startswith("HTTP/") else line or "(closed)"


def header(reply: bytes, name: str) -> str | None:
    """The first value of header `name` in a raw reply, or None."""
    head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def body(reply: bytes) -> bytes:
    return reply.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in reply else b""


def show(message: bytes, limit: int = 400) -> None:
    """Print a raw request or reply: one head line per row with its CRLF made visible, then
    the body as escaped text. The Date value and this Python's version (they change from run
    to run and machine to machine) are replaced by placeholders."""
    text = message.decode("latin-1")
    text = re.sub(r"(?im)^(date:)[^\r\n]*", r"\1 <date>", text)
    text = text.replace(platform.python_version(), "<version>")
    head, blank, rest = text.partition("\r\n\r\n")
    for line in head.split("\r\n"):
        print(repr(line)[1:-1] + "\\r\\n")
    if blank:
        print("\\r\\n")
    if rest:
        print(repr(rest[:limit])[1:-1] + (f"... ({len(rest) - limit} more)" if len(rest) > limit else ""))


def http_threads() -> int:
    """Lessons 07, 09: the threads socketserver.ThreadingMixIn has started for clients and
    that still run (Python 3.10+ names them 'Thread-N (process_request_thread)')."""
    return sum(1 for t in threading.enumerate() if "process_request_thread" in t.name)


def trickle_bytes(address, data: bytes, interval: float, seconds: float, prefix: bytes = b""):
    """Lessons 07, 09: send `prefix` at once, then `data` one byte every `interval` s (never
    all of it if `seconds` runs out first), watching for the server giving up between bytes.
    Returns (still connected at the end, seconds connected since the first byte of `data`)."""
    with socket.create_connection(address, timeout=2.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(prefix)
        started = time.monotonic()
        for i in range(len(data)):
            if time.monotonic() - started >= seconds:
                break
            try:
                sock.sendall(data[i:i + 1])
                if _gave_up(sock, within=interval):
                    return False, time.monotonic() - started
            except OSError:
                return False, time.monotonic() - started
        return True, time.monotonic() - started


def _gave_up(sock: socket.socket, within: float) -> bool:
    """Wait up to `within` s. True if the server closed, reset, or answered (here an answer,
    e.g. 408, means it stopped waiting for the rest of the request)."""
    sock.settimeout(within)
    try:
        sock.recv(65536)
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def http_program(*flags, module: str = "solutions.lesson09_slow_http") -> "ServerProgram":
    """Lesson 09: the HTTP server program in the background (see ServerProgram); its first
    line reads 'listening on http://HOST:PORT', so the address is taken from that URL."""
    import urllib.parse
    program = ServerProgram(*flags, module=module)
    url = urllib.parse.urlsplit(program.first_line.split()[-1])
    program.address = (url.hostname, url.port)
    return program


# -- end of lessons 07-09 ---------------------------------------------------------------------


def run_python(code: str, timeout: float = 60.0):
    """Lesson 06: run `code` in a child Python (repo root on its path); a CompletedProcess.
    On timeout the child is killed and subprocess.TimeoutExpired is raised."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          encoding="utf-8", cwd=REPO, env=ENV, timeout=timeout)


def answers(address, timeout: float = 1.0) -> bool:
    """True if something accepts a TCP connection at `address` right now."""
    try:
        socket.create_connection(address, timeout=timeout).close()
        return True
    except OSError:
        return False


# ---- lesson 10 ------------------------------------------------------------------------------
# A clock the notebook moves by hand (limiters take clock=...), and memory measured honestly.


class FakeClock:
    """Lesson 10: a stand-in for time.monotonic that moves only when told: clock.advance(0.5)."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def memory_kept(build) -> tuple[object, int]:
    """Lesson 10: call build() and return (its result, bytes it allocated and still holds),
    measured with tracemalloc (slow while it runs: keep `build` small)."""
    import gc
    import tracemalloc
    gc.collect()
    tracemalloc.start()
    try:
        result = build()
        kept, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, kept


def flood_keys(count: int, start: int = 0) -> list[str]:
    """Lesson 10: `count` distinct made-up IPv4 addresses (10.x.y.z), as a flood would bring."""
    return [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(start, start + count)]


# -- end of lesson 10 -------------------------------------------------------------------------


# ---- lesson 11 ------------------------------------------------------------------------------
# Stopwatches for the timing-leak demo, the source's two flawed ideas rewritten for a live
# demonstration (an XOR compare, a fixation flag nobody sets), and a login client.

import json  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402


def median_times(compare, secret: bytes, *guesses: bytes, batches: int = 31,
                 number: int = 20) -> list[float]:
    """Lesson 11: the median seconds per call of compare(secret, guess) for each guess. The
    guesses are timed in turns, batch after batch, so a busy moment of the machine hits
    them all alike; the median ignores the batches an interruption spoiled."""
    samples = [[] for _ in guesses]
    for _ in range(batches):
        for guess, times in zip(guesses, samples):
            started = time.perf_counter_ns()
            for _ in range(number):
                compare(secret, guess)
            times.append((time.perf_counter_ns() - started) / number / 1e9)
    return [statistics.median(times) for times in samples]


def duration(seconds: float) -> str:
    """Lesson 11: '0.778 µs', '33.5 µs', '37.1 ms' (units the notebook's sanitizer knows)."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e6:.3g} µs"


def xor_compare(a: bytes, b: bytes) -> bool:
    """Lesson 11: the "constant-time" compare the source proposes, in our words: a length
    check that returns at once, then an XOR of every pair of bytes in a Python loop."""
    if len(a) != len(b):
        return False
    difference = 0
    for x, y in zip(a, b):
        difference |= x ^ y
    return difference == 0


class FlaggedSessions:
    """Lesson 11: the source's idea of fixation protection, in our words: each session has a
    `fixed` flag, and a session whose flag is set is refused -- but nothing ever sets it. The
    id a visitor got before logging in stays the id after login."""

    def __init__(self):
        self.sessions = {}
        self.lock = threading.Lock()

    def start(self) -> str:
        """An anonymous session, as a site hands to every visitor (and to an attacker)."""
        session_id = secrets.token_urlsafe(32)
        with self.lock:
            self.sessions[session_id] = {"user": None, "fixed": False}
        return session_id

    def login(self, session_id: str, user: str) -> str:
        with self.lock:  # the existing session is promoted: same id, now logged in
            self.sessions[session_id]["user"] = user
        return session_id

    def user(self, session_id: str):
        with self.lock:
            session = self.sessions.get(session_id)
            if session is None or session["fixed"]:  # never True: the check never fires
                return None
            return session["user"]


def login_request(user: str, password: str, cookie: str | None = None) -> bytes:
    """Lesson 11: the raw bytes of POST /login with a JSON body (and a Cookie header)."""
    body = json.dumps({"user": user, "password": password}).encode()
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    return (f"POST /login HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def cookie_request(method: str, path: str, cookie: str | None = None) -> bytes:
    """Lesson 11: GET /me or POST /logout (empty body), with the session cookie if given."""
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    length = "Content-Length: 0\r\n" if method == "POST" else ""
    return f"{method} {path} HTTP/1.1\r\nHost: lab\r\n{extra}{length}\r\n".encode()


def session_from(reply: bytes) -> str:
    """Lesson 11: 'session=ID' from a reply's Set-Cookie header (ready for a Cookie header)."""
    return (header(reply, "set-cookie") or "").split(";", 1)[0]


def masked(session: str) -> str:
    """Lesson 11: a session cookie with the random id hidden (it changes every run)."""
    name, _, value = session.partition("=")
    return f"{name}=<{len(value)} random characters>" if value else session


# ---- lesson 12 ------------------------------------------------------------------------------
# TLS for the notebook: throwaway certificates (trustme), clients that verify them, a relay
# that shows what an eavesdropper sees, and the source article's listening-socket TLS server.

import ssl  # noqa: E402


def tls_files(folder) -> tuple:
    """Lesson 12: a throwaway CA and a certificate for 127.0.0.1/localhost, written to
    `folder` as cert.pem and key.pem. Returns (ca, certfile, keyfile). Nothing is kept."""
    import trustme
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = Path(folder, "cert.pem"), Path(folder, "key.pem")
    issued.cert_chain_pems[0].write_to_path(str(certfile))
    issued.private_key_pem.write_to_path(str(keyfile))
    return ca, str(certfile), str(keyfile)


def tls_client(ca) -> ssl.SSLContext:
    """Lesson 12: a client context like a browser's (it checks the certificate and the
    name), trusting our throwaway CA and nothing else."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and host name
    ca.configure_trust(context)
    return context


def tls_exchange(address, context, *requests: bytes, timeout: float = 2.0) -> list[bytes]:
    """Lesson 12: exchange() over TLS: one connection, the handshake, each request and its
    reply. A failed handshake raises ssl.SSLError (or OSError)."""
    with socket.create_connection(address, timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        replies = []
        for data in requests:
            sock.sendall(data)
            replies.append(read_reply(sock, no_body=data.startswith(b"HEAD")))
        return replies


def timed_tls_get(address, context, timeout: float = 2.0) -> tuple[bool, float]:
    """Lesson 12: GET / over a new TLS connection: (answered 200?, seconds it took)."""
    started = time.perf_counter()
    try:
        reply = tls_exchange(address, context, b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n",
                             timeout=timeout)[0]
        ok = reply.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    return ok, time.perf_counter() - started


class Eavesdropper:
    """Lesson 12: a relay between a client and a server that keeps a copy of every byte the
    client sends: what anyone on the path (a Wi-Fi, a router) could read. Connect to
    .address instead of the server's; .seen holds the bytes."""

    def __init__(self, target):
        self.target, self.seen = target, bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.address = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lab-eavesdropper", daemon=True)
        self._thread.start()

    def _pipe(self, src, dst, keep: bool):
        try:
            while chunk := src.recv(65536):
                if keep:
                    self.seen += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _run(self):
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=2.0)
            client.settimeout(2.0)
            for src, dst, keep in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, keep), daemon=True).start()

    def close(self):
        self._stop.set()
        self._listener.close()
        self._thread.join(1.0)


def seed_style_tls_server(server_class, context, **kwargs):
    """Lesson 12: the source article's way, for the demo only: the LISTENING socket is
    wrapped, so accept() itself does each handshake, on the accept thread, with no deadline.
    (Its failures are logged by lesson 02's accept loop: give it a quiet logger.)"""

    class ListenerWrapped(server_class):
        def start(self):
            self._wrapped = threading.Event()
            super().start()
            self._wrapped.wait(2.0)  # .address reads the listener: the wrapped one
            return self

        def _accept_loop(self):  # runs in the accept thread, before its first accept()
            self._listener = context.wrap_socket(self._listener, server_side=True)
            self._wrapped.set()
            super()._accept_loop()

    return ListenerWrapped(**kwargs)


def metric_lines(text: bytes, *names: str) -> list[str]:
    """Lesson 12: the sample lines of a /metrics text whose names start with one of `names`
    (no comments, no *_created timestamps)."""
    return [line for line in text.decode().splitlines()
            if line.startswith(names) and "_created" not in line]


def requests_per_second(address, context, count: int, keep_alive: bool) -> float:
    """Lesson 12: `count` GET /hello.txt, one after another, on one kept-alive connection or a
    new connection each (context None: plain HTTP). Requests per second."""
    data = b"GET /hello.txt HTTP/1.1\r\nHost: lab\r\n\r\n"
    started = time.perf_counter()
    sock = None
    for _ in range(count):
        if sock is None:
            sock = socket.create_connection(address, timeout=2.0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(data)
        read_reply(sock)
        if not keep_alive:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return count / (time.perf_counter() - started)


def quiet_logger(name: str = "lab12") -> logging.Logger:
    """Lesson 12: a logger that keeps its records in .records instead of printing them
    (background threads never print into a notebook). Also quiets lesson 02's accept loop."""
    import logging as _logging
    logger = _logging.getLogger(name)
    if not hasattr(logger, "records"):
        logger.records = []
        handler = _logging.Handler()
        handler.emit = logger.records.append
        logger.addHandler(handler)
        logger.propagate = False
        accept = _logging.getLogger("solutions.lesson02_threads")
        accept.addHandler(handler)
        accept.propagate = False
    return logger


# ---- lesson 13 ------------------------------------------------------------------------------
# Many slow connections at once, an honest client's latency, and a stall measured.


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: "  # lesson 13: a head never finished


def hold_slow(address, count: int, head: bytes = SLOW_HEAD, admitted=None) -> list:
    """Lesson 13: `count` connections that each send part of a request head and then wait
    (a Slowloris crowd inside the header deadline). Close them with close_all().
    admitted: a callable giving the server's connection count; the crowd then never runs more
    than 8 connections ahead of the server's accept loop, because a full listen backlog
    (16 in lesson 01's make_listener) drops SYNs that the client resends only after 1 s."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=2.0)
        sock.sendall(head)
        socks.append(sock)
        if admitted is not None and len(socks) - admitted() > 8:
            wait_until(lambda: len(socks) - admitted() <= 2, timeout=2.0)
    return socks


def close_all(socks) -> None:
    """Lesson 13: close every socket of hold_slow()."""
    for sock in socks:
        sock.close()


def timed_get(address, target: str = "/healthz", timeout: float = 5.0) -> tuple[bool, float]:
    """Lesson 13: one GET on a fresh connection: (answered 200, seconds it took)."""
    started = time.perf_counter()
    try:
        reply = exchange(address, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close"
                                  f"\r\n\r\n".encode(), timeout=timeout)[0]
        ok = reply.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    return ok, time.perf_counter() - started


def honest_run(address, requests: int = 100) -> dict:
    """Lesson 13: `requests` GET /healthz one after another: p50 and p99 in seconds, failures."""
    results = [timed_get(address) for _ in range(requests)]
    times = sorted(took for ok, took in results if ok)
    pick = (lambda q: times[min(len(times) - 1, round(q * (len(times) - 1)))]) if times else None
    return {"p50": pick(0.5) if pick else None, "p99": pick(0.99) if pick else None,
            "failures": sum(1 for ok, _ in results if not ok)}


def latency_while(address, slow_target: str, delay: float = 0.1) -> tuple[float, bytes]:
    """Lesson 13: ask for `slow_target` on one connection; `delay` s later time a GET /healthz
    on another. Returns (that GET's seconds, the slow request's reply)."""
    slow = {}
    worker = threading.Thread(target=lambda: slow.update(reply=exchange(
        address, f"GET {slow_target} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), timeout=5.0)[0]),
        daemon=True)
    worker.start()
    time.sleep(delay)
    _, took = timed_get(address)
    worker.join(5.0)
    return took, slow.get("reply", b"")


def bench_rows(path) -> tuple[dict, list]:
    """Lesson 13: the committed benchmark file of tools/bench_models.py: (meta, rows)."""
    data = json.loads(Path(path).read_text())
    return data["meta"], data["rows"]


# -- end of lesson 13 -------------------------------------------------------------------------
