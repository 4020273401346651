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
    """Return exactly n bytes from sock, looping over short reads.
    Raise ConnectionError if the peer closes before n bytes have arrived."""
    raise NotImplementedError("recv_exact(): loop on recv until you have n bytes; "
                              "raise ConnectionError on b''")


def send_msg(sock: socket.socket, text: str) -> None:
    """Send text as one frame: struct.pack('!I', len(body)) + body, body = UTF-8 bytes."""
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
    Return the replies in order."""
    raise NotImplementedError("request(): connect with a timeout, send_msg + recv_msg per text")
