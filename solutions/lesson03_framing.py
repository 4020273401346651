"""Lesson 03 (reference): framing — turning TCP's byte stream back into messages.

The protocol, used by every later lesson:

    +----------------------+---------------------------+
    | length: 4 bytes,     | body: `length` bytes of   |
    | big-endian unsigned  | UTF-8 text                |
    +----------------------+---------------------------+

`encode_frame` and `parse_length` are pure (no sockets), so they can be tested on their own;
`send_msg`, `recv_exact` and `recv_msg` do the I/O.
"""
from __future__ import annotations

import socket
import struct

HEADER = struct.Struct("!I")  # "!" network byte order (big-endian), "I" unsigned 32-bit
MAX_MSG = 64 * 1024  # the largest body we agree to read, in bytes


class MessageTooLarge(ValueError):
    """The peer announced a body larger than we accept. Raised before reading the body."""


def encode_frame(text: str) -> bytes:
    body = text.encode("utf-8")
    return HEADER.pack(len(body)) + body


def parse_length(header: bytes, max_size: int = MAX_MSG) -> int:
    """The body length announced by a 4-byte header, refused if it is over `max_size`."""
    (length,) = HEADER.unpack(header)
    if length > max_size:
        raise MessageTooLarge(f"announced {length} bytes; the limit is {max_size}")
    return length


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes. recv() may return any amount from 1 byte up, so loop.

    Raises ConnectionError if the peer closes first: a half message is not a message.
    """
    buffer = bytearray()  # appending to a bytearray is cheap; bytes += bytes copies every time
    while len(buffer) < n:
        # Ask only for what is still missing, and never more than 64 KiB at once: recv(k)
        # sets aside k bytes of memory before any data arrives.
        chunk = sock.recv(min(n - len(buffer), 65536))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buffer)} of {n} bytes")
        buffer += chunk
    return bytes(buffer)


def send_msg(sock: socket.socket, text: str) -> None:
    sock.sendall(encode_frame(text))


def recv_msg(sock: socket.socket, max_size: int = MAX_MSG) -> str:
    """Read one message. The size check comes *before* the body is read, so a forged 4 GiB
    length costs us four bytes, not four gigabytes.

    Raises MessageTooLarge, ConnectionError (closed mid-frame), or UnicodeDecodeError: we
    decode strictly rather than with errors="replace", which would silently change the data.
    """
    length = parse_length(recv_exact(sock, HEADER.size), max_size)
    return recv_exact(sock, length).decode("utf-8")


def request(host: str, port: int, texts: list[str], timeout: float = 5.0) -> list[str]:
    """The client half: send each text over one connection and collect one reply for each."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        replies = []
        for text in texts:
            send_msg(sock, text)
            replies.append(recv_msg(sock))
        return replies
