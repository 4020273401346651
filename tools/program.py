"""Start a course server program and learn where it listens.

Every program in the course prints `listening on HOST:PORT` (or `listening on http://HOST:PORT`)
as its first stdout line, flushed. The benchmark and the soak tests start the program with
`--port 0` and read that line, so they never guess a port.
"""
from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRST_LINE = re.compile(r"listening on (?:http://)?([\d.]+):(\d+)")


def start_listening(command: list[str], timeout: float = 20.0):
    """Run `command` from the repo root (stdout piped, stderr discarded, so a full pipe can
    never block the server) and wait up to `timeout` s for its first line.

    Returns (process, (host, port)); raises RuntimeError, after killing it, if no
    'listening on' line came in time."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    box = {}
    # readline() in a thread: a program that prints nothing must not hang the caller.
    reader = threading.Thread(target=lambda: box.update(line=proc.stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(timeout)
    match = FIRST_LINE.match(box.get("line", ""))
    if not match:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{' '.join(command)} did not print 'listening on HOST:PORT' "
                           f"within {timeout:g} s (got {box.get('line')!r})")
    return proc, (match.group(1), int(match.group(2)))
