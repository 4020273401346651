"""The grading harness survives the student code it grades.

A student's module may not import, may block forever, or may leave threads running. Each of
these must fail the tests it touches, with a message, while the rest of the run goes on and
the run itself ends.
"""
import time

import pytest

from gradingrun import copy_of_solutions, listing, run_graders


def rewrite(path, find, replace):
    source = path.read_text(encoding="utf-8")
    assert source.count(find) == 1, f"{path.name} no longer contains {find!r}"
    path.write_text(source.replace(find, replace), encoding="utf-8")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """Grade a copy of the reference in which lesson 01 does not import, lesson 02's server
    starts a thread that never ends, and lesson 03's recv_exact can block forever."""
    copy = copy_of_solutions(tmp_path_factory.mktemp("hostile"), "hostile_student")
    (copy / "lesson01_lifecycle.py").write_text("def make_listener(:\n", encoding="utf-8")
    # A student who starts a helper thread in start() and forgets it: not a daemon, never ends.
    rewrite(copy / "lesson02_threads.py", "        self._accept_thread.start()\n",
            "        self._accept_thread.start()\n        import time\n"
            "        threading.Thread(target=time.sleep, args=(3600,), name='forgotten').start()\n")
    rewrite(copy / "lesson03_framing.py", "    buffer = bytearray()  # appending",
            "    sock.settimeout(None)  # no timeout, and a bug: waits for a byte nobody sends\n"
            "    n = max(n, 1)\n    buffer = bytearray()  # appending")
    started = time.monotonic()
    run = run_graders(copy, "-k", "lesson01 or lesson02 or lesson03", "--grader-timeout", "5",
                      timeout=240)
    run.seconds = time.monotonic() - started
    return run


def test_a_module_that_does_not_import_fails_only_its_own_lesson(hostile_run):
    lesson01 = [o for o in hostile_run.outcomes if o.lesson == "01"]
    assert lesson01 and all(o.status in ("failed", "error") for o in lesson01)
    assert all("Importing" in o.message and "SyntaxError" in o.message for o in lesson01)


def test_code_that_blocks_forever_is_failed_by_the_timeout(hostile_run):
    timed_out = [o for o in hostile_run.outcomes if "from pytest-timeout" in o.message]
    assert timed_out, hostile_run.output[-3000:]
    assert all(o.lesson == "03" for o in timed_out)
    # The lesson 03 tests that never wait for data still pass: the run went on.
    assert any(o.status == "passed" for o in hostile_run.outcomes if o.lesson == "03")


def test_threads_left_running_fail_the_test_and_do_not_stop_the_run_ending(hostile_run):
    lesson02 = [o for o in hostile_run.outcomes if o.lesson == "02"]
    assert lesson02 and all(o.status == "failed" for o in lesson02)
    assert all("stop() to end every thread" in o.message and "forgotten" in o.message
               for o in lesson02), listing(lesson02)
    assert "threads still running after grading" in hostile_run.output
    assert hostile_run.returncode not in (0, None)
