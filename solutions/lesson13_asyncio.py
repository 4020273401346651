"""Lesson 13 (reference): the lesson 09 server again, on asyncio streams instead of threads.

Same application, same clocks, same cap; only the I/O model changes. A thread per client costs
a thread stack and a scheduler entry even while the client sleeps; an asyncio connection
costs a task, two stream objects and its buffers (a few KB). What does NOT change: a slow
client must still be dropped on a clock, and the cap must still answer at once.

    header deadline  asyncio.wait_for(reader.read(...), time left): one deadline, from the
                     request's first byte (asyncio.timeout() would do too, but is 3.11+)
    body deadline    the same, from the end of the head
    idle timeout     wait_for on the first byte of the next request
    send timeout     wait_for(writer.drain(), time left), with the transport's write buffer
                     limits lowered to 0 so drain() really waits for a client that does not
                     read; a response that misses it is ABORTED (close() would wait to flush)
    a cap            on open connections: over it, one write of a 503 + Retry-After, never
                     a drain (the refused client may never read)

The one rule asyncio adds: NOTHING may block the event loop. One thread runs every client, so
a blocking call (a file read, scrypt, a huge json.loads) stalls all of them for its whole
duration. The application here is ordinary blocking code (lesson 09's route), so it runs in a
worker thread (asyncio.to_thread), and so do file reads.

    with AsyncHTTPServer("solutions/site", max_clients=100) as server:   # a loop in a thread
        host, port = server.address
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from pathlib import Path

from solutions.lesson05_guarded_server import DeadlineExceeded
from solutions.lesson06_capstone import LOOPBACK
from solutions.lesson08_validation import (HttpError, Limits, body_length, error_response,
                                           head_end, log_safe, parse_head, safe_call)
from solutions.lesson09_slow_http import RETRY_AFTER_S, SITE, HardenedHTTPServer, is_head

CHUNK = 64 * 1024
REJECT_LINGER_S = 0.25  # a refused client's request is read for at most this long, then closed
WORKERS = 8  # threads for blocking work (the application, file reads); not one per client


# --------------------------------------------------------------------------- deadline readers


async def wait_for_request(reader: asyncio.StreamReader, buffer: bytearray,
                           idle_timeout: float) -> bool:
    """Wait up to idle_timeout for the first byte of the next request (unless `buffer` already
    holds one). False if the client closed instead; DeadlineExceeded if it stayed silent."""
    if buffer:
        return True
    try:
        chunk = await asyncio.wait_for(reader.read(CHUNK), idle_timeout)
    except asyncio.TimeoutError:  # not the built-in TimeoutError before Python 3.11
        raise DeadlineExceeded("idle: no request") from None
    buffer += chunk
    return bool(chunk)


async def _read_by(reader: asyncio.StreamReader, deadline: float, what: str) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"{what}: deadline passed")
    try:  # never wait past the deadline, however the bytes are spread out
        chunk = await asyncio.wait_for(reader.read(CHUNK), left)
    except asyncio.TimeoutError:
        raise DeadlineExceeded(f"{what}: deadline passed") from None
    if not chunk:
        raise ConnectionError(f"peer closed during the {what}")
    return chunk


async def read_head_by(reader: asyncio.StreamReader, buffer: bytearray, deadline: float,
                       limits: Limits = Limits()) -> bytes:
    """Read into `buffer` until it holds a whole request head, all of it by `deadline` (a
    time.monotonic() value); return the head and leave what follows in `buffer`.
    DeadlineExceeded when time runs out, HttpError 414/431 as soon as the head is too long,
    ConnectionError if the peer closes."""
    while True:
        end = head_end(buffer, limits)
        if end is not None:
            head = bytes(buffer[:end])
            del buffer[:end]
            return head
        buffer += await _read_by(reader, deadline, "request head")


async def read_body_by(reader: asyncio.StreamReader, buffer: bytearray, length: int,
                       deadline: float) -> bytes:
    """Exactly `length` body bytes, from `buffer` first, the rest by `deadline`."""
    while len(buffer) < length:
        buffer += await _read_by(reader, deadline, "request body")
    body = bytes(buffer[:length])
    del buffer[:length]
    return body


async def send_by(writer: asyncio.StreamWriter, data: bytes, deadline: float) -> None:
    """Write `data` and wait until the transport has handed it all to the kernel, by
    `deadline`. A client that never reads raises DeadlineExceeded: drain() alone would wait
    for ever, holding the connection."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("response: send deadline passed")
    writer.write(data)
    try:
        await asyncio.wait_for(writer.drain(), left)
    except asyncio.TimeoutError:
        raise DeadlineExceeded("response: the client is not reading") from None


