"""Graders for lesson 07, HTTP on a socket: a static-file server safe against path traversal.
Run: pytest exercises -k lesson07

Every test builds its own little site in a temporary folder, with secrets next to it (and
symlinks pointing at them) that no URL may reach.
"""
import contextlib
import logging
import os
import platform
import socket
import time
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from graderkit import WAIT, describe, short
from httpkit import (Reader, check_status, closed_within, exchange, expect_response, request,
                     serve_forever)

SECRET = b"TOP SECRET: this file is outside the site\n"
HELLO = b"hello, world\n"
INDEX = b"<!doctype html><title>home</title><h1>home</h1>\n"


@pytest.fixture
def lesson(graded):
    return graded("lesson07_static_files")


@pytest.fixture
def site(tmp_path):
    """tmp/site is the root. Secrets live beside it: tmp/secret.txt, tmp/site-private/,
    tmp/outside/; symlinks inside the site point at them."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    for folder in ("site-private", "outside"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "evil").mkdir()
    (root / "index.html").write_bytes(INDEX)
    (root / "hello.txt").write_bytes(HELLO)
    (root / "hello world.txt").write_bytes(b"spaces\n")
    (root / "data.json").write_bytes(b'{"ok": true}\n')
    (root / "style.css").write_bytes(b"body { color: black }\n")
    (root / "blob.weird").write_bytes(b"\x00\x01binary")
    (root / "sub" / "page.txt").write_bytes(b"a page in a folder without index.html\n")
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (root / ".env").write_bytes(b"PASSWORD=hunter2\n")
    # Names a lenient decoder would reach: "%ff%fe" with errors="replace" is "\ufffd\ufffd",
    # and "back\\slash" is back/slash on Windows. Both must stay unreachable.
    (root / "\ufffd\ufffd.txt").write_bytes(b"reached through invalid UTF-8\n")
    (root / "back\\slash.txt").write_bytes(b"reached through a backslash\n")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path / "outside", root / "linkdir")
    os.symlink(tmp_path / "secret.txt", root / "evil" / "index.html")
    os.symlink(tmp_path / "site-private", root / "sibling")  # its name starts like the root's
    os.symlink(root / "hello.txt", root / "alias.txt")  # a symlink that stays inside
    os.symlink(root / "loop", root / "loop")  # points at itself: resolving it never ends
    return root


def call_safe_path(lesson, story, root, url):
    try:
        return lesson.safe_path(root, url)
    except NotImplementedError:
        raise
    except Exception as exc:
        story.fail(f"safe_path(root, {url!r}) to return a Path or None", describe(exc))


def same_file(got, expected: Path) -> bool:
    return got is not None and Path(got).resolve() == expected.resolve()


# Each way out of the root, with what it tries. All must give None (a 404).
def traversal_urls(site: Path):
    secret = str(site.parent / "secret.txt")
    return {
        "dot-dot": "/../secret.txt",
        "dot-dot-deeper": "/sub/../../secret.txt",
        "encoded-dots": "/%2e%2e/secret.txt",
        "encoded-dots-upper": "/%2E%2E/secret.txt",
        "encoded-slash": "/..%2fsecret.txt",
        "all-encoded": "/%2e%2e%2fsecret.txt",
        "double-encoded-is-a-name": "/%252e%252e/secret.txt",
        "backslash": "/..\\secret.txt",
        "encoded-backslash": "/%5c..%5csecret.txt",
        "absolute-encoded": "/" + urllib.parse.quote(secret, safe=""),
        "absolute-double-slash": "/" + secret,
        "sibling-prefix": "/../site-private/secret.txt",
        "nul-byte": "/hello.txt%00.html",
        "raw-nul": "/hello.txt\x00",
        "bad-utf8": "/%ff%fe.txt",
        "backslash-in-a-name": "/back%5cslash.txt",
        "symlink-file": "/link.txt",
        "symlink-dir": "/linkdir/secret.txt",
        "symlink-index": "/evil/",
        "symlink-to-sibling": "/sibling/secret.txt",
        "hidden-file": "/.env",
    }


ATTACKS = list(traversal_urls(Path("/x/site")))


# --------------------------------------------------------------------------- 07.safe_path


@pytest.mark.task("07.safe_path")
def test_safe_path_finds_files_inside_the_root(lesson, story, site):
    cases = {
        "/hello.txt": site / "hello.txt",
        "/hello%20world.txt": site / "hello world.txt",
        "/hello.txt?download=1#top": site / "hello.txt",
        "/hello.txt#top": site / "hello.txt",
        "/hello.txt#a#b": site / "hello.txt",
        "/hello.txt?a=1?b=2": site / "hello.txt",
        "/sub/page.txt": site / "sub" / "page.txt",
        "/%68ello.txt": site / "hello.txt",
        "/alias.txt": site / "hello.txt",
    }
    for url, expected in cases.items():
        got = call_safe_path(lesson, story, site, url)
        story.step(f"safe_path(root, {url!r}) returned {got}")
        story.check(same_file(got, expected), f"the file {expected.relative_to(site.parent)}",
                    repr(got))


@pytest.mark.task("07.safe_path")
def test_safe_path_gives_index_html_for_folders_and_never_a_listing(lesson, story, site):
    for url, expected in {"/": site / "index.html", "/docs/": site / "docs" / "index.html",
                          "/docs": site / "docs" / "index.html"}.items():
        got = call_safe_path(lesson, story, site, url)
        story.check(same_file(got, expected), f"safe_path(root, {url!r}) to be "
                    f"{expected.relative_to(site.parent)}", repr(got))
    for url in ["/sub/", "/sub", "/missing.txt", "/missing/"]:
        got = call_safe_path(lesson, story, site, url)
        story.check(got is None, f"safe_path(root, {url!r}) to be None (a folder without "
                    "index.html, or nothing at all: 404, never a listing)", repr(got))


@pytest.mark.task("07.safe_path")
@pytest.mark.parametrize("attack", ATTACKS)
def test_safe_path_refuses_every_way_out(lesson, story, site, attack):
    url = traversal_urls(site)[attack]
    got = call_safe_path(lesson, story, site, url)
    story.step(f"safe_path(root, {url!r}) returned {got!r}")
    story.check(got is None, f"None for {url!r} ({attack}): decode, resolve (symlinks too), "
                "then require the result inside the resolved root", repr(got))


@pytest.mark.task("07.safe_path")
def test_safe_path_accepts_a_relative_root(lesson, story, site, monkeypatch):
    monkeypatch.chdir(site.parent)
    story.step("called safe_path with root 'site' (relative to the current folder)")
    got = call_safe_path(lesson, story, "site", "/hello.txt")
    story.check(same_file(got, site / "hello.txt"), "site/hello.txt", repr(got))
    got = call_safe_path(lesson, story, "site", "/../secret.txt")
    story.check(got is None, "None for '/../secret.txt'", repr(got))


URL_PIECES = st.sampled_from(["/", ".", "..", "%2e", "%2f", "%5c", "\\", "%00", "sub", "docs",
                              "hello.txt", "secret.txt", "link.txt", "linkdir", "site",
                              "site-private", "outside", "%", "%2", "~", "?", "#", ".env"])


@pytest.mark.task("07.safe_path")
@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(URL_PIECES, max_size=8))
def test_safe_path_never_leaves_the_root(lesson, site, pieces):
    url = "/" + "".join(pieces)
    try:
        got = lesson.safe_path(site, url)
    except NotImplementedError:
        raise
    except Exception as exc:
        pytest.fail(f"safe_path(root, {url!r}) raised {describe(exc)}; expected a Path or "
                    "None", pytrace=False)
    if got is not None:
        got = Path(got).resolve()
        assert got.is_relative_to(site.resolve()) and got.is_file(), (
            f"safe_path(root, {url!r}) returned {got}, which is not a file inside the root")
        assert got.read_bytes() != SECRET, f"safe_path(root, {url!r}) reached a secret file"


# Names the operating system refuses to resolve: they raise OSError or RuntimeError inside
# pathlib, which must become a 404 like any other missing file, never a crash.
BROKEN_NAMES = {"name-too-long": "/" + "a" * 300, "symlink-loop": "/loop",
                "inside-a-loop": "/loop/hello.txt"}


@pytest.mark.task("07.safe_path")
@pytest.mark.parametrize("case", list(BROKEN_NAMES))
def test_safe_path_survives_names_the_system_refuses(lesson, story, site, case):
    url = BROKEN_NAMES[case]
    got = call_safe_path(lesson, story, site, url)
    story.step(f"safe_path(root, {short(url, 40)!r}) returned {got!r}")
    story.check(got is None, f"None for {short(url, 40)!r} ({case}): a name too long or a "
                "symlink loop raises OSError/RuntimeError in pathlib; that is a 404 too",
                repr(got))


# --------------------------------------------------------------------------- 07.content_type


@pytest.mark.task("07.content_type")
def test_content_type_by_extension(lesson, story):
    cases = {"index.html": "text/html", "a/b/page.HTM": "text/html", "style.css": "text/css",
             "data.json": "application/json", "notes.txt": "text/plain",
             "logo.png": "image/png", "photo.JPG": "image/jpeg", "icon.svg": "image/svg+xml",
             "archive.weird": "application/octet-stream", "Makefile": "application/octet-stream",
             "script.js": ("text/javascript", "application/javascript")}
    for name, expected in cases.items():
        try:
            got = lesson.content_type(Path(name))
        except NotImplementedError:
            raise
        except Exception as exc:
            story.fail(f"content_type({name!r}) to return a type", describe(exc))
        media = got.split(";")[0].strip().lower()
        allowed = expected if isinstance(expected, tuple) else (expected,)
        story.step(f"content_type({name!r}) -> {got!r}")
        story.check(media in allowed, f"{' or '.join(allowed)} for {name!r}", repr(got))
    text = lesson.content_type(Path("notes.txt"))
    story.check("charset=utf-8" in text.lower().replace(" ", ""),
                "text types to name their charset (text/plain; charset=utf-8)", repr(text))


# --------------------------------------------------------------------------- 07.static_server


class Tracked:
    """Wrap the server's handler class so a NotImplementedError raised in a server thread
    reaches the test (http.server would print it to stderr and just close the socket)."""

    def __init__(self, server):
        self.not_implemented = None
        outer = self
        base = server.RequestHandlerClass

        class Graded(base):
            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except NotImplementedError as exc:
                    outer.not_implemented = exc
                    self.close_connection = True

        server.RequestHandlerClass = Graded

    def raise_if_not_implemented(self):
        if self.not_implemented is not None:
            raise self.not_implemented


@contextlib.contextmanager
def static_server(lesson, site, story, mixin=None):
    """(address, tracker) of make_static_server(site) running in a thread. Used inside the
    test (not as a fixture), so a stub's NotImplementedError fails the test itself. A mixin
    class, if given, goes in front of the server's handler class."""
    try:
        server = lesson.make_static_server(site)
    except NotImplementedError:
        raise
    except Exception as exc:
        story.fail("make_static_server(root) to return a ThreadingHTTPServer", describe(exc))
    story.step("created make_static_server(<site>) (host and port left at their defaults)")
    host, port = server.server_address[:2]
    if host != "127.0.0.1" or port < 1024:
        server.server_close()
        story.fail("127.0.0.1 and port 0 by default (the OS picks a free port above 1023)",
                   f"{host}:{port}")
    if mixin is not None:
        server.RequestHandlerClass = type("Changed", (mixin, server.RequestHandlerClass), {})
    tracker = Tracked(server)
    with serve_forever(server, story) as address:
        yield address, tracker
    tracker.raise_if_not_implemented()


