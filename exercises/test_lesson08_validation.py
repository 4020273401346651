"""Graders for lesson 08, validating requests and failing safely.  Run: pytest exercises -k lesson08

Everything in this lesson is sans-IO: the graders hand your functions bytes and strings and
look at what comes back. No sockets, no threads, no waiting.
"""
import json
import logging
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

# The `lesson` fixture is only the module under test: the same for every generated example.
FIXTURE_OK = [HealthCheck.function_scoped_fixture]

from graderkit import describe, run_in_thread, short

CRLF = "\r\n"


@pytest.fixture
def lesson(graded):
    return graded("lesson08_validation")


def head(*lines: str) -> bytes:
    return (CRLF.join(lines) + CRLF + CRLF).encode("utf-8")


def outcome(story, what, call, *args, **kwargs):
    """(value, None) or (None, exception) of call(*args); a stub's NotImplementedError
    passes straight through."""
    try:
        return call(*args, **kwargs), None
    except NotImplementedError:
        raise
    except Exception as exc:
        return None, exc


def expect_status(lesson, story, what, status, call, *args, **kwargs):
    value, error = outcome(story, what, call, *args, **kwargs)
    story.step(f"{what} -> " + (describe(error) if error else short(value, 100)))
    got_status = getattr(error, "status", None)
    story.check(isinstance(error, lesson.HttpError) and got_status == status,
                f"HttpError with status {status}",
                f"HttpError {got_status}" if isinstance(error, lesson.HttpError)
                else (describe(error) if error else f"no error: {short(value, 100)}"))
    return error


def expect_value(story, what, call, *args, **kwargs):
    value, error = outcome(story, what, call, *args, **kwargs)
    story.step(f"{what} -> " + (describe(error) if error else short(value, 100)))
    if error is not None:
        story.fail(f"{what} to succeed", describe(error))
    return value


def parse_wire(story, data: bytes):
    """The grader's own reading of a response: (status, [(lower name, value)], body)."""
    end = data.find(b"\r\n\r\n")
    story.check(end != -1, "a response head ending in CRLF CRLF", short(data, 200))
    lines = data[:end].decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] (\d{3}) .*", lines[0])
    story.check(match is not None, "a status line like 'HTTP/1.1 404 Not Found'", repr(lines[0]))
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        story.check(bool(colon) and name == name.strip(), "header lines 'Name: value'",
                    repr(line))
        headers.append((name.lower(), value.strip()))
    return int(match.group(1)), headers, data[end + 4:]


def header(headers, name):
    values = [v for k, v in headers if k == name]
    return values[0] if values else None


# --------------------------------------------------------------------------- 08.parse_head


@pytest.mark.task("08.parse_head")
def test_parse_head_reads_a_request(lesson, story):
    data = head("GET /docs/a%20b.txt?x=1 HTTP/1.1", "Host: example.test:8080",
                "User-Agent:   grader/1.0  ", "X-Twice: one", "x-twice: two", "X-Edge: XoX")
    request = expect_value(story, f"parse_head({short(data, 80)})", lesson.parse_head, data)
    got = (request.method, request.target, request.version)
    story.check(got == ("GET", "/docs/a%20b.txt?x=1", "HTTP/1.1"),
                "method GET, target '/docs/a%20b.txt?x=1', version HTTP/1.1", repr(got))
    story.check(request.get("X-Edge") == "XoX", "X-Edge: 'XoX' (only spaces and tabs are "
                "stripped from a value)", repr(request.get("X-Edge")))
    story.check(request.get("HOST") == "example.test:8080" and request.get("user-agent") ==
                "grader/1.0", "headers by any case of their name (split at the FIRST colon: "
                "'example.test:8080'), values without the surrounding spaces",
                f"Host {request.get('HOST')!r}, User-Agent "
                f"{request.get('user-agent')!r}")
    story.check(request.get_all("X-Twice") == ["one", "two"], "get_all: both values, in order",
                repr(request.get_all("X-Twice")))
    story.check(request.get("X-Missing", "none") == "none", "get(name, default) -> default "
                "for a header that is not there", repr(request.get("X-Missing", "none")))
    old = expect_value(story, "parse_head of an HTTP/1.0 request without Host",
                       lesson.parse_head, head("HEAD / HTTP/1.0"))
    story.check(old.method == "HEAD" and old.version == "HTTP/1.0", "HEAD over HTTP/1.0 "
                "(Host is only required from HTTP/1.1 on)", repr(old))


