"""The reference server program survives the soak (tools/soak.py) with no honest reply lost.

A small run of the same script the closing figures come from: every hostile scenario, then
an honest client that must get every reply, then SIGTERM and a clean exit.
"""
import subprocess
import sys

from gradingrun import REPO


def test_the_reference_server_loses_no_honest_reply_under_hostile_traffic():
    done = subprocess.run([sys.executable, "-m", "tools.soak", "--count", "30"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ", 0 lost" in done.stdout and "SIGTERM: exit status 0" in done.stdout, done.stdout
    assert "30/30 closed within 1 s" in done.stdout, done.stdout
    assert "8/8 dropped by the 1 s deadline" in done.stdout, done.stdout
