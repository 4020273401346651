"""The grading harness survives the student code it grades, and tells the story when it fails.

A student's module may not import, may block forever, or may leave threads running. Each of
these must fail the tests it touches, with a message, while the rest of the run goes on and
the run itself ends. An exception nobody expected still ends as a narrated story, a call that
never returns says so, and a whole grading run that hangs is killed at its bound, by name.
"""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from gradingrun import (EXERCISES, LESSON_RUN_TIMEOUT_S, REPO, SLACK_S, STUDENT_NOTE,
                        callspec_param, committed_stubs, copy_of_solutions, graded_copy, listing,
                        parse_junit, run_graders)

# The hostile tests each read one lesson's grading run (tests/conftest.py starts it early).
ONE_RUN = pytest.mark.timeout(LESSON_RUN_TIMEOUT_S + SLACK_S)
# The other tests run one small pytest process or a git command of their own: a few seconds
# idle; a minute covers a machine several times slower.
SMALL = pytest.mark.timeout(60)


def rewrite(path, find, replace):
    source = path.read_text(encoding="utf-8")
    assert source.count(find) == 1, f"{path.name} no longer contains {find!r}"
    path.write_text(source.replace(find, replace), encoding="utf-8")


# --------------------------------------------------------------------------- hostile code


def does_not_import(copy):
    (copy / "lesson01_lifecycle.py").write_text("def make_listener(:\n", encoding="utf-8")


def leaves_a_thread_running(copy):
    """A student who starts a helper thread in start() and forgets it: not a daemon, never ends."""
    rewrite(copy / "lesson02_threads.py", "        self._accept_thread.start()\n",
            "        self._accept_thread.start()\n        import time\n"
            "        threading.Thread(target=time.sleep, args=(3600,), name='forgotten').start()\n")


def blocks_forever(copy):
    """recv_exact without a timeout, waiting for a byte nobody sends."""
    rewrite(copy / "lesson03_framing.py", "    buffer = bytearray()  # appending",
            "    sock.settimeout(None)  # no timeout, and a bug: waits for a byte nobody sends\n"
            "    n = max(n, 1)\n    buffer = bytearray()  # appending")


# lesson -> (what the student did, the graders to run: enough to show it, no more)
HOSTILE = {"01": (does_not_import, "lesson01"),
           "02": (leaves_a_thread_running, "start or stop"),
           "03": (blocks_forever, "recv_exact")}


def grading_job(item):
    lesson = callspec_param(item, "hostile")
    if lesson is None:
        return None
    prepare, selection = HOSTILE[lesson]
    return (("hostile", lesson), graded_copy, "hostile_student", prepare, lesson,
            "-k", selection, "--grader-timeout", "5")


@ONE_RUN
@pytest.mark.parametrize("hostile", ["01"])
def test_a_module_that_does_not_import_fails_only_its_own_lesson(hostile, grading_run):
    lesson01 = [o for o in grading_run.outcomes if o.lesson == "01"]
    assert lesson01 and all(o.status in ("failed", "error") for o in lesson01)
    assert all("Importing" in o.message and "SyntaxError" in o.message for o in lesson01)


@ONE_RUN
@pytest.mark.parametrize("hostile", ["03"])
def test_code_that_blocks_forever_is_failed_by_the_timeout(hostile, grading_run):
    timed_out = [o for o in grading_run.outcomes if "from pytest-timeout" in o.message]
    assert timed_out, grading_run.tail()
    # The lesson 03 tests that never wait for data still pass: the run went on.
    assert any(o.status == "passed" for o in grading_run.outcomes if o.lesson == "03")


@ONE_RUN
@pytest.mark.parametrize("hostile", ["02"])
def test_threads_left_running_fail_the_test_and_do_not_stop_the_run_ending(hostile, grading_run):
    lesson02 = [o for o in grading_run.outcomes if o.lesson == "02"]
    assert lesson02 and all(o.status == "failed" for o in lesson02)
    assert all("forgotten" in o.message for o in lesson02), listing(lesson02)
    assert "threads still running after grading" in grading_run.output
    assert grading_run.returncode not in (0, None)


# --------------------------------------------------------------------------- a hung run


@SMALL
def test_a_grading_run_that_hangs_is_killed_at_its_bound_with_what_it_started(tmp_path):
    """The bound is the run's own: it fires on time, kills the programs the run started too
    (they would keep its output open), and the failure names the run."""
    copy = copy_of_solutions(tmp_path, "hung_student")
    pid_file = tmp_path / "grandchild.pid"
    (copy / "lesson01_lifecycle.py").write_text(textwrap.dedent(f"""\
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(120)  # hangs while being imported
        """), encoding="utf-8")
    started = time.monotonic()
    run = run_graders(copy, "-k", "listener", lesson="01", timeout=4)
    took = time.monotonic() - started
    assert run.timed_out and took < 4 + 10, f"took {took:.1f} s\n{run.tail()}"
    with pytest.raises(AssertionError, match=r"did not finish within 4 s and was killed"):
        run.check_finished()
    pid = int(pid_file.read_text())
    assert not process_alive(pid), "a program the hung run started was left running"