BAD_HEADS = {
    "no-host-1.1": (head("GET / HTTP/1.1"), 400),
    "two-hosts": (head("GET / HTTP/1.1", "Host: a", "Host: b"), 400),
    "lower-case-method": (head("get / HTTP/1.1", "Host: a"), 501),
    "unknown-method": (head("BREW /pot HTTP/1.1", "Host: a"), 501),
    "known-not-allowed": (head("DELETE /x HTTP/1.1", "Host: a"), 405),
    "put-not-allowed": (head("PUT /x HTTP/1.1", "Host: a"), 405),
    "two-spaces": (head("GET  / HTTP/1.1", "Host: a"), 400),
    "no-version": (head("GET /", "Host: a"), 400),
    "bad-version": (head("GET / HTTP/x", "Host: a"), 400),
    "version-2": (head("GET / HTTP/2.0", "Host: a"), 505),
    "absolute-form": (head("GET http://evil.test/ HTTP/1.1", "Host: a"), 400),
    "space-before-colon": (head("GET / HTTP/1.1", "Host: a", "Content-Length : 5"), 400),
    "folded-line": (head("GET / HTTP/1.1", "Host: a", "X-A: one", " two"), 400),
    "no-colon": (head("GET / HTTP/1.1", "Host: a", "Broken"), 400),
    "empty-name": (head("GET / HTTP/1.1", "Host: a", ": v"), 400),
    # A name is a token (RFC 9110 5.1): strip() and a space check let these through.
    "vertical-tab-before-colon": (head("GET / HTTP/1.1", "Host: a", "Content-Length\x0b: 5"),
                                  400),
    "control-in-name": (head("GET / HTTP/1.1", "Host: a", "X\x01A: v"), 400),
    "parenthesis-in-name": (head("GET / HTTP/1.1", "Host: a", "Na(me: v"), 400),
    "bare-lf-in-value": (head("GET / HTTP/1.1", "Host: a", "X-A: a\nb"), 400),
    "bare-cr-in-value": (head("GET / HTTP/1.1", "Host: a", "X-A: a\rb"), 400),
    "nul-in-value": (head("GET / HTTP/1.1", "Host: a", "X-A: a\x00b"), 400),
    "esc-in-value": (head("GET / HTTP/1.1", "Host: a", "X-A: \x1b[31m"), 400),
    "vertical-tab-around-value": (head("GET / HTTP/1.1", "Host: a", "X-A: \x0bv\x0c"), 400),
    "control-in-target": (head("GET /a\x01b HTTP/1.1", "Host: a"), 400),
    "lf-in-request-line": (head("GET /\nX HTTP/1.1", "Host: a"), 400),
}


@pytest.mark.task("08.parse_head")
@pytest.mark.parametrize("case", list(BAD_HEADS))
def test_parse_head_refuses(lesson, story, case):
    data, status = BAD_HEADS[case]
    expect_status(lesson, story, f"parse_head({short(data, 100)})", status, lesson.parse_head,
                  data)


@pytest.mark.task("08.parse_head")
def test_405_names_the_allowed_methods(lesson, story):
    error = expect_status(lesson, story, "parse_head of DELETE / (allowed: GET, HEAD, POST)",
                          405, lesson.parse_head, head("DELETE / HTTP/1.1", "Host: a"))
    allow = dict((k.lower(), v) for k, v in error.headers).get("allow", "")
    methods = {m.strip() for m in allow.split(",")}
    story.check(methods == {"GET", "HEAD", "POST"}, "an Allow header 'GET, HEAD, POST' in "
                "HttpError.headers", repr(error.headers))
    limits = lesson.Limits(methods=("GET",))
    error = expect_status(lesson, story, "parse_head of POST with Limits(methods=('GET',))",
                          405, lesson.parse_head, head("POST / HTTP/1.1", "Host: a"), limits)
    allow = dict((k.lower(), v) for k, v in error.headers).get("allow", "")
    story.check(allow.replace(" ", "") == "GET", "Allow: GET (from the limits)", repr(allow))


