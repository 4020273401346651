"""Lesson 07 exercise: a static-file server that is safe by construction.
Notebook: lessons/07_http_on_a_socket.ipynb

A URL names a file under a root folder. An attacker's URL names a file OUTSIDE it:

    /../secret.txt        /%2e%2e/secret.txt      /..%2fsecret.txt     /..\\secret.txt
    /%2Fetc%2Fpasswd      /hello.txt%00.html      /link.txt  (a symlink pointing out)

`'..' in path` stops only the first. What stops all of them: decode, resolve (which follows
symlinks), then require the result to be inside the resolved root.

Grade yourself with:

    pytest exercises -k lesson07

This lesson builds on the standard library only (http.server's ThreadingHTTPServer and
BaseHTTPRequestHandler); nothing from earlier lessons is needed.
"""
from __future__ import annotations

import logging
import os
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath, PureWindowsPath

log = logging.getLogger(__name__)

# An explicit table, not the mimetypes module: mimetypes reads the system's own files, so the
# same file would get a different type on another machine.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".pdf": "application/pdf",
}
DEFAULT_TYPE = "application/octet-stream"  # unknown: the browser downloads, never renders
INDEX = "index.html"
NOT_FOUND_BODY = b"404 Not Found\n"  # ONE body for every refusal: a 404 must reveal nothing
CHUNK = 64 * 1024
# Log escapes: a request line may carry ESC (terminal commands) or CR (overwrite the line) and
# forge a log entry. http.server escapes these itself, but only in the log_message we replace.
LOG_ESCAPES = str.maketrans({c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)]}
                            | {ord("\\"): "\\\\"})


def content_type(path) -> str:
    """The Content-Type for `path` by its extension, case-insensitive (".HTML" is HTML),
    from CONTENT_TYPES; DEFAULT_TYPE for anything else, including no extension."""
    raise NotImplementedError("content_type(): look the lower-case suffix up in "
                              "CONTENT_TYPES, DEFAULT_TYPE otherwise")


def safe_path(root, url_path: str) -> Path | None:
    """The file under `root` that `url_path` names, or None (the server answers 404).

    1. drop the query ("?...") and fragment ("#..."); the path must start with "/";
    2. percent-decode strictly: urllib.parse.unquote(path, errors="strict") -- invalid UTF-8
       is a None, and so are a NUL byte and a backslash in the result;
    3. refuse what is absolute after decoding ("/%2Fetc/passwd": careful, root / "/etc"
       IS /etc in pathlib) or has a drive (PureWindowsPath(rest).anchor), and any name that
       starts with "." (.git, .env, and ".." itself);
    4. join under Path(root).resolve() and resolve() the result: this follows symlinks;
    5. require the resolved path inside the resolved root: Path.is_relative_to, not
       str.startswith ("/srv/site-private" starts with "/srv/site").
    A folder gives its index.html (resolve and check that too: it may be a symlink), or
    None: never a listing. Anything that is not an existing file gives None.
    """
    raise NotImplementedError("safe_path(): decode strictly, resolve under the root, then "
                              "require containment (is_relative_to); None for anything else")


class StaticHandler(BaseHTTPRequestHandler):
    """GET and HEAD for files under self.server.root; 404 for anything safe_path refuses."""

    protocol_version = "HTTP/1.1"  # keep-alive: so every response needs a Content-Length
    timeout = 10  # http.server's only clock, and it is PER RECV (lesson 09 replaces it)

    def version_string(self) -> str:
        return "course-static"  # the default names the Python version: free help for attackers

    def do_GET(self):
        self.serve(head=False)

    def do_HEAD(self):
        self.serve(head=True)

    def serve(self, head: bool) -> None:
        """Answer one GET (head=False) or HEAD (head=True).

        safe_path(self.server.root, self.path) is None -> self.send_plain(404,
        NOT_FOUND_BODY, head). Otherwise open the file, take its size from the OPEN file
        (os.fstat(f.fileno()).st_size), send_response(200), send_header("Content-Type", ...),
        send_header("Content-Length", ...), end_headers(), and -- unless head --
        self.send_file_body(f, size) (given below: exactly the size announced, even if the
        file changes meanwhile). A file that cannot be opened is a 404 too.
        """
        raise NotImplementedError("StaticHandler.serve(): safe_path, then 200 with "
                                  "Content-Type and Content-Length, the body unless HEAD")

    def send_file_body(self, file, size: int) -> None:
        """Exactly `size` bytes of `file`: the Content-Length already announced. A file that
        grew since is cut there (its new bytes would pass for the next response on a
        kept-alive connection); one that shrank ends the connection (the client sees a short
        body and a close, never a stream out of step)."""
        left = size
        while left > 0:
            chunk = file.read(min(CHUNK, left))
            if not chunk:
                self.close_connection = True
                return
            self.wfile.write(chunk)
            left -= len(chunk)

    def send_plain(self, status: int, body: bytes, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format, *args):
        # To the logging module, not straight to stderr; controls escaped: one request, one line.
        log.info("%s %s", self.client_address[0], (format % args).translate(LOG_ESCAPES))


def make_static_server(root, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer((host, port), StaticHandler) (its threads are daemon threads)
    with `server.root` set to Path(root).resolve(). Do not start it: the caller runs
    serve_forever() in a thread, and later shutdown() and server_close()."""
    raise NotImplementedError("make_static_server(): ThreadingHTTPServer((host, port), "
                              "StaticHandler), then set server.root")
