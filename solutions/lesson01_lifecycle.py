"""Lesson 01 (reference): the server lifecycle — create, bind, listen, accept, handle, close.

Three small pieces that together make the simplest possible conversation over TCP:

    listener = make_listener()                 # create + bind + listen, on loopback
    serve_one_echo(listener)                   # accept one client, echo, close  (server side)
    echo_once("127.0.0.1", port, b"hi")        # connect, send, half-close, read (client side)
"""
from __future__ import annotations

import socket


def make_listener(host: str = "127.0.0.1", port: int = 0, backlog: int = 16) -> socket.socket:
    """Return a TCP socket listening on (host, port).

    Loopback by default: only programs on this machine can connect. Port 0 asks the operating
    system for any free port; read the real one back with listener.getsockname()[1].
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Without SO_REUSEADDR a restarted server can fail with "Address already in use" while
        # the old connections linger in TIME_WAIT. (On Windows this option means something
        # riskier — another process may bind the same port — so Windows code should not set it.)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(backlog)
    except OSError:
        listener.close()  # do not leak the socket when bind fails (port taken, bad address)
        raise
    return listener


def serve_one_echo(listener: socket.socket, timeout: float = 5.0) -> int:
    """Accept one client, send back every byte it sends until it stops sending, then close.

    Returns the number of bytes echoed. `timeout` bounds both the wait for a client and each
    wait for data, so a client that never comes or never speaks cannot block us forever.
    """
    listener.settimeout(timeout)
    conn, _addr = listener.accept()  # a NEW socket, just for this client
    echoed = 0
    with conn:  # closes the client's socket however we leave this block
        conn.settimeout(timeout)
        while True:
            chunk = conn.recv(4096)
            if not chunk:  # b"" means the client has finished sending
                return echoed
            conn.sendall(chunk)  # sendall, not send: send may write only part of the chunk
            echoed += len(chunk)


def echo_once(host: str, port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Connect, send `data`, say "I am done sending", and return everything the server sends
    back before it closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        # Half-close: our direction ends (the server's recv returns b""), theirs stays open.
        sock.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while chunk := sock.recv(4096):
            reply += chunk
        return bytes(reply)