def get(static, story, target, method="GET", **kwargs):
    address, tracker = static
    try:
        return exchange(address, request(method, target), story,
                        f"a response to {method} {target}", head_only=method == "HEAD", **kwargs)
    except BaseException:
        tracker.raise_if_not_implemented()
        raise


@pytest.mark.task("07.static_server")
def test_server_sends_files_with_type_and_length(lesson, site, story):
    with static_server(lesson, site, story) as static:
        check_files(static, story)


def check_files(static, story):
    for target, body, media in [("/hello.txt", HELLO, "text/plain"), ("/", INDEX, "text/html"),
                                ("/data.json", b'{"ok": true}\n', "application/json"),
                                ("/hello%20world.txt", b"spaces\n", "text/plain"),
                                ("/blob.weird", b"\x00\x01binary", "application/octet-stream")]:
        reply = get(static, story, target)
        check_status(story, reply, 200)
        story.check(reply.body == body, f"the file's bytes {short(body)}", short(reply.body))
        got = (reply.header("content-type") or "").split(";")[0].strip()
        story.check(got == media, f"Content-Type {media}", repr(reply.header("content-type")))
        story.check((reply.header("x-content-type-options") or "").lower() == "nosniff",
                    "X-Content-Type-Options: nosniff (the browser keeps our Content-Type)",
                    short(reply.raw_head, 300))
        check_server_header(story, reply)


