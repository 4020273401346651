"""Lesson 08 (reference): validating requests and failing safely -- sans-IO.

Nothing here touches a socket. Every function takes bytes or strings and returns values or
raises HttpError(status): the same style as h11 (python-hyper), which keeps the protocol
rules testable with plain bytes in a table, and lets lesson 09 put any I/O policy around
them (deadlines, caps) without touching the rules.

    request = parse_head(b"POST /echo HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 7\\r\\n\\r\\n")
    length = body_length(request, max_body=1 << 20)   # 7; raises HttpError(413) for 2 GiB
    data = parse_json(body, max_depth=32)
    wire = render_response(200, [("Content-Type", "application/json")], b'{"ok":true}')

What each refusal protects:

    414 / 431   a request line or header section larger than we will buffer
    400         anything malformed; HTTP/1.1 without Host; CL twice or together with TE
    405 / 501   a method we do not serve (with Allow) / do not even know
    411 / 413   a POST without a length / a length over the cap, BEFORE a byte of body is read
    415         a body in a type we do not parse
    500         our own bug: a generic page and an incident id in the log, never a traceback
"""
from __future__ import annotations

import email.utils
import http
import json
import logging
import math
import re
import secrets
from dataclasses import dataclass, field

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                           "TRACE", "PATCH"})
SERVER_NAME = "course-http"  # no product version, no Python version: nothing to look up


@dataclass(frozen=True)
class Limits:
    """Every size the parser accepts; all bounds are in bytes except max_headers."""
    max_request_line: int = 8190  # nginx's default large_client_header_buffers is 8 KiB
    max_header_bytes: int = 16384  # all header lines together, after the request line
    max_headers: int = 100
    methods: tuple = ("GET", "HEAD", "POST")  # the allowlist: what this server serves


class HttpError(Exception):
    """A request we refuse, with the status to answer and any headers the answer needs
    (405 needs Allow). The client gets a generic page; `reason`, if given, is for your own
    logs (the course's code says why in a comment beside each raise instead)."""

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


# RFC 9110 "token": the characters allowed in a method and in a header name.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
# A header value: visible characters, spaces, tabs and obs-text; no CR, LF, NUL or other controls.
FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
DIGITS = re.compile(r"[0-9]+")  # NOT int(): int() accepts "+5", " 5", "1_0" and "٣"
HEAD_END = b"\r\n\r\n"


def head_end(buffer, limits: Limits = Limits()) -> int | None:
    """Where the head (request line + headers + blank line) ends in `buffer`: the index just
    past CRLF CRLF, or None if more bytes are needed. Raises HttpError 414/431 as soon as the
    incomplete head is already too long, so a reader never buffers more than the limits."""
    end = buffer.find(HEAD_END)
    line_end = buffer.find(b"\r\n")
    if line_end == -1 and len(buffer) > limits.max_request_line + 1:  # +1: a lone CR
        raise HttpError(414)  # request line too long
    if line_end > limits.max_request_line:
        raise HttpError(414)  # request line too long
    if end == -1:
        # The largest head that fits: line, CRLF, header lines, CRLF CRLF. One byte short of
        # it may still complete; anything longer cannot.
        if len(buffer) >= limits.max_request_line + 2 + limits.max_header_bytes + 4:
            raise HttpError(431)  # header section too large
        return None
    return end + len(HEAD_END)


