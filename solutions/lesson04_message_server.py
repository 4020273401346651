"""Lesson 04 (reference): a secure-by-default message server.

The server speaks lesson 03's framed protocol and answers three commands. Every input is
limited before it is used:

    size      read_message() refuses a frame over max_msg before reading its body
    time      the idle timeout (from ThreadedServer) drops a client that goes silent
    length    clean() strips a message and cuts it to MAX_TEXT characters
    meaning   run_command() knows three words; anything else is "error: unknown command".
              Nothing a client sends is ever evaluated as code or handed to a shell.

    with MessageServer(idle_timeout=30) as server:
        request(*server.address, ["echo hi", "time", "quit"])   # ['hi', '2025-...', 'bye']
"""
from __future__ import annotations

import logging
import socket
from datetime import datetime, timezone

from solutions.lesson02_threads import ThreadedServer
from solutions.lesson03_framing import MAX_MSG, MessageTooLarge, recv_msg, send_msg

MAX_TEXT = 500  # characters of a message we keep; the rest is cut off
LOG_TEXT = 80  # characters of a message we show in the log, so one client cannot flood it
UNKNOWN = "error: unknown command"
BAD_UTF8 = "error: invalid UTF-8"


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """Strip surrounding whitespace, then keep at most `limit` characters.

    Strip first: otherwise a message padded with spaces would use up the limit on nothing.
    """
    return text.strip()[:limit]


def _now(_text: str) -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# The whitelist. A client chooses WHICH of these functions runs; it never supplies code.
COMMANDS = {
    "time": _now,
    "echo": lambda text: text,
    "upper": lambda text: text.upper(),
}


def run_command(line: str) -> str:
    """Answer one command line: a command word (any case), then optional text.

    Anything that is not a known word -- an empty line, a Python expression, shell syntax --
    gets the same dull reply. The text after the word is data: it is returned or upper-cased,
    never evaluated, so `echo $(rm -rf ~)` just echoes those characters back.
    """
    parts = line.split(maxsplit=1)
    if not parts:
        return UNKNOWN
    action = COMMANDS.get(parts[0].lower())
    if action is None:
        return UNKNOWN
    return action(parts[1] if len(parts) > 1 else "")


class MessageServer(ThreadedServer):
    """A threaded server that reads framed commands and replies to each with one frame.

    A client says "quit" to leave (the server answers "bye"). Every connection, message and
    disconnection is logged with the peer's address, so an operator can see who did what.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_msg: int = MAX_MSG,
                 idle_timeout: float = 30.0, logger: logging.Logger | None = None):
        super().__init__(host, port, idle_timeout)
        self.max_msg = max_msg
        self.log = logger if logger is not None else logging.getLogger("message_server")

    def read_message(self, conn: socket.socket) -> str:
        """One message from the client. Lesson 05 overrides this to add a deadline."""
        return recv_msg(conn, self.max_msg)

    def reply_to(self, text: str) -> str:
        """The answer to one cleaned message (a separate method so it can be replaced)."""
        return run_command(text)

    def handle(self, conn: socket.socket, addr) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        self.log.info("CONNECT %s", peer)
        try:
            while True:
                try:
                    text = self.read_message(conn)
                except MessageTooLarge as exc:
                    # The body is still unread, so the stream is out of step: we cannot find
                    # the next frame. Hanging up is the only safe move (and it costs us nothing).
                    self.log.warning("DROP %s %s", peer, exc)
                    return
                except UnicodeDecodeError:
                    # The whole frame was read, so the next one starts cleanly: say so, go on.
                    send_msg(conn, BAD_UTF8)
                    continue
                text = clean(text)
                # repr() turns a newline into "\n", so a message cannot forge a log line.
                self.log.info("MSG %s %s", peer, repr(text)[:LOG_TEXT])
                if text.lower() == "quit":
                    send_msg(conn, "bye")
                    return
                send_msg(conn, self.reply_to(text))
        finally:  # every way out -- quit, drop, timeout, reset, a bug -- is logged
            self.log.info("CLOSE %s", peer)
