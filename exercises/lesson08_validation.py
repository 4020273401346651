"""Lesson 08 exercise: validate requests, and fail safely.
Notebook: lessons/08_validating_requests.ipynb

Sans-IO, in the style of h11 (python-hyper): no function here touches a socket. Each takes
bytes or strings and returns a value or raises HttpError(status), so the graders test the
rules with plain bytes, and lesson 09 wraps them in deadlines and caps.

    request = parse_head(b"POST /echo HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 7\\r\\n\\r\\n")
    length = body_length(request, max_body=1 << 20)   # before reading ANY of the body
    data = parse_json(body, max_depth=32)
    wire = render_response(200, [("Content-Type", "application/json")], b'{"ok":true}')

Grade yourself with:

    pytest exercises -k lesson08

Nothing from earlier lessons is needed. Limits, HttpError, Request and the regular
expressions below are given; the functions are yours.
"""
from __future__ import annotations

import email.utils
import http
import json
import logging
import re
import secrets
from dataclasses import dataclass, field

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                           "TRACE", "PATCH"})
SERVER_NAME = "course-http"  # no product version, no Python version: nothing to look up


@dataclass(frozen=True)
class Limits:
    """Every size the parser accepts; all bounds are in bytes except max_headers."""
    max_request_line: int = 8190
    max_header_bytes: int = 16384  # all header lines together, after the request line
    max_headers: int = 100
    methods: tuple = ("GET", "HEAD", "POST")  # the allowlist: what this server serves


class HttpError(Exception):
    """A request we refuse: the status to answer, headers the answer needs (405 needs
    Allow). `reason` is for the log only; the client gets a generic page."""

    def __init__(self, status: int, reason: str = "", headers=()):
        super().__init__(f"{status} {reason}".strip())
        self.status = status
        self.reason = reason
        self.headers = list(headers)


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list = field(default_factory=list)  # [(lower-case name, value)] in order

    def get_all(self, name: str) -> list:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def get(self, name: str, default=None):
        values = self.get_all(name)
        return values[0] if values else default

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told "close"; HTTP/1.0 closes unless asked."""
        tokens = {t.strip().lower() for v in self.get_all("connection") for t in v.split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens


TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a method or a header name (RFC 9110)
REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # no CR, LF, NUL or other controls
DIGITS = re.compile(r"[0-9]+")  # NOT int(): int() accepts "+5", " 5", "1_0" and "٣"
HEAD_END = b"\r\n\r\n"
JSON_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # a whole string, or a bracket


def head_end(buffer, limits: Limits = Limits()) -> int | None:
    """The index just past CRLF CRLF in `buffer`, or None if the head is not complete yet.

    Called while a head is still arriving, so it refuses early: no CRLF yet and more than
    max_request_line (+1 for a lone CR) bytes -> HttpError(414); a CRLF further in than
    max_request_line -> 414; no blank line yet and already max_request_line + 2 +
    max_header_bytes + 4 bytes (the largest head that fits, so it can no longer complete)
    -> HttpError(431).
    """
    raise NotImplementedError("head_end(): find CRLF CRLF; 414/431 once the unfinished head "
                              "is already over the limits")


def parse_head(data: bytes, limits: Limits = Limits()) -> Request:
    """Parse one request head (with or without its final CRLF CRLF) into a Request.

    Sizes first (cheap, and they bound the rest):
      request line longer than limits.max_request_line -> 414;
      header lines (everything after the first CRLF) longer than max_header_bytes, or more
      than max_headers of them -> 431.
    Then syntax, all -> 400 (decode with latin-1: every byte maps to one character):
      REQUEST_LINE.fullmatch (exactly one space between the three parts); the target must
      start with "/"; every header line "Name: value" with TOKEN.fullmatch(name) (so no
      space before the colon and no folded line) and FIELD_VALUE.fullmatch(value stripped
      of spaces and tabs). A version other than HTTP/1.0 or HTTP/1.1 -> 505.
    Then meaning: method not in KNOWN_METHODS -> 501; not in limits.methods -> 405 with
    headers=[("Allow", ", ".join(limits.methods))]; two Host headers, or HTTP/1.1 without
    Host -> 400. Header names are stored lower-case.
    """
    raise NotImplementedError("parse_head(): sizes (414, 431), then syntax (400, 505), "
                              "then meaning (501, 405 with Allow, Host)")


def body_length(request: Request, max_body: int) -> int:
    """How many body bytes to read, from the head alone -- before reading any body.

    Transfer-Encoding AND Content-Length -> 400 (request smuggling: two parsers picking
    different ones disagree on where the request ends). Transfer-Encoding alone -> 501 (we
    implement no transfer coding). Content-Length more than once -> 400. A value that is not
    all ASCII digits -> 400 (DIGITS.fullmatch). Over max_body -> 413 (compare the number of
    digits first: int() of 5000 digits is an error on Python 3.11+). No Content-Length:
    411 for POST, PUT and PATCH, else 0.
    """
    raise NotImplementedError("body_length(): CL+TE 400, TE 501, two CL 400, digits only, "
                              "413 over the cap, 411 for a POST without a length")


def check_json_type(content_type: str | None) -> None:
    """Return None if the media type (before any ";") is application/json, in any case;
    otherwise raise HttpError(415)."""
    raise NotImplementedError("check_json_type(): application/json or HttpError(415)")


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { in `text`, not counting brackets inside strings: walk
    JSON_STRUCTURE.finditer(text), +1 on "[" or "{", -1 on "]" or "}", keep the maximum.
    A flat loop: a million "[" cost a loop, not a million stack frames."""
    raise NotImplementedError("json_depth(): count brackets outside strings, keep the maximum")