def parse_head(data: bytes, limits: Limits = Limits()) -> Request:
    """Parse a request head (with or without its final CRLF CRLF) into a Request.

    Checks sizes first (cheap, and bounds the rest), then syntax, then meaning:
    414 request line too long; 431 header section too large or too many headers;
    400 malformed (bare CR or LF, spaces around names, folded lines, control characters,
    a target that is not a path, two Host headers, HTTP/1.1 without Host);
    505 an HTTP version other than 1.0/1.1; 501 an unknown method; 405 (with Allow) a known
    method this server does not serve.
    """
    data = bytes(data)
    if data.endswith(HEAD_END):
        data = data[:-len(HEAD_END)]
    line, _, rest = data.partition(b"\r\n")
    if len(line) > limits.max_request_line:
        raise HttpError(414)  # request line too long
    if len(rest) > limits.max_header_bytes:
        raise HttpError(431)  # header section too large
    lines = rest.split(b"\r\n") if rest else []
    if len(lines) > limits.max_headers:
        raise HttpError(431)  # too many header fields

    match = REQUEST_LINE.fullmatch(line.decode("latin-1"))
    if match is None:
        raise HttpError(400)  # malformed request line
    method, target, version = match.groups()
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505)  # unsupported version {version}
    if not target.startswith("/"):
        raise HttpError(400)  # target is not a path; no absolute-form, no "*"

    headers = []
    for raw in lines:
        text = raw.decode("latin-1")
        name, colon, value = text.partition(":")
        if not colon or not TOKEN.fullmatch(name):  # "Name : v", " Name: v" (a fold), "Na me"
            raise HttpError(400)  # malformed header line
        value = value.strip(" \t")
        if not FIELD_VALUE.fullmatch(value):  # a bare CR or LF, NUL, other controls
            raise HttpError(400)  # control character in a header value
        headers.append((name.lower(), value))

    if method not in KNOWN_METHODS:
        raise HttpError(501)  # unknown method {method[:20]}
    if method not in limits.methods:
        raise HttpError(405, headers=[("Allow", ", ".join(limits.methods))])
    request = Request(method, target, version, headers)
    hosts = request.get_all("host")
    if len(hosts) > 1:
        raise HttpError(400)  # more than one Host
    if version == "HTTP/1.1" and not hosts:
        raise HttpError(400)  # HTTP/1.1 requires Host
    return request


def body_length(request: Request, max_body: int) -> int:
    """How many body bytes to read, decided from the head alone -- before reading any body.

    - Transfer-Encoding together with Content-Length: 400. Two parsers (a proxy and us) that
      pick different ones see different request boundaries: request smuggling.
    - Transfer-Encoding alone: 501 -- we implement no transfer coding (RFC 9112 6.1 says 501
      for a coding the server does not understand; 411 would wrongly suggest the request is
      fine with a length added, which a chunked sender may not be able to give).
    - Content-Length more than once: 400, even if the copies agree (RFC 9112 allows either;
      refusing removes the ambiguity for every parser in the chain).
    - Content-Length not all ASCII digits: 400 ("+5", "-1", "1_0", " 5x", "0x10", "٣").
    - over max_body: 413. No Content-Length on POST/PUT/PATCH: 411; on others: 0.
    """
    lengths = request.get_all("content-length")
    codings = request.get_all("transfer-encoding")
    if codings and lengths:
        raise HttpError(400)  # both Content-Length and Transfer-Encoding
    if codings:
        raise HttpError(501)  # Transfer-Encoding not supported
    if len(lengths) > 1:
        raise HttpError(400)  # more than one Content-Length
    if not lengths:
        if request.method in ("POST", "PUT", "PATCH"):
            raise HttpError(411)  # length required
        return 0
    text = lengths[0]
    if not DIGITS.fullmatch(text):
        raise HttpError(400)  # invalid Content-Length
    # Compare the digit strings' lengths before converting: int() refuses more than 4300
    # digits with a ValueError (3.10.7+), which would escape as a crash instead of a 413.
    # Leading zeros are stripped first, so "000...0002" is still the number 2.
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(max_body)) or int(digits) > max_body:
        raise HttpError(413)  # body over the cap
    return int(digits)


def check_json_type(content_type: str | None) -> None:
    """415 unless the media type is application/json (parameters such as charset allowed)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise HttpError(415)  # expected application/json


# The only characters that matter for nesting: brackets, quotes and backslashes. One pass of
# a one-character class is linear in the body's size. (A regex that matches whole strings,
# "[^"\\]*(?:\\.[^"\\]*)*", backtracks on an unterminated string: about n*n steps, with
# the GIL held, so a 24 KB body froze every thread of the server for seconds.)
JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { in `text`, ignoring brackets inside strings. A flat,
    linear scan: a million "[" cost a loop, not a million stack frames, and no input makes
    it slower than one look at each special character."""
    depth = deepest = 0
    in_string = False
    skip = -1  # the position right after a backslash: that character is escaped
    for match in JSON_SPECIAL.finditer(text):
        position, char = match.start(), match.group()
        if position == skip:
            continue
        if in_string:
            if char == "\\":
                skip = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf, which json.dumps writes as Infinity
        raise ValueError(f"{text} is out of range")
    return value


