"""The hardened HTTP server program survives the HTTP soak (tools/soak_http.py).

A short run of the same script the closing figures come from: every hostile scenario of
lessons 07-09 (a few connections each, clocks of 0.5 s), an honest visitor after each that
must get every answer right, then SIGTERM and a clean exit.
"""
import subprocess
import sys

import pytest

from gradingrun import REPO

# Bounded by the work: ~3 deadlines per slow scenario plus a few seconds of quick ones.
pytestmark = pytest.mark.timeout(150)


def test_the_hardened_server_loses_no_honest_request_under_hostile_http():
    done = subprocess.run([sys.executable, "-m", "tools.soak_http", "--count", "5",
                           "--deadline", "0.5", "--max-clients", "8"], cwd=REPO,
                          capture_output=True, text=True, timeout=140)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert ", 0 lost" in out and "SIGTERM: exit status 0" in out, out
    assert " BAD " not in out and "died" not in out, out
    for scenario in ("oversize body", "Content-Length + TE", "header flood", "long URI",
                     "path traversal", "slow headers", "slow body", "slow read", "over the cap",
                     "503 + Retry-After", "resets mid-request", "pipelined requests"):
        rows = [line for line in out.splitlines() if line.startswith(scenario)]
        assert rows and "  ok  " in rows[0], f"{scenario}:\n{out}"
    assert "5/5 dropped" in out, out  # slow headers and slow body, each by its deadline