def process_alive(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # do not leave it behind either way
    return True


# --------------------------------------------------------------------------- the stubs


@SMALL
def test_the_stubs_graded_are_the_committed_ones_whatever_the_working_copy_holds(tmp_path):
    """A student has solved lesson 01 in the working copy: the honesty checks still grade the
    untouched stub from git, which fails every grader, saying what to implement."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("this check needs git and a clone; without them the suite grades the "
                    "working copy and says so (see the next test)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(clone)], check=True,
                   capture_output=True, timeout=60)
    solved = clone / "exercises" / "lesson01_lifecycle.py"
    solved.write_text((REPO / "solutions" / "lesson01_lifecycle.py").read_text(encoding="utf-8"),
                      encoding="utf-8")
    folder, note = committed_stubs(tmp_path / "graded", repo=clone)
    assert note == "" and folder.name == "stubs_as_committed"
    stub = (folder / "lesson01_lifecycle.py").read_text(encoding="utf-8")
    assert "NotImplementedError" in stub and stub != solved.read_text(encoding="utf-8")
    run = run_graders(folder, "-k", "listener", lesson="01", timeout=60)
    assert run.outcomes and all(o.status == "failed" and "Not implemented yet:" in o.message
                                for o in run.outcomes), listing(run.outcomes)


@SMALL
def test_without_git_the_working_copy_is_graded_and_the_failure_says_so(tmp_path):
    not_a_clone = tmp_path / "unpacked-zip"
    (not_a_clone / "exercises").mkdir(parents=True)
    folder, note = committed_stubs(tmp_path / "graded", repo=not_a_clone)
    assert folder == not_a_clone / "exercises"
    assert "WORKING COPY" in note and STUDENT_NOTE in note
    assert "`pytest exercises` is your command" in STUDENT_NOTE


# --------------------------------------------------------------------------- narration


STUDENT_CODE = '''
class MessageTooLarge(ValueError):
    pass


def recv_msg(sock, max_size=10):          # off by one at the cap
    if 10 >= max_size:
        raise MessageTooLarge(f"10 bytes > cap {max_size}")
'''

NARRATED_GRADERS = '''
import socket

import pytest

from graderkit import run_in_thread

from .lesson03_framing import recv_msg  # "the student's code"


def echo_helper(sock):                    # a grader helper; the student's side has closed
    sock.sendall(b"x" * 65536)


@pytest.mark.task("01.listener")
def test_student_exception(story):
    story.step("sent a frame of exactly 10 bytes, the cap")
    recv_msg(None)


@pytest.mark.task("01.listener")
def test_helper_exception(story):
    ours, theirs = socket.socketpair()
    theirs.close()
    story.step("the client sent 64 KiB")
    with ours:
        for _ in range(3):
            echo_helper(ours)


@pytest.mark.task("01.listener")
def test_never_returns(story):
    story.step("called serve_forever() in a thread")
    run_in_thread(lambda: __import__("time").sleep(5)).result_for(story, "it to return", 0.2)


@pytest.mark.task("01.listener")
def test_never_returns_uncaught(story):
    def serve_forever():
        __import__("time").sleep(5)
    run_in_thread(serve_forever).result(0.2)
'''


@SMALL
def test_unexpected_exceptions_and_hangs_end_as_the_story(tmp_path):
    """Graders of our own, in a copy of the grading plugin, meet a student's exception that
    escapes, a grader helper's BrokenPipeError, and calls that never return."""
    folder = tmp_path / "exercises"
    folder.mkdir()
    for name in ("conftest.py", "graderkit.py", "tasks.toml", "__init__.py"):
        shutil.copy(EXERCISES / name, folder / name)
    # The student's "code" sits in the graded folder under a graded module's name.
    (folder / "lesson03_framing.py").write_text(STUDENT_CODE, encoding="utf-8")
    (folder / "test_lesson01_narrated.py").write_text(NARRATED_GRADERS, encoding="utf-8")
    report = tmp_path / "report.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(folder), "-p", "no:nbval", "-p", "no:cacheprovider",
         "-o", "addopts=", "-o", "junit_family=xunit1", f"--junitxml={report}", "-q",
         "--rootdir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=50)
    outcomes = {o.name: o.message for o in parse_junit(report)}
    assert len(outcomes) == 4, done.stdout[-3000:] + done.stderr[-2000:]

    student = outcomes["test_student_exception"]
    assert "What the grader did:\n  1. sent a frame of exactly 10 bytes, the cap" in student
    assert "Got:      MessageTooLarge: 10 bytes > cap 10" in student
    assert "raised in your code: lesson03_framing.py, line" in student and "in recv_msg()" in student

    helper = outcomes["test_helper_exception"]
    assert "What the grader did:\n  1. the client sent 64 KiB" in helper
    assert "Got:      BrokenPipeError" in helper or "Got:      ConnectionResetError" in helper
    assert "in the grader's echo_helper()" in helper and "your side" in helper

    for name in ("test_never_returns", "test_never_returns_uncaught"):
        assert "never returned within 0.2 s" in outcomes[name], outcomes[name]
        assert "Got:      b''" not in outcomes[name]
    assert "Got:      serve_forever() never returned within 0.2 s" in outcomes[
        "test_never_returns_uncaught"]

    for name, message in outcomes.items():  # a story, not grader internals
        assert "Traceback" not in message and "graderkit.py:" not in message, message
        assert "Read: lessons/" in message, message