def check_server_header(story, reply):
    server = reply.header("server") or ""
    story.check("python" not in server.lower() and platform.python_version() not in server,
                "a Server header that names no Python version (version_string: the default "
                "tells an attacker which CVEs to try)", repr(server))


@pytest.mark.task("07.static_server")
def test_server_answers_head_without_a_body(lesson, site, story):
    with static_server(lesson, site, story) as static:
        check_head(static, story)


def check_head(static, story):
    address, tracker = static
    with socket.create_connection(address, timeout=WAIT) as sock:
        sock.sendall(request("HEAD", "/hello.txt") + request("GET", "/hello.txt"))
        story.step("sent HEAD /hello.txt and GET /hello.txt on one connection")
        reader = Reader(sock)
        try:
            head = expect_response(reader, story, "a response to HEAD", head_only=True)
        finally:
            tracker.raise_if_not_implemented()
        check_status(story, head, 200)
        story.check(head.header("content-length") == str(len(HELLO)),
                    f"Content-Length {len(HELLO)} (the size a GET would send)",
                    repr(head.header("content-length")))
        story.check(not reader.buffer or reader.buffer.startswith(b"HTTP/"),
                    "no body after the HEAD response", short(bytes(reader.buffer)))
        reply = expect_response(reader, story, "the GET response right after the HEAD one "
                                "(a HEAD answer that carried a body would garble it)")
        check_status(story, reply, 200)
        story.check(reply.body == HELLO, repr(HELLO), short(reply.body))
        sock.sendall(request("HEAD", "/missing.txt") + request("GET", "/hello.txt"))
        story.step("sent HEAD /missing.txt and GET /hello.txt on the same connection")
        head = expect_response(reader, story, "a response to HEAD /missing.txt", head_only=True)
        check_status(story, head, 404)
        reply = expect_response(reader, story, "the GET response right after the HEAD 404 "
                                "(a 404 to HEAD carries no body either)")
        story.check(reply.status == 200 and reply.body == HELLO, f"200 with {short(HELLO)}",
                    str(reply))