@pytest.mark.task("08.parse_head")
def test_size_limits_are_exact(lesson, story):
    limits = lesson.Limits(max_request_line=40, max_header_bytes=60, max_headers=3)
    story.step("Limits(max_request_line=40, max_header_bytes=60, max_headers=3)")
    fits = "GET /" + "a" * 26 + " HTTP/1.1"  # 40 characters
    assert len(fits) == 40
    expect_value(story, "a 40-byte request line", lesson.parse_head,
                 head(fits, "Host: a"), limits)
    expect_status(lesson, story, "a 41-byte request line", 414, lesson.parse_head,
                  head("GET /" + "a" * 27 + " HTTP/1.1", "Host: a"), limits)
    headers = ["Host: a", "X-A: " + "b" * 20, "X-B: " + "c" * 22]  # 7+2+25+2+27 = 63 > 60
    expect_status(lesson, story, "63 bytes of header lines", 431, lesson.parse_head,
                  head("GET / HTTP/1.1", *headers), limits)
    headers = ["Host: a", "X-A: " + "b" * 20, "X-B: " + "c" * 19]  # 7+2+25+2+24 = 60
    expect_value(story, "exactly 60 bytes of header lines", lesson.parse_head,
                 head("GET / HTTP/1.1", *headers), limits)
    expect_status(lesson, story, "4 header lines (max_headers=3)", 431, lesson.parse_head,
                  head("GET / HTTP/1.1", "Host: a", "A: 1", "B: 2", "C: 3"), limits)
    expect_value(story, "3 header lines", lesson.parse_head,
                 head("GET / HTTP/1.1", "Host: a", "A: 1", "B: 2"), limits)


