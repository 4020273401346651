"""Lesson 02 exercise: many clients with threads.  Notebook: lessons/02_threads.ipynb

Build a thread-per-client echo server with an idle timeout and a start/stop API:

    server = ThreadedEchoServer(idle_timeout=30).start()
    host, port = server.address      # the port the OS picked (port=0)
    ...
    server.stop()                    # port freed, clients disconnected, threads ended

Grade yourself with:   pytest exercises -k lesson02

You may reuse make_listener from lesson 01 (yours, or the reference:
`from solutions.lesson01_lifecycle import make_listener`).
"""
from __future__ import annotations

import socket
import threading


class ThreadedEchoServer:
    """Echo server: one daemon thread per client, an idle timeout per client, clean stop.

    What the graders also check:
    - every thread you start is a daemon thread, and all of them have ended when stop()
      returns (join them);
    - a client that leaves is forgotten: remove its socket and thread from your
      bookkeeping, or the server grows with every client it has ever served;
    - an accept() that fails (OSError, e.g. EMFILE "too many open files") does not end the
      accept loop: pause briefly (so a lasting error does not spin the CPU), then go on;
    - neither does a thread that cannot start (RuntimeError "can't start new thread"):
      close that client's connection and go on;
    - a client's thread ends normally however its client ends (silent, reset, gone): catch
      the error, close the connection, return. An exception escaping a thread is a crash.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, idle_timeout: float = 30.0):
        self.host, self.port = host, port
        self.idle_timeout = idle_timeout
        # You will need more state: the listening socket, the accept thread, a
        # threading.Event for "stop now", and the open client sockets and their threads.

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server is listening on."""
        raise NotImplementedError("address: return the listener's getsockname()[:2]")

    def start(self) -> "ThreadedEchoServer":
        """Listen on (host, port), run the accept loop in a daemon thread, return self."""
        raise NotImplementedError(
            "start(): make a listener, start a daemon thread running the accept loop, "
            "return self")

    def stop(self) -> None:
        """Stop accepting, close the listener (freeing the port), disconnect the clients and
        join every thread the server started. Calling it again, or before start(), does
        nothing."""
        raise NotImplementedError(
            "stop(): set a stop flag, close the listener, shut down client sockets, join threads")

    def handle(self, conn: socket.socket, addr) -> None:
        """Serve one client (in its own thread): echo every chunk until it closes. The socket
        must time out after idle_timeout seconds of silence, counted from the client's last
        byte. The timeout bounds your sends too: a client that never reads cannot hold the
        thread for ever."""
        raise NotImplementedError("handle(): settimeout(idle_timeout), then echo until recv returns b''")