class ChangesAfterTheHead:
    """A handler mixin: once the head of GET /app.log is out (its Content-Length taken from
    the open file), `change` alters the file before the body is sent, as a log being
    written to would."""
    change = None

    def end_headers(self):
        super().end_headers()
        if self.path == "/app.log":
            type(self).change(Path(self.server.root) / "app.log")


@pytest.mark.task("07.static_server")
def test_server_sends_exactly_the_announced_length_of_a_growing_file(lesson, site, story):
    (site / "app.log").write_bytes(b"line 1\n")

    class Grows(ChangesAfterTheHead):
        @staticmethod
        def change(path):
            with open(path, "ab") as out:
                out.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")

    with static_server(lesson, site, story, Grows) as (address, tracker):
        with socket.create_connection(address, timeout=WAIT) as sock:
            sock.sendall(request("GET", "/app.log") + request("GET", "/missing.txt"))
            story.step("sent GET /app.log and GET /missing.txt in one packet; the file grows "
                       "by a forged response between the head and the body")
            reader = Reader(sock)
            try:
                first = expect_response(reader, story, "the response to GET /app.log")
            finally:
                tracker.raise_if_not_implemented()
            story.check(first.status == 200 and first.body == b"line 1\n",
                        "200 with exactly the 7 bytes announced", str(first))
            second = expect_response(reader, story, "the response to GET /missing.txt")
            check_status(story, second, 404, "the file's new bytes must not pass for the next "
                         "response: send exactly Content-Length bytes")