async def send_file_by(writer: asyncio.StreamWriter, head: bytes, file, size: int,
                       deadline: float) -> None:
    """Send `head`, then exactly `size` bytes of `file`, all by `deadline`. Each read runs in
    a worker thread: a disk read is a blocking call, and on a slow disk (or a network file
    system) it would freeze every client of the loop."""
    left = size
    while left > 0:
        chunk = await asyncio.to_thread(file.read, min(CHUNK, left))
        if not chunk:
            raise ConnectionAbortedError(f"the file ended {left} bytes early")
        left -= len(chunk)
        await send_by(writer, head + chunk, deadline)
        head = b""
    if head:  # an empty file: the head alone
        await send_by(writer, head, deadline)


# --------------------------------------------------------------------------- the server


class AsyncHTTPServer:
    """Lesson 09's HardenedHTTPServer on one asyncio event loop (run in a background thread,
    so tests and notebooks can start() and stop() it like the threaded servers)."""

    def __init__(self, root=SITE, host: str = LOOPBACK, port: int = 0, *,
                 max_clients: int = 100, header_timeout: float = 10.0,
                 body_timeout: float = 30.0, idle_timeout: float = 5.0,
                 send_timeout: float = 10.0, max_body: int = 1 << 20, max_json_depth: int = 32,
                 limits: Limits = Limits(), backlog: int = 1024,
                 logger: logging.Logger | None = None):
        self.root = Path(root).resolve()
        self.host, self.port, self.backlog = host, port, backlog
        self.max_clients = max_clients
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.max_body = max_body
        self.max_json_depth = max_json_depth
        self.limits = limits
        self.log = logger or logging.getLogger("async_http_server")
        self.started = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._address = None
        self._error: BaseException | None = None
        self._active = 0  # admitted connections; only the loop's thread changes it
        self._tasks: set[asyncio.Task] = set()  # every connection's task, refused ones too
        self._writers: set[asyncio.StreamWriter] = set()

    # -- the application: lesson 09's, unchanged (it is ordinary blocking code) -------------

    route = HardenedHTTPServer.route
    check_before_body = HardenedHTTPServer.check_before_body
    health = HardenedHTTPServer.health
    json_reply = HardenedHTTPServer.__dict__["json_reply"]

    @property
    def active_connections(self) -> int:
        """Connections admitted and not yet closed, counted by the server itself. Not the
        number of tasks in the loop, nor of threads in the process: both count other things."""
        return self._active

    # -- a loop in a background thread: start(), stop(), address ---------------------------

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("the server is not started")
        return self._address

    def start(self) -> "AsyncHTTPServer":
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        ready = threading.Event()
        self._error, self._address = None, None
        self.loop = asyncio.new_event_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            WORKERS, thread_name_prefix=f"{type(self).__name__}-worker")
        self.loop.set_default_executor(self._executor)  # asyncio.to_thread uses it
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                        name=f"{type(self).__name__}-loop")
        self._thread.start()
        ready.wait()
        if self._error is not None:  # bind failed: report it here, in the caller's thread
            self._thread.join()
            self._thread = None
            self._executor.shutdown()
            raise self._error
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener, abort every connection (slow ones too), end the loop, and wait
        for its thread and the workers. Safe from any thread, and more than once."""
        thread = self._thread
        if thread is None:
            return
        try:
            self.loop.call_soon_threadsafe(self._stopping.set)
        except RuntimeError:  # the loop has already finished
            pass
        thread.join(timeout)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._thread, self._address = None, None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # a failed bind: start() re-raises it
            self._error = exc
        finally:
            ready.set()
            self.loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self.on_connection, self.host, self.port,
                                            backlog=self.backlog)
        self._address = server.sockets[0].getsockname()[:2]
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()  # no flush, no goodbye: a slow client cannot delay us
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=1.0)

    # -- one connection ----------------------------------------------------------------------

    async def on_connection(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        """Called by asyncio for every accepted connection, in a task of its own. The cap is
        checked first, before anything is spent on the client."""
        task = asyncio.current_task()
        self._tasks.add(task)
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        try:
            if self._active >= self.max_clients:
                await self.reject(reader, writer, peer)
                return
            self._active += 1
            self._writers.add(writer)
            try:
                # drain() waits only above the high-water mark: 0 makes it wait until every
                # byte written has left for the kernel, so the send timeout really bounds it.
                writer.transport.set_write_buffer_limits(high=0)
                await self.handle(reader, writer, peer)
                writer.close()
            except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
                self.log.info("%s dropped (%s)", peer, type(exc).__name__)
                writer.transport.abort()  # unsent bytes are dropped, not flushed for ever
            finally:
                self._writers.discard(writer)
                self._active -= 1
        except asyncio.CancelledError:  # stop(): end quietly (asyncio 3.11 would log it)
            writer.transport.abort()
        except Exception:  # a bug must end this connection, never the server
            self.log.exception("connection handler failed for %s", peer)
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def reject(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str) -> None:
        """503 + Retry-After, written once and never drained: a refused client that does not
        read cannot hold anything. Its request is read for a moment (closing on unread bytes
        sends a reset, which can destroy the 503 before the client reads it), then closed."""
        self.log.warning("REJECT %s at capacity (%d connections)", peer, self.max_clients)
        writer.write(error_response(503, [("Retry-After", str(RETRY_AFTER_S))], close=True))
        try:
            writer.write_eof()
            await asyncio.wait_for(reader.read(CHUNK), REJECT_LINGER_S)
        except (OSError, asyncio.TimeoutError):
            pass
        writer.transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str) -> None:
        """Requests until an error, a close, or the idle timeout."""
        buffer = bytearray()
        while True:
            try:
                if not await wait_for_request(reader, buffer, self.idle_timeout):
                    return  # the client closed between requests: the normal ending
            except DeadlineExceeded:
                self.log.info("%s idle for %s s: closing", peer, self.idle_timeout)
                return
            if not await self.serve_one(reader, writer, peer, buffer):
                return

    async def serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        peer: str, buffer: bytearray) -> bool:
        """Read, answer and log one request. True: the connection may carry another."""
        head, request = b"", None
        try:
            head = await read_head_by(reader, buffer, time.monotonic() + self.header_timeout,
                                      self.limits)
            request = parse_head(head, self.limits)
            length = body_length(request, self.max_body)  # 411/413 before any body byte
            self.check_before_body(request, peer)
            body = await read_body_by(reader, buffer, length,
                                      time.monotonic() + self.body_timeout)
        except HttpError as exc:
            await self.answer(writer, peer, head, error_response(
                exc.status, exc.headers, close=True, head=is_head(request)))
            return False
        except DeadlineExceeded as exc:
            self.log.info("%s too slow (%s): closing", peer, exc)
            await self.answer(writer, peer, head, error_response(408, close=True,
                                                                 head=is_head(request)))
            return False
        reply = await self.call_handler(request, body)
        await self.answer(writer, peer, head, reply, request)
        return request.keep_alive

    async def call_handler(self, request, body: bytes):
        """Run the application (blocking code: it opens files, parses JSON) in a worker
        thread, so the loop goes on serving every other client meanwhile."""
        return await asyncio.to_thread(safe_call, self.route, request, body, self.log)

    async def answer(self, writer, peer, head, reply, request=None) -> None:
        """Send reply (bytes, or (head bytes, open file, its size)) by one send deadline."""
        data, file, size = reply if isinstance(reply, tuple) else (reply, None, 0)
        deadline = time.monotonic() + self.send_timeout  # one deadline for the whole response
        try:
            if file is None:
                await send_by(writer, data, deadline)
            else:
                await send_file_by(writer, data, file, size, deadline)
        finally:
            if file is not None:
                file.close()
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        agent = request.get("user-agent", "-") if request else "-"
        self.log.info('ACCESS %s "%s" %s "%s"', peer, log_safe(line), data[9:12].decode(),
                      log_safe(agent))
