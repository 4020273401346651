"""Lesson 01 exercise: the server lifecycle.  Notebook: lessons/01_server_lifecycle.ipynb

Implement the three functions below, then grade yourself:

    pytest exercises -k lesson01

Each function raises NotImplementedError until you replace its body.
"""
from __future__ import annotations

import socket


def make_listener(host: str = "127.0.0.1", port: int = 0, backlog: int = 16) -> socket.socket:
    """Return a TCP socket listening on (host, port), with SO_REUSEADDR set before bind.

    Defaults: loopback only ("127.0.0.1") and port 0 (the OS picks a free port).
    If bind or listen fails (the port is taken), close the new socket, then let the
    OSError propagate.
    """
    raise NotImplementedError(
        "make_listener(): create a TCP socket, set SO_REUSEADDR, bind to (host, port), "
        "listen(backlog), return it")


def serve_one_echo(listener: socket.socket, timeout: float = 5.0) -> int:
    """Accept ONE client on `listener`, send back every byte it sends until it stops sending
    (recv returns b""), close the client's socket and return how many bytes were echoed.

    Use `timeout` for the accept and for every recv: if no client comes, or the client goes
    silent for `timeout` seconds, give up with TimeoutError (closing the client's socket).
    The client may be slow to read: every byte must still get through.
    """
    raise NotImplementedError(
        "serve_one_echo(): accept one client, echo every chunk until recv returns b'', "
        "close it, return the byte count")


def echo_once(host: str, port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Connect to (host, port), send all of `data`, shut down the sending side
    (socket.SHUT_WR), then return everything received until the server closes.

    Every step is bounded by `timeout` (a silent server: TimeoutError). A reset connection
    raises its error (ConnectionResetError, or the OSError the socket reports): never return
    a reply that was cut off as if it were whole."""
    raise NotImplementedError(
        "echo_once(): connect, sendall(data), shutdown(SHUT_WR), recv until b'', return it")