def parse_json(body: bytes, max_depth: int):
    """Decode a JSON body whose size the caller already capped: UTF-8 only, at most
    max_depth levels of nesting (checked BEFORE json.loads, whose recursion a deep document
    would blow), no NaN/Infinity. Anything else: HttpError(400)."""
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400) from None  # body is not UTF-8
    if json_depth(text) > max_depth:
        raise HttpError(400)  # JSON nested deeper than {max_depth}
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; so are huge ints
        raise HttpError(400) from None  # invalid JSON


def security_headers() -> list:
    """Headers for EVERY response, errors included (an error page is a page too).

    - nosniff: the browser keeps our Content-Type instead of guessing "this looks like HTML".
    - CSP frame-ancestors 'none': no other site may frame us (clickjacking); it supersedes
      X-Frame-Options. default-src 'self': a page loads scripts and styles from us only.
    - Referrer-Policy no-referrer: our URLs (and any tokens in them) do not leak onward.
    - No X-XSS-Protection: the filter it switched on is gone from browsers and itself
      enabled attacks; "0" is the only safe value, omitting it is simpler.
    - No Strict-Transport-Security: over plain HTTP it is ignored at best; it belongs on
      TLS responses (lesson 12).
    """
    return [
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
        ("Referrer-Policy", "no-referrer"),
    ]


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
    return PHRASES.get(status) or http.HTTPStatus(status).phrase


def _check_field(text: str) -> str:
    if any(c in text for c in "\r\n\x00"):  # a CR LF in a value starts a header of its own
        raise ValueError(f"refusing a header with CR, LF or NUL: {text!r}")
    return text


def render_response(status: int, headers=(), body: bytes = b"", *, length: int | None = None,
                    close: bool = False) -> bytes:
    """The bytes of a whole response: status line, our headers, the security headers,
    Server, Date, Content-Length, Connection: close if asked, a blank line, then `body`.

    length= sets Content-Length when the body is sent separately (a HEAD answer, or a file
    streamed after these bytes); then `body` is usually b"". Header names and values with
    CR, LF or NUL raise ValueError: that would be response splitting.
    """
    lines = [f"HTTP/1.1 {status} {phrase(status)}"]
    for name, value in [*headers, *security_headers(),
                        ("Server", SERVER_NAME),
                        ("Date", email.utils.formatdate(usegmt=True)),
                        ("Content-Length", str(len(body) if length is None else length))]:
        lines.append(f"{_check_field(name)}: {_check_field(str(value))}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + bytes(body)


def error_body(status: int) -> bytes:
    return f"{status} {phrase(status)}\n".encode("ascii")


def error_response(status: int, headers=(), *, close: bool = False, head: bool = False) -> bytes:
    """A generic error page: the status and its standard phrase, nothing about the request
    (no path, no header echoed back, no exception text). head=True: the headers only."""
    body = error_body(status)
    return render_response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers],
                           b"" if head else body, length=len(body), close=close)


def internal_error(log: logging.Logger) -> bytes:
    """Call inside an `except`: log the traceback under a fresh incident id and return a
    500 page that shows the id only. The user can quote it; the details stay in our log."""
    incident = secrets.token_hex(8)
    log.error("incident %s: unhandled error in a handler", incident, exc_info=True)
    body = f"500 Internal Server Error\nincident {incident}\n".encode("ascii")
    return render_response(500, [("Content-Type", "text/plain; charset=utf-8")], body)


def safe_call(handler, request: Request, body: bytes, log: logging.Logger) -> bytes:
    """Run handler(request, body) -> response bytes, so that nothing escapes it: an HttpError
    becomes its generic error page, any other exception a 500 with an incident id."""
    try:
        return handler(request, body)
    except HttpError as exc:
        return error_response(exc.status, exc.headers, head=request.method == "HEAD")
    except Exception:
        return internal_error(log)


def log_safe(text, limit: int = 300) -> str:
    """Text from a request made safe for one log line: every control character (CR, LF, ESC,
    NUL, DEL, Unicode line separators...) and the backslash itself become repr-style escapes
    (\\r, \\n, \\x1b, \\u2028, \\\\), so a client cannot start a fake log line or paint the
    terminal; and long text is cut to `limit` characters."""
    text = str(text)
    cut = len(text) > limit
    safe = "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii")
                   for c in text[:limit])
    return safe + ("..." if cut else "")
