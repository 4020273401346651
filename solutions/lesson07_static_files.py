"""Lesson 07 (reference): HTTP on a socket, and a static-file server that is safe by construction.

HTTP/1.1 is text over the TCP byte stream of Part A: a request line, header lines, an empty
line (CRLF CRLF), then exactly Content-Length bytes of body. The standard library's
`http.server` speaks it for us -- but it limits nothing (no body cap, a timeout per recv
rather than a deadline, no cap on connections), and its SimpleHTTPRequestHandler lists
directories. This lesson keeps `ThreadingHTTPServer` and writes the part that decides
which file a URL may open:

    safe_path(root, "/docs/a%20b.txt")  -> root/docs/a b.txt   (if it exists, inside root)
    safe_path(root, "/../etc/passwd")   -> None                (404, like any missing file)

`'..' in path` is NOT a traversal check: `%2e%2e`, `..%2f`, a backslash, an absolute path or
a symlink all walk out of the root without the two dots appearing in the raw URL. The only
check that holds is the last one: decode, resolve (symlinks included), then require that
the result is still inside the resolved root.

    server = make_static_server("solutions/site")     # port 0: the OS picks a free port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ...
    server.shutdown(); server.server_close()
"""
from __future__ import annotations

import logging
import os
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath, PureWindowsPath

log = logging.getLogger(__name__)

# An explicit table: the mimetypes module reads the system's own files (/etc/mime.types, the
# Windows registry), so the same file would get different types on different machines.
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
# Unknown files are offered as opaque bytes: a browser then downloads instead of rendering.
DEFAULT_TYPE = "application/octet-stream"
INDEX = "index.html"
NOT_FOUND_BODY = b"404 Not Found\n"  # one body for every refusal: a 404 reveals nothing
CHUNK = 64 * 1024
# Log escapes: a request line may carry ESC (terminal commands) or CR (overwrite the line) and
# forge a log entry. http.server escapes these itself, but only in the log_message we replace.
LOG_ESCAPES = str.maketrans({c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)]}
                            | {ord("\\"): "\\\\"})


def content_type(path) -> str:
    """The Content-Type for a file, by its extension (case-insensitive), from CONTENT_TYPES."""
    return CONTENT_TYPES.get(PurePosixPath(str(path)).suffix.lower(), DEFAULT_TYPE)


def _inside(path: Path, root: Path) -> bool:
    # Compares path components, not strings: "/srv/site-private" starts with the string
    # "/srv/site" but is not inside the folder /srv/site.
    return path.is_relative_to(root)


def safe_path(root, url_path: str) -> Path | None:
    """The file under `root` that `url_path` names, or None (answer 404) if there is none
    or the URL tries to leave the root. Directories give their index.html, never a listing.

    1. drop the query and fragment; the path must start with "/";
    2. percent-decode strictly: invalid UTF-8, NUL bytes and backslashes are refused;
    3. refuse absolute paths and drives after decoding ("/%2Fetc/passwd", "/C:/...") and
       hidden names (".git", ".env", and ".." itself);
    4. join under the root and resolve() -- this follows symlinks;
    5. require the resolved path to be inside the resolved root. Only this step is the
       defence; the earlier ones just refuse nonsense early.
    """
    path = url_path.split("#", 1)[0].split("?", 1)[0]
    if not path.startswith("/"):
        return None
    try:
        decoded = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    if "\x00" in decoded or "\\" in decoded:  # NUL ends C strings; "\" is a separator on Windows
        return None
    relative = decoded[1:]
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).anchor:
        return None  # root / "/etc/passwd" would be /etc/passwd: pathlib drops the root
    if any(part.startswith(".") for part in PurePosixPath(relative).parts):
        return None
    base = Path(root).resolve()
    try:
        candidate = (base / relative).resolve()
        if not _inside(candidate, base):
            return None
        if candidate.is_dir():
            candidate = (candidate / INDEX).resolve()  # index.html may be a symlink too
            if not _inside(candidate, base):
                return None
        return candidate if candidate.is_file() else None
    except (OSError, RuntimeError):  # a name too long, a symlink loop: nothing to serve
        return None


class StaticHandler(BaseHTTPRequestHandler):
    """GET and HEAD for files under `server.root`; 404 for anything safe_path refuses.

    Other methods get http.server's own 501. Lesson 08 validates requests properly."""

    protocol_version = "HTTP/1.1"  # keep-alive: every response carries a Content-Length
    timeout = 10  # http.server's only time limit: PER RECV (lesson 09 shows why that is weak)

    def version_string(self) -> str:
        return "course-static"  # the default names the Python version: free help for attackers

    def do_GET(self):
        self.serve(head=False)

    def do_HEAD(self):
        self.serve(head=True)

    def serve(self, head: bool) -> None:
        path = safe_path(self.server.root, self.path)
        if path is None:
            self.send_plain(404, NOT_FOUND_BODY, head)
            return
        try:
            file = open(path, "rb")
        except OSError:  # vanished or unreadable since safe_path looked: still just a 404
            self.send_plain(404, NOT_FOUND_BODY, head)
            return
        with file:
            size = os.fstat(file.fileno()).st_size  # the size of what we opened, not of a name
            self.send_response(200)
            self.send_header("Content-Type", content_type(path))
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if not head:
                self.send_file_body(file, size)

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
    """A ThreadingHTTPServer serving the files under `root` with StaticHandler (not started:
    call serve_forever() in a thread; shutdown() and server_close() to stop)."""
    server = ThreadingHTTPServer((host, port), StaticHandler)  # daemon threads by default
    server.root = Path(root).resolve()
    return server