@pytest.mark.task("08.parse_head")
def test_head_end_refuses_early_while_the_head_arrives(lesson, story):
    limits = lesson.Limits(max_request_line=40, max_header_bytes=60, max_headers=3)
    story.step("Limits(max_request_line=40, max_header_bytes=60, max_headers=3)")
    got = expect_value(story, "head_end(b'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\nrest')",
                       lesson.head_end, bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"),
                       limits)
    story.check(got == 27, "27 (just past the blank line; 'rest' is not part of the head)",
                repr(got))
    got = expect_value(story, "head_end of an unfinished head", lesson.head_end,
                       bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n"), limits)
    story.check(got is None, "None: more bytes needed", repr(got))
    got = expect_value(story, "head_end of two pipelined heads", lesson.head_end,
                       bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"),
                       limits)
    story.check(got == 27, "27: the end of the FIRST head", repr(got))
    line = b"GET /" + b"a" * 26 + b" HTTP/1.1"  # exactly 40 bytes
    got = expect_value(story, "head_end of a 40-byte line and its CR (limit 40)", lesson.head_end,
                       bytearray(line + b"\r"), limits)
    story.check(got is None, "None: the line still fits", repr(got))
    got = expect_value(story, "head_end of a 40-byte line, CRLF, and half a header",
                       lesson.head_end, bytearray(line + b"\r\nHost: a"), limits)
    story.check(got is None, "None: the line fits, the head is not complete", repr(got))
    expect_status(lesson, story, "head_end of a 41-byte line and its CRLF", 414, lesson.head_end,
                  bytearray(b"GET /" + b"a" * 27 + b" HTTP/1.1\r\nHost: a"), limits)
    headers = b"Host: a\r\nX-A: " + b"b" * 20 + b"\r\nX-B: " + b"c" * 19  # 60 bytes
    almost = line + b"\r\n" + headers + b"\r\n\r"
    got = expect_value(story, f"head_end of the largest head that fits, less its last byte "
                       f"({len(almost)} bytes)", lesson.head_end, bytearray(almost), limits)
    story.check(got is None, "None: one more byte completes it", repr(got))
    got = expect_value(story, "head_end of that head, complete", lesson.head_end,
                       bytearray(almost + b"\n"), limits)
    story.check(got == len(almost) + 1, str(len(almost) + 1), repr(got))
    expect_status(lesson, story, f"head_end of {len(almost) + 1} bytes with no blank line",
                  431, lesson.head_end, bytearray(line + b"\r\n" + b"X" * 64), limits)
    expect_status(lesson, story, "head_end of 42 bytes with no CRLF yet", 414,
                  lesson.head_end, bytearray(b"G" * 42), limits)
    expect_status(lesson, story, "head_end of a request line and 200 bytes of headers with "
                  "no blank line yet", 431, lesson.head_end,
                  bytearray(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 40), limits)


# --------------------------------------------------------------------------- 08.content_length


def post(lesson, *headers):
    return lesson.parse_head(head("POST /echo HTTP/1.1", "Host: a", *headers))


@pytest.mark.task("08.content_length")
def test_body_length_accepts_plain_digits(lesson, story):
    for value, expected in [("0", 0), ("5", 5), ("007", 7), ("100", 100),
                            ("0" * 5000 + "7", 7)]:  # int() refuses > 4300 digits
        got = expect_value(story, f"body_length with Content-Length: {short(value, 20)} "
                           "(max_body 100)",
                           lesson.body_length, post(lesson, f"Content-Length: {value}"), 100)
        story.check(got == expected, str(expected), repr(got))
    got = expect_value(story, "body_length of a GET without Content-Length",
                       lesson.body_length,
                       lesson.parse_head(head("GET / HTTP/1.1", "Host: a")), 100)
    story.check(got == 0, "0 (a GET has no body)", repr(got))


BAD_LENGTHS = {"plus": "+5", "minus": "-1", "underscore": "1_0", "trailing-junk": "5x",
               "inner-space": "5 5", "hex": "0x10", "float": "5.0", "exponent": "1e3",
               "arabic-digit": "\u0663", "superscript": "\u00b2", "empty": "",
               "comma-list": "5, 5"}


@pytest.mark.task("08.content_length")
@pytest.mark.parametrize("case", list(BAD_LENGTHS))
def test_body_length_refuses_what_int_would_take(lesson, story, case):
    value = BAD_LENGTHS[case]
    request = post(lesson, f"Content-Length: {value}")
    expect_status(lesson, story, f"body_length with Content-Length: {value!r}", 400,
                  lesson.body_length, request, 100)


@pytest.mark.task("08.content_length")
def test_body_length_refuses_ambiguous_framing(lesson, story):
    for headers, status, why in [
        (["Content-Length: 5", "Content-Length: 6"], 400, "two different lengths"),
        (["Content-Length: 5", "Transfer-Encoding: chunked"], 400,
         "CL with TE: request smuggling"),
        (["Transfer-Encoding: chunked", "Content-Length: 5"], 400, "TE with CL, either order"),
        (["Transfer-Encoding: chunked"], 501, "a transfer coding we do not implement"),
        # ANY Transfer-Encoding with a length is ambiguous, not only the exact word "chunked":
        # codings are case-insensitive, come in lists, and a proxy may read them differently.
        (["Content-Length: 5", "Transfer-Encoding: Chunked"], 400, "CL with TE in capitals"),
        (["Content-Length: 5", "Transfer-Encoding: gzip, chunked"], 400, "CL with a TE list"),
        (["Content-Length: 5", "Transfer-Encoding: identity"], 400, "CL with TE identity"),
        (["Transfer-Encoding: gzip"], 501, "a transfer coding we do not implement"),
        ([], 411, "a POST without a length"),
    ]:
        expect_status(lesson, story, f"body_length with {headers} ({why})", status,
                      lesson.body_length, post(lesson, *headers), 100)


@pytest.mark.task("08.content_length")
def test_every_method_with_a_body_needs_a_length(lesson, story):
    for method in ["POST", "PUT", "PATCH"]:
        request = lesson.Request(method, "/x", "HTTP/1.1", [("host", "a")])
        expect_status(lesson, story, f"body_length of a {method} without Content-Length", 411,
                      lesson.body_length, request, 100)
    for method in ["GET", "HEAD", "DELETE", "OPTIONS"]:
        request = lesson.Request(method, "/x", "HTTP/1.1", [("host", "a")])
        got = expect_value(story, f"body_length of a {method} without Content-Length",
                           lesson.body_length, request, 100)
        story.check(got == 0, "0", repr(got))


@pytest.mark.task("08.content_length")
def test_body_length_caps_before_reading(lesson, story):
    expect_value(story, "Content-Length: 100 with max_body 100", lesson.body_length,
                 post(lesson, "Content-Length: 100"), 100)
    expect_status(lesson, story, "Content-Length: 101 with max_body 100", 413,
                  lesson.body_length, post(lesson, "Content-Length: 101"), 100)
    expect_status(lesson, story, "Content-Length: 2 GiB with max_body 100", 413,
                  lesson.body_length, post(lesson, "Content-Length: 2147483648"), 100)
    expect_status(lesson, story, "Content-Length of 5000 nines (int() of it is an error on "
                  "Python 3.11+)", 413, lesson.body_length, post(lesson, "Content-Length: "
                                                                 + "9" * 5000), 1 << 20)


@pytest.mark.task("08.content_length")
@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=FIXTURE_OK)
@given(value=st.text(alphabet="0123456789+-_ x.\u0663", min_size=1, max_size=8))
def test_body_length_is_digits_or_an_error(lesson, value):
    request = lesson.parse_head(head("POST /echo HTTP/1.1", "Host: a", f"Content-Length: {value}"))
    plain = value.strip(" ")
    try:
        got = lesson.body_length(request, 10 ** 6)
    except NotImplementedError:
        raise
    except lesson.HttpError as exc:
        ok = not re.fullmatch(r"[0-9]+", plain) or int(plain) > 10 ** 6
        assert ok, f"Content-Length {value!r} refused with {exc.status}; it is a valid length"
        return
    assert re.fullmatch(r"[0-9]+", plain) and got == int(plain), (
        f"Content-Length {value!r} accepted as {got!r}: only ASCII digits are a length")


