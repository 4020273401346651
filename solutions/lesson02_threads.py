"""Lesson 02 (reference): many clients at once, one thread each, and a clean stop.

`ThreadedServer` is the reusable part, shaped like CPython's socketserver: it owns the
listener, the accept loop and the bookkeeping, and calls `handle(conn, addr)` in a new thread
for every client. Subclasses only write `handle`. Lessons 04–06 build their servers on it.

    with ThreadedEchoServer(idle_timeout=30) as server:   # start() on enter, stop() on exit
        host, port = server.address
"""
from __future__ import annotations

import logging
import socket
import threading

from solutions.lesson01_lifecycle import make_listener

log = logging.getLogger(__name__)


class ThreadedServer:
    """Accept clients on loopback and serve each in its own daemon thread."""

    # How often the accept loop wakes up to check whether stop() was called. Shorter makes
    # stop() quicker; longer wakes the CPU less. A tenth of a second costs next to nothing.
    poll_interval = 0.1

    def __init__(self, host: str = "127.0.0.1", port: int = 0, idle_timeout: float = 30.0):
        self.host, self.port = host, port
        self.idle_timeout = idle_timeout
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards the two sets below: handler threads share them
        self._clients: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound: with port 0 the OS chose the port."""
        if self._listener is None:
            raise RuntimeError("the server is not started")
        return self._listener.getsockname()[:2]

    def start(self) -> "ThreadedServer":
        if self._listener is not None:
            raise RuntimeError("the server is already started")
        self._stopping.clear()
        self._listener = make_listener(self.host, self.port)
        self._listener.settimeout(self.poll_interval)
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"{type(self).__name__}-accept", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, free the port, disconnect clients and wait for every thread.

        Safe to call from any thread, and more than once."""
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._listener is not None:
            self._listener.close()  # the port is free from here on
            self._listener = None
        with self._lock:
            clients, threads = list(self._clients), list(self._threads)
        for conn in clients:
            try:  # wakes a handler blocked in recv(): it sees end-of-stream and returns
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        for thread in threads:
            thread.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # -- the accept loop and one thread per client -------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping.is_set():
            try:
                conn, addr = listener.accept()
            except TimeoutError:  # no client arrived this interval: check the stop flag again
                continue
            except OSError:
                if self._stopping.is_set():
                    break  # the listener was closed under us by stop()
                # EMFILE (out of file descriptors), ECONNABORTED, ...: one bad accept must not
                # end the loop for every client after it. Pause briefly so a persistent error
                # does not spin the CPU.
                log.exception("accept failed")
                self._stopping.wait(self.poll_interval)
                continue
            # Admission happens HERE, on the accept thread, before a thread exists for the
            # client: a flood of refused clients then costs no threads at all.
            if not self.admit(conn, addr):
                conn.close()
                continue
            thread = threading.Thread(target=self._serve_client, args=(conn, addr),
                                      name=f"client-{addr[0]}:{addr[1]}", daemon=True)
            with self._lock:
                self._clients.add(conn)
                self._threads.add(thread)
            try:
                thread.start()  # and straight back to accept(): never serve inside this loop
            except RuntimeError:  # "can't start new thread": the OS ran out of threads
                log.exception("cannot start a thread for %s:%s", addr[0], addr[1])
                with self._lock:
                    self._clients.discard(conn)
                    self._threads.discard(thread)
                conn.close()
                self.release(conn, addr)

    def _serve_client(self, conn: socket.socket, addr) -> None:
        try:
            with conn:
                # A timeout on every client socket: recv() raises TimeoutError instead of
                # waiting forever, so a silent client cannot keep this thread for good.
                conn.settimeout(self.idle_timeout)
                self.process(conn, addr)
        except TimeoutError as exc:  # idle too long (or, from lesson 05, too slow)
            log.info("%s:%s dropped: %s", addr[0], addr[1], type(exc).__name__)
        except ConnectionError as exc:  # the client left: closed, or reset the connection
            log.info("%s:%s disconnected (%s)", addr[0], addr[1], exc)
        except Exception:  # a bug in one handler must not take the server down
            log.exception("handler failed for %s:%s", addr[0], addr[1])
        finally:
            with self._lock:
                self._clients.discard(conn)
                self._threads.discard(threading.current_thread())
            self.release(conn, addr)

    # -- hooks for subclasses ----------------------------------------------------------------

    def admit(self, conn: socket.socket, addr) -> bool:
        """Called on the accept thread before a thread is started for the client: return
        False to turn it away (the loop then closes conn). It must never block, or one client
        would hold up every client behind it. Lesson 05 puts its cap on clients here."""
        return True

    def release(self, conn: socket.socket, addr) -> None:
        """Called in the client's thread once the connection is closed, however it ended:
        the place to give back whatever admit() took."""

    def process(self, conn: socket.socket, addr) -> None:
        """Serve one connection; exceptions propagate to _serve_client, which logs them."""
        self.handle(conn, addr)

    def handle(self, conn: socket.socket, addr) -> None:
        raise NotImplementedError("subclasses say what to do with a client")


class ThreadedEchoServer(ThreadedServer):
    """Echo every chunk back until the client closes or stays silent for idle_timeout."""

    def handle(self, conn: socket.socket, addr) -> None:
        while chunk := conn.recv(4096):
            conn.sendall(chunk)