@pytest.mark.task("07.static_server")
def test_server_sends_empty_and_one_byte_files_on_one_connection(lesson, site, story):
    (site / "empty.txt").write_bytes(b"")
    (site / "one.txt").write_bytes(b"1")
    with static_server(lesson, site, story) as (address, tracker):
        with socket.create_connection(address, timeout=WAIT) as sock:
            reader = Reader(sock)
            for target, body in [("/one.txt", b"1"), ("/empty.txt", b""), ("/one.txt", b"1")]:
                sock.sendall(request("GET", target))
                try:
                    reply = expect_response(reader, story, f"a response to GET {target} on "
                                            "the same connection")
                finally:
                    tracker.raise_if_not_implemented()
                story.check(reply.status == 200 and reply.body == body,
                            f"200 with {body!r} (the last byte too)", str(reply))


@pytest.mark.task("07.static_server")
def test_server_never_sends_a_short_body_on_a_kept_alive_connection(lesson, site, story):
    content = b"0123456789" * 10
    (site / "app.log").write_bytes(content)

    class Shrinks(ChangesAfterTheHead):
        @staticmethod
        def change(path):
            with open(path, "r+b") as out:
                out.truncate(30)

    with static_server(lesson, site, story, Shrinks) as (address, tracker):
        with socket.create_connection(address, timeout=WAIT) as sock:
            sock.sendall(request("GET", "/app.log") + request("GET", "/missing.txt"))
            story.step("sent GET /app.log (100 bytes) and GET /missing.txt in one packet; the "
                       "file is cut to 30 bytes between the head and the body")
            reader = Reader(sock)
            try:
                first = expect_response(reader, story, "the head of GET /app.log",
                                        head_only=True)
            finally:
                tracker.raise_if_not_implemented()
            story.check(first.status == 200 and first.header("content-length") == "100",
                        "200 with Content-Length: 100", short(first.raw_head, 300))
            how, took, rest = closed_within(sock, 1.0)
            rest = bytes(reader.buffer) + rest
            if len(rest) >= 100:  # the whole announced body (read before the cut): fine
                story.check(rest[:100] == content, "the 100 bytes announced", short(rest))
                story.check(rest[100:].startswith(b"HTTP/1.1 404"), "then the 404 for "
                            "/missing.txt", short(rest[100:]))
            else:
                story.check(how in ("closed", "reset") and rest == content[:len(rest)],
                            "the bytes the file still has, then the connection closed (a short "
                            "body on an open connection would make the next response's bytes "
                            "the end of this one)", f"{how} after {short(rest)}")


@pytest.mark.task("07.static_server")
def test_server_keeps_the_connection_alive(lesson, site, story):
    with static_server(lesson, site, story) as static:
        check_keep_alive(static, story)


def check_keep_alive(static, story):
    address, tracker = static
    with socket.create_connection(address, timeout=WAIT) as sock:
        reader = Reader(sock)
        for target, body in [("/hello.txt", HELLO), ("/docs/", b"<h1>docs</h1>\n")]:
            sock.sendall(request("GET", target))
            story.step(f"sent GET {target} on the same connection")
            try:
                reply = expect_response(reader, story, f"a response to GET {target} (HTTP/1.1 "
                                        "keeps the connection open: protocol_version)")
            finally:
                tracker.raise_if_not_implemented()
            story.check(reply.status == 200 and reply.body == body, f"200 with {short(body)}",
                        str(reply))