# --------------------------------------------------------------------------- 08.json


@pytest.mark.task("08.json")
def test_parse_json_reads_documents(lesson, story):
    for doc in [{"a": [1, 2, {"b": None}]}, [], "text with [brackets] and {braces}", 3.5,
                {"deep": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]:
        body = json.dumps(doc).encode("utf-8")
        got = expect_value(story, f"parse_json({short(body, 60)}, max_depth=3)",
                           lesson.parse_json, body, 3)
        story.check(got == doc, repr(doc), repr(got))


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


@pytest.mark.task("08.json")
def test_parse_json_limits_depth(lesson, story):
    got = expect_value(story, "parse_json of 4 nested lists, max_depth=4", lesson.parse_json,
                       nested(4), 4)
    story.check(got == [[[[]]]], "[[[[]]]]", repr(got))
    expect_value(story, "parse_json of {\"a\":{\"b\":{\"c\":[1]}}} (depth 4), max_depth=4",
                 lesson.parse_json, b'{"a":{"b":{"c":[1]}}}', 4)
    expect_status(lesson, story, "parse_json of 5 nested lists, max_depth=4", 400,
                  lesson.parse_json, nested(5), 4)
    expect_status(lesson, story, "parse_json of {\"a\":[{\"b\":[{}]}]} (depth 5), max_depth=4",
                  400, lesson.parse_json, b'{"a":[{"b":[{}]}]}', 4)
    expect_status(lesson, story, "parse_json of 100000 nested lists (json.loads alone would "
                  "raise RecursionError)", 400, lesson.parse_json, nested(100_000), 32)
    expect_status(lesson, story, "parse_json of 100000 '[' and nothing else", 400,
                  lesson.parse_json, b"[" * 100_000, 32)


@pytest.mark.task("08.json")
def test_the_depth_scan_is_linear(lesson, story):
    """A check that takes n*n steps holds the GIL: every thread of the server stops with it."""
    body = b'"' + b'\\"' * 16_000  # an unterminated string full of escaped quotes (32 KB)
    story.step(f"parse_json of an unterminated 32 KB string of escaped quotes, in a thread")
    started = time.monotonic()
    call = run_in_thread(outcome, story, "parse_json", lesson.parse_json, body, 32)
    try:
        value, error = call.result(timeout=5.0)
    except NotImplementedError:
        raise
    except TimeoutError:
        story.fail("an answer in well under a second", "no answer within 5 s")
    elapsed = time.monotonic() - started
    if isinstance(error, NotImplementedError):
        raise error
    story.check(isinstance(error, lesson.HttpError) and error.status == 400,
                "HttpError 400 (it is not JSON)", describe(error) if error else short(value))
    story.check(elapsed < 1.0, "an answer within 1 s (a linear scan takes milliseconds; a "
                "backtracking regex takes seconds)", f"{elapsed:.2f} s")


@pytest.mark.task("08.json")
def test_parse_json_refuses_bad_bodies(lesson, story):
    for body, why in [(b'{"a": 1', "truncated"), (b"\xff\xfe{}", "not UTF-8"),
                      (b"NaN", "NaN is not JSON"), (b'{"a": Infinity}', "Infinity is not JSON"),
                      (b"[1e999]", "1e999 is infinite: json.dumps would write Infinity"),
                      (b"", "empty"), ('{"a": "é"}'.encode("utf-16"), "UTF-16")]:
        expect_status(lesson, story, f"parse_json({short(body)}) ({why})", 400,
                      lesson.parse_json, body, 32)


@pytest.mark.task("08.json")
def test_json_content_type_is_checked(lesson, story):
    for value in ["application/json", "application/json; charset=utf-8", "Application/JSON",
                  "application/json; charset=utf-8; x=y", " application/json "]:
        expect_value(story, f"check_json_type({value!r})", lesson.check_json_type, value)
    for value in ["text/plain", None, "", "application/json-patch+json", "application/jsonx",
                  "multipart/form-data; boundary=application/json"]:
        expect_status(lesson, story, f"check_json_type({value!r})", 415,
                      lesson.check_json_type, value)


@pytest.mark.task("08.json")
@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=FIXTURE_OK)
@given(doc=st.recursive(st.none() | st.integers(-10, 10) | st.text(alphabet="[]{}\"\\ab", max_size=5),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(alphabet="[]{}\"ab", max_size=3), inner, max_size=3),
                        max_leaves=12))
