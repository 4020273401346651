"""Lesson 04 exercise: a secure-by-default message server.
Notebook: lessons/04_message_server.ipynb

Build a server that reads framed commands (lesson 03's protocol) and answers each one:

    time          ->  the current time, ISO-8601, e.g. "2025-01-31T12:00:00+00:00"
    echo <text>   ->  <text>
    upper <text>  ->  <TEXT>
    quit          ->  "bye", then the server closes the connection
    anything else ->  "error: unknown command"

and never trusts its input: a size cap before reading, an idle timeout, strip-and-truncate,
a whitelist of commands (never eval/exec/a shell). Grade yourself with:

    pytest exercises -k lesson04

Earlier building blocks are imported from the REFERENCE solutions, so this lesson does not
depend on your lessons 02 and 03 (swap in your own if you like):
"""
from __future__ import annotations

import logging
import socket
from datetime import datetime, timezone  # for the time command

from solutions.lesson02_threads import ThreadedServer  # or your own from lesson 02
from solutions.lesson03_framing import MAX_MSG, MessageTooLarge, recv_msg, send_msg  # or yours

MAX_TEXT = 500  # characters of a message to keep
UNKNOWN = "error: unknown command"
BAD_UTF8 = "error: invalid UTF-8"


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """Strip whitespace from both ends, THEN keep at most `limit` characters."""
    raise NotImplementedError("clean(): strip() the text, then cut it to `limit` characters")


def run_command(line: str) -> str:
    """Reply to one command line using a whitelist (a dict from command word to function).

    The command word is case-insensitive; split the line with line.split(maxsplit=1).
    "time" -> datetime.now(timezone.utc).isoformat(timespec="seconds"); "echo <text>" ->
    text; "upper <text>" -> text.upper(); anything else (also "") -> UNKNOWN.
    Never use eval, exec, os.system or subprocess: the text is data, not code.
    """
    raise NotImplementedError("run_command(): look the first word up in a dict of allowed "
                              "commands; unknown words get 'error: unknown command'")


class MessageServer(ThreadedServer):
    """Reads one framed message at a time and replies with one frame.

    ThreadedServer (lesson 02) gives you start()/stop(), a thread per client and the idle
    timeout (conn.settimeout(idle_timeout) before handle() is called). You write the rest.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_msg: int = MAX_MSG,
                 idle_timeout: float = 30.0, logger: logging.Logger | None = None):
        super().__init__(host, port, idle_timeout)
        self.max_msg = max_msg
        self.log = logger if logger is not None else logging.getLogger("message_server")

    def read_message(self, conn: socket.socket) -> str:
        """Read one message, refusing any frame over self.max_msg BEFORE reading its body."""
        raise NotImplementedError("read_message(): return recv_msg(conn, <the server's cap>)")

    def reply_to(self, text: str) -> str:
        """The reply to one cleaned message (the graders replace this to test error paths)."""
        return run_command(text)

    def handle(self, conn: socket.socket, addr) -> None:
        """Serve one client until it quits, misbehaves or goes away.

        - log "CONNECT <ip>:<port>" with self.log.info when it starts;
        - loop: text = self.read_message(conn);
            on MessageTooLarge: log a warning "DROP <ip>:<port> <why>" (the exception's
              message says why: the size announced and the limit) and return (hang up
              without reading the body);
            on UnicodeDecodeError: reply BAD_UTF8 and go on with the next message;
          then text = clean(text), log "MSG <ip>:<port> <repr(text) cut to 80 characters>";
          "quit" (any case): reply "bye" and return; otherwise reply self.reply_to(text);
        - log "CLOSE <ip>:<port>" however you leave (a try/finally).
        Let TimeoutError and ConnectionError propagate: ThreadedServer logs them and closes.
        """
        raise NotImplementedError("handle(): log CONNECT, loop read/clean/reply until quit, "
                                  "log CLOSE in a finally")
