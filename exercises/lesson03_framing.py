"""Lesson 03 exercise: framing with a length prefix.  Notebook: lessons/03_framing.ipynb

The protocol: a 4-byte big-endian unsigned length (struct format "!I"), then that many
bytes of UTF-8 text. Implement the four functions below, then grade yourself:

    pytest exercises -k lesson03
"""
from __future__ import annotations

import socket
import struct

MAX_MSG = 64 * 1024  # the largest body recv_msg agrees to read, in bytes


class MessageTooLarge(ValueError):
    """Raised by recv_msg when the announced length is over the cap (before reading the body)."""


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Return exactly n bytes from sock, looping over short reads, asking recv() only for
    the bytes still missing (more would swallow the start of the next message).
    Raise ConnectionError if the peer closes (or resets) before n bytes have arrived; let the
    socket's TimeoutError propagate if it goes silent: never return part of the bytes."""
    raise NotImplementedError("recv_exact(): loop on recv until you have n bytes; "
                              "raise ConnectionError on b''")


def send_msg(sock: socket.socket, text: str) -> None:
    """Send text as one frame: struct.pack('!I', len(body)) + body, body = UTF-8 bytes.
    All of it, even when the peer reads slowly (send() may write only part; sendall() won't)."""
    raise NotImplementedError("send_msg(): sendall a 4-byte '!I' length, then the UTF-8 body")


def recv_msg(sock: socket.socket, max_size: int = MAX_MSG) -> str:
    """Read one frame and return its text.

    - raise MessageTooLarge if the length is over max_size, WITHOUT reading the body;
    - raise ConnectionError if the connection ends mid-frame (never return "");
    - decode strictly: invalid UTF-8 raises UnicodeDecodeError.
    """
    raise NotImplementedError("recv_msg(): read 4 bytes, unpack '!I', check the cap, "
                              "then read and decode the body")


def request(host: str, port: int, texts: list[str], timeout: float = 5.0) -> list[str]:
    """Connect once, and for each text send it as a frame and read one reply frame.
    Return the replies in order.

    `timeout` bounds every step (a silent server: TimeoutError). A connection that is reset
    raises its error (ConnectionResetError, or the OSError the socket reports): never return
    the replies so far as if the exchange had worked."""
    raise NotImplementedError("request(): connect with a timeout, send_msg + recv_msg per text")