def test_parse_json_agrees_with_json_loads_within_the_limit(lesson, doc):
    body = json.dumps(doc).encode("utf-8")

    def depth(value):
        if isinstance(value, (list, dict)):
            inner = value.values() if isinstance(value, dict) else value
            return 1 + max((depth(v) for v in inner), default=0)
        return 0
    limit = 3
    try:
        got = lesson.parse_json(body, limit)
    except NotImplementedError:
        raise
    except lesson.HttpError:
        assert depth(doc) > limit, f"parse_json refused {body!r} (depth {depth(doc)} <= {limit})"
        return
    assert depth(doc) <= limit, f"parse_json accepted {body!r} (depth {depth(doc)} > {limit})"
    assert got == doc


# --------------------------------------------------------------------------- 08.headers


def check_security_headers(story, headers, what):
    values = {k: v for k, v in headers}
    story.check(values.get("x-content-type-options", "").lower() == "nosniff",
                f"X-Content-Type-Options: nosniff on {what}", repr(headers))
    csp = values.get("content-security-policy", "").lower()
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    story.check(directives.get("frame-ancestors") == "frame-ancestors 'none'",
                f"a Content-Security-Policy with the directive frame-ancestors 'none' on {what}",
                repr(csp))
    story.check(directives.get("default-src") in ("default-src 'self'", "default-src 'none'"),
                "the directive default-src 'self' (or 'none') in the CSP", repr(csp))
    story.check(values.get("referrer-policy", "").lower() in
                ("no-referrer", "strict-origin-when-cross-origin", "same-origin"),
                f"a Referrer-Policy on {what}", repr(values.get("referrer-policy")))
    story.check(values.get("x-xss-protection", "0").strip() == "0",
                "no X-XSS-Protection (or '0'): the old filter is gone and was itself exploitable",
                repr(values.get("x-xss-protection")))
    story.check("strict-transport-security" not in values,
                "no Strict-Transport-Security over plain HTTP", repr(headers))
    server = values.get("server")
    story.check(server is not None and "python" not in server.lower()
                and not re.search(r"\d+\.\d+", server),
                f"a Server header that names no Python and no version on {what}", repr(server))


@pytest.mark.task("08.headers")
def test_render_response_frames_and_protects(lesson, story):
    data = expect_value(story, "render_response(200, [('Content-Type', 'text/plain')], "
                        "b'hello')", lesson.render_response, 200,
                        [("Content-Type", "text/plain")], b"hello")
    status, headers, body = parse_wire(story, data)
    story.check(status == 200 and body == b"hello", "200 and the body b'hello'",
                f"{status}, {short(body)}")
    story.check(header(headers, "content-length") == "5", "Content-Length: 5",
                repr(header(headers, "content-length")))
    story.check(header(headers, "content-type") == "text/plain", "our Content-Type kept",
                repr(headers))
    check_security_headers(story, headers, "a 200")
    data = expect_value(story, "render_response(200, [], b'', length=1234, close=True)",
                        lesson.render_response, 200, [], b"", length=1234, close=True)
    status, headers, body = parse_wire(story, data)
    story.check(header(headers, "content-length") == "1234" and body == b"",
                "Content-Length: 1234 and no body (the file follows separately)",
                f"{header(headers, 'content-length')!r}, {short(body)}")
    story.check((header(headers, "connection") or "").lower() == "close", "Connection: close",
                repr(headers))
    first_line = data.split(b"\r\n", 1)[0]
    story.check(first_line == b"HTTP/1.1 200 OK", "the status line 'HTTP/1.1 200 OK'",
                repr(first_line))
    data = lesson.render_response(204, [("X-A", "b")])
    story.check(data.endswith(b"\r\n\r\n") and b"Content-Length: 0\r\n" in data,
                "render_response(204, [('X-A', 'b')]): no body, Content-Length: 0 (body "
                "defaults to b'')", short(data, 300))
    data = lesson.error_response(404)
    story.check(b"onnection:" not in data, "error_response(404): no Connection header (close "
                "defaults to False)", short(data, 300))
    data = lesson.render_response(404, [], b"x")
    story.check(data.startswith(b"HTTP/1.1 404 Not Found\r\n"), "'HTTP/1.1 404 Not Found' "
                "(the standard phrase: http.HTTPStatus(404).phrase)", short(data, 80))
    data = lesson.render_response(429, [], b"")
    story.check(data.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), "'HTTP/1.1 429 Too "
                "Many Requests' (any standard status has its phrase, not only the ones this "
                "lesson sends)", short(data, 80))
    status, headers, body = parse_wire(story, data)
    story.check(header(headers, "connection") is None, "no Connection header unless close=True "
                "(HTTP/1.1 keeps the connection by default)", repr(headers))
    date = header(headers, "date") or ""
    story.check(date.endswith(" GMT") and re.match(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} ",
                                                    date) is not None,
                "a Date header in HTTP's format, e.g. 'Mon, 23 Nov 2026 18:00:00 GMT'", repr(date))