@pytest.mark.task("07.static_server")
def test_server_answers_every_attack_with_the_same_404(lesson, site, story):
    with static_server(lesson, site, story) as static:
        check_attacks(static, story, site)


def check_attacks(static, story, site):
    missing = get(static, story, "/no-such-file.txt")
    check_status(story, missing, 404, "a missing file")
    for attack, url in {**traversal_urls(site), **BROKEN_NAMES}.items():
        target = url.replace("\x00", "%00")  # a raw NUL cannot travel in a request line
        reply = get(static, story, target)
        story.check(SECRET not in reply.body and b"hunter2" not in reply.body,
                    "no secret in the response", short(reply.body))
        story.check(reply.status == 404, f"404 for {short(target, 40)!r} ({attack})",
                    str(reply))
        story.check(reply.body == missing.body, "the same body as for any missing file (a "
                    "different page would tell the attacker they hit something)",
                    f"{short(reply.body)} instead of {short(missing.body)}")


@pytest.mark.task("07.static_server")
def test_server_logs_each_request_through_logging(lesson, site, story, caplog):
    caplog.set_level(logging.INFO)
    with static_server(lesson, site, story) as static:
        with socket.create_connection(static[0], timeout=WAIT) as sock:
            sock.sendall(request("GET", "/hello.txt"))
            expect_response(Reader(sock), story, "a response to GET /hello.txt")
            port = sock.getsockname()[1]
        time.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records]
    story.check(any(line.startswith("127.0.0.1 ") and '"GET /hello.txt HTTP/1.1" 200' in line
                    for line in lines),
                "a log record (logging, not print: a notebook's background thread never prints) "
                "'127.0.0.1 \"GET /hello.txt HTTP/1.1\" 200 ...'", repr(lines[-3:]))
    story.check(not any(str(port) in line.split(" ")[0] for line in lines),
                "the client's address first in the line", repr(lines[-3:]))


@pytest.mark.task("07.static_server")
def test_server_escapes_control_characters_in_its_log(lesson, site, story, caplog):
    caplog.set_level(logging.INFO)
    target = b"/x\x1b[2J\rFAKE-200-LINE"  # ESC clears a terminal; CR rewrites the line
    with static_server(lesson, site, story) as static:
        with socket.create_connection(static[0], timeout=WAIT) as sock:
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            story.step(f"sent GET {target!r} HTTP/1.1")
            reply = expect_response(Reader(sock), story, "a response to that request")
            # The CR splits the request line into four words: http.server answers 400.
            story.check(reply.status in (400, 404), "400 or 404", str(reply))
        time.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if "FAKE-200-LINE" in r.getMessage()]
    story.check(bool(lines), "a log record naming the request", repr(caplog.messages[-3:]))
    for line in lines:
        raw = [c for c in line if ord(c) < 0x20 or ord(c) == 0x7f]
        story.check(not raw, "no raw control character in any log record (escape them, as "
                    "http.server does: '\\x1b', '\\x0d'): ESC and CR forge what a terminal "
                    "shows", repr(line))


@pytest.mark.task("07.static_server")
def test_server_never_lists_a_folder(lesson, site, story):
    with static_server(lesson, site, story) as static:
        check_no_listing(static, story)


def check_no_listing(static, story):
    for target in ["/sub/", "/sub"]:
        reply = get(static, story, target)
        story.check(reply.status == 404 and b"page.txt" not in reply.body,
                    f"404 without a listing for {target}", str(reply))
        story.check((reply.header("content-type") or "").startswith("text/plain") and
                    (reply.header("x-content-type-options") or "").lower() == "nosniff",
                    "the 404 page as text/plain, with X-Content-Type-Options: nosniff",
                    short(reply.raw_head, 300))
        check_server_header(story, reply)