def parse_json(body: bytes, max_depth: int):
    """Decode a JSON body (its size is already capped): UTF-8 only; json_depth(text) >
    max_depth -> 400 BEFORE json.loads (which recurses once per level); NaN and Infinity
    refused (json.loads(..., parse_constant=a function that raises)); any ValueError ->
    HttpError(400)."""
    raise NotImplementedError("parse_json(): UTF-8, depth check before json.loads, 400 for "
                              "anything invalid")


def security_headers() -> list:
    """[(name, value)] for EVERY response, errors included:
    X-Content-Type-Options: nosniff; Content-Security-Policy with default-src 'self' and
    frame-ancestors 'none'; Referrer-Policy: no-referrer. Not X-XSS-Protection (or only
    "0"), not Strict-Transport-Security (it belongs on TLS). The notebook says why."""
    raise NotImplementedError("security_headers(): nosniff, a CSP with frame-ancestors "
                              "'none', Referrer-Policy")


# The reason phrases of RFC 9110, fixed here so the bytes we send are the same on every Python
# (3.13's http.HTTPStatus renamed 413 and 414 to these names; 3.10-3.12 use older ones).
PHRASES = {
    200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


def phrase(status: int) -> str:
    """The reason phrase for a status line or an error page (use it: not http.HTTPStatus)."""
    return PHRASES.get(status) or http.HTTPStatus(status).phrase


def render_response(status: int, headers=(), body: bytes = b"", *, length: int | None = None,
                    close: bool = False) -> bytes:
    """The bytes of a response: f"HTTP/1.1 {status} {phrase(status)}" (the table above), then
    `headers`, security_headers(), ("Server", SERVER_NAME), a Date
    (email.utils.formatdate(usegmt=True)), Content-Length (len(body), or `length` if given:
    a HEAD answer, or a file sent separately), "Connection: close" if close; CRLF between
    lines, CRLF CRLF, then body. Any name or value containing CR, LF or NUL raises
    ValueError: that would let a value write headers of its own (response splitting)."""
    raise NotImplementedError("render_response(): status line, headers + security headers "
                              "+ Server/Date/Content-Length, refuse CR/LF/NUL")


def error_body(status: int) -> bytes:
    return f"{status} {phrase(status)}\n".encode("ascii")


def error_response(status: int, headers=(), *, close: bool = False, head: bool = False) -> bytes:
    """A generic error page: text/plain, body error_body(status) and nothing from the
    request; head=True sends the headers (Content-Length of that body) and no body."""
    raise NotImplementedError("error_response(): render_response with error_body(status)")


def internal_error(log: logging.Logger) -> bytes:
    """Call inside an `except`: incident = secrets.token_hex(8); log.error("incident %s: ...",
    incident, exc_info=True) (the traceback goes to the LOG); return a 500 whose body is
    only "500 Internal Server Error\\nincident <id>\\n"."""
    raise NotImplementedError("internal_error(): log the traceback under an incident id, "
                              "show only the id")


def safe_call(handler, request: Request, body: bytes, log: logging.Logger) -> bytes:
    """return handler(request, body); an HttpError becomes error_response(status, its
    headers, head=request.method == "HEAD"); any other exception internal_error(log)."""
    raise NotImplementedError("safe_call(): HttpError -> its page; any other exception -> "
                              "internal_error")


def log_safe(text, limit: int = 300) -> str:
    """str(text) safe for one log line: every character that is not printable
    (not c.isprintable(): CR, LF, ESC, NUL, DEL, U+2028...) and the backslash itself become
    repr-style escapes (c.encode("unicode_escape").decode("ascii")); text longer than
    `limit` is cut there and "..." added."""
    raise NotImplementedError("log_safe(): escape every non-printable character and the "
                              "backslash; cut at limit")