@pytest.mark.task("08.headers")
@pytest.mark.parametrize("status", [400, 404, 405, 408, 411, 413, 414, 415, 431, 500, 501, 503])
def test_error_pages_are_generic_and_protected(lesson, story, status):
    data = expect_value(story, f"error_response({status})", lesson.error_response, status)
    got, headers, body = parse_wire(story, data)
    story.check(got == status, f"status {status}", str(got))
    check_security_headers(story, headers, f"a {status} error page")
    story.check(header(headers, "content-length") == str(len(body)),
                "a Content-Length that matches the body", repr(headers))
    story.check(len(body) < 200 and str(status).encode() in body, "a short generic body "
                "naming the status", short(body))
    story.check((header(headers, "content-type") or "").startswith("text/plain"),
                "Content-Type text/plain", repr(header(headers, "content-type")))
    data = expect_value(story, f"error_response({status}, head=True, close=True)",
                        lesson.error_response, status, head=True, close=True)
    got, head_headers, head_body = parse_wire(story, data)
    story.check(head_body == b"" and header(head_headers, "content-length") == str(len(body)),
                f"no body, and the Content-Length of the page a GET gets ({len(body)})",
                f"{header(head_headers, 'content-length')!r}, body {short(head_body)}")
    story.check((header(head_headers, "connection") or "").lower() == "close",
                "Connection: close when close=True", repr(head_headers))


@pytest.mark.task("08.headers")
def test_no_response_splitting(lesson, story):
    for name, value in [("X-Note", "a\r\nSet-Cookie: admin=1"), ("X-Note", "a\nb"),
                        ("X-Bad\r\nSet-Cookie", "x"), ("X-Note", "a\x00b")]:
        value_got, error = outcome(story, "render_response", lesson.render_response, 200,
                                   [(name, value)], b"")
        story.step(f"render_response(200, [({name!r}, {value!r})]) -> "
                   + (describe(error) if error else short(value_got, 100)))
        story.check(isinstance(error, ValueError), "ValueError: a CR or LF would start a "
                    "header (or a body) of the attacker's choosing",
                    describe(error) if error else short(value_got, 200))


# --------------------------------------------------------------------------- 08.errors


SECRET = "db password is hunter2 at /srv/app/secrets.py"


@pytest.mark.task("08.errors")
def test_a_bug_becomes_a_generic_500_with_an_incident_id(lesson, story, logs):
    request = lesson.parse_head(head("GET /boom HTTP/1.1", "Host: a"))

    def buggy(request, body):
        raise RuntimeError(SECRET)
    story.step(f"safe_call(handler, ...) where the handler raises RuntimeError({SECRET!r})")
    data = expect_value(story, "safe_call(buggy, request, b'', logger)", lesson.safe_call,
                        buggy, request, b"", logs.logger)
    status, headers, body = parse_wire(story, data)
    story.check(status == 500, "status 500", str(status))
    for leak in ["hunter2", "secrets.py", "RuntimeError", "Traceback", "line "]:
        story.check(leak.encode() not in data, f"nothing about the error in the response "
                    f"(found {leak!r})", short(data, 300))
    check_security_headers(story, headers, "the 500 page")
    story.check((header(headers, "content-type") or "").startswith("text/plain"),
                "Content-Type text/plain on the 500 page", repr(header(headers, "content-type")))
    records = [r for r in logs.records if r.levelno >= logging.ERROR]
    story.check(bool(records), "an ERROR in the log", repr(logs.lines()))
    ids = re.findall(r"[0-9a-fA-F]{8,}|[0-9A-Za-z_-]{12,}", body.decode("latin-1"))
    logged = " ".join(r.getMessage() for r in records)
    story.check(any(i in logged for i in ids), "the same incident id in the page and in the "
                "log line (so a user's report finds the traceback)",
                f"page {short(body)}; log {short(logged, 200)}")
    story.check(any(r.exc_info for r in records), "the traceback in the log (exc_info=True): "
                "it belongs there, not in the page", repr(logs.lines()))
    data2 = lesson.safe_call(buggy, request, b"", logs.logger)
    story.check(data2.split(b"\r\n\r\n", 1)[1] != body, "a new incident id for each incident",
                short(data2))


@pytest.mark.task("08.errors")
def test_http_errors_and_good_replies_pass_through(lesson, story, logs):
    request = lesson.parse_head(head("GET /x HTTP/1.1", "Host: a"))

    def missing(request, body):
        raise lesson.HttpError(404, "no /x here, secret reason")
    data = expect_value(story, "safe_call of a handler raising HttpError(404)",
                        lesson.safe_call, missing, request, b"", logs.logger)
    status, headers, body = parse_wire(story, data)
    story.check(status == 404 and b"secret reason" not in data,
                "the generic 404 page (the reason is for the log, not the client)",
                short(data, 300))

    def fine(request, body):
        return f"{request.target} got ".encode() + body
    data = expect_value(story, "safe_call of a handler returning request.target + body",
                        lesson.safe_call, fine, request, b"the body", logs.logger)
    story.check(data == b"/x got the body", "the handler's bytes unchanged (it was given the "
                "request and the body)", short(data))

    def not_allowed(request, body):
        raise lesson.HttpError(405, headers=[("Allow", "GET")])
    data = expect_value(story, "safe_call of a handler raising HttpError(405, headers=[Allow])",
                        lesson.safe_call, not_allowed, request, b"", logs.logger)
    status, headers, body = parse_wire(story, data)
    story.check(status == 405 and header(headers, "allow") == "GET",
                "405 with the handler's Allow: GET", short(data, 300))
    head_request = lesson.parse_head(head("HEAD /x HTTP/1.1", "Host: a"))
    data = expect_value(story, "safe_call of HEAD with a handler raising HttpError(404)",
                        lesson.safe_call, missing, head_request, b"", logs.logger)
    status, headers, body = parse_wire(story, data)
    story.check(status == 404 and body == b"", "a 404 head with no body (HEAD)", short(data))


# --------------------------------------------------------------------------- 08.log_safe


@pytest.mark.task("08.log_safe")
def test_log_safe_escapes_controls(lesson, story):
    for text in ["GET /\r\n127.0.0.1 \"GET /admin\" 200", "a\nb", "\x1b[31mred", "nul\x00",
                 "del\x7f", "tab\tbed", "line\u2028sep", "nel\x85"]:
        got = expect_value(story, f"log_safe({text!r})", lesson.log_safe, text)
        bad = [c for c in got if not c.isprintable()]
        story.check(not bad, "no control or line-breaking character left", repr(got))
        story.check(len(got) > len(text) - 1, "the control characters escaped, not dropped "
                    "(a log should show what was sent)", repr(got))
    got = lesson.log_safe("a\r\nb")
    story.check(got in ("a\\r\\nb", "a\\x0d\\x0ab"), "'a\\\\r\\\\nb' (repr-style escapes)",
                repr(got))
    got = lesson.log_safe("plain text: ok, é")
    story.check(got == "plain text: ok, é", "printable text unchanged", repr(got))
    story.check(lesson.log_safe("\\n") != lesson.log_safe("\n"),
                "a typed backslash-n to differ from an escaped newline (escape '\\\\' too)",
                f"both gave {lesson.log_safe(chr(10))!r}")
    got = lesson.log_safe("y" * 301)
    story.check(got == "y" * 300 + "...", "log_safe of 301 characters: the first 300 and "
                "'...' (limit defaults to 300)", f"{len(got)} characters")
    got = lesson.log_safe("y" * 300)
    story.check(got == "y" * 300, "log_safe of 300 characters: unchanged", f"{len(got)} characters")
    got = lesson.log_safe("x" * 20, 10)
    story.check(got == "x" * 10 + "...", "log_safe('x' * 20, 10) == 'xxxxxxxxxx...' (cut, and "
                "marked as cut)", repr(got))
    got = lesson.log_safe("x" * 10, 10)
    story.check(got == "x" * 10, "log_safe('x' * 10, 10) == 'x' * 10 (exactly the limit: "
                "nothing cut)", repr(got))
    long = lesson.log_safe("x" * 10_000)
    story.check(len(long) < 1000, "long text cut (a 10000-character header is not a log line)",
                f"{len(long)} characters")


@pytest.mark.task("08.log_safe")
@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=FIXTURE_OK)
@given(text=st.text(max_size=40))
def test_log_safe_output_is_one_printable_line(lesson, text):
    got = lesson.log_safe(text)
    assert all(c.isprintable() for c in got), f"log_safe({text!r}) = {got!r} has a control"
