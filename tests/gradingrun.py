"""Run the graders in a separate pytest process and read back what happened to every test.

The instructor suite never trusts a grader's own word: it runs `pytest exercises --against DIR`
exactly as a student or CI would, and reads the JUnit XML report, test by test.

Every grading run is one lesson (`-k lessonNN`) with its own time bound, and runs are started
ahead of the tests that read them, a few at a time (see Jobs): a slow machine makes the suite
slower, never red, and a run that truly hangs fails only the test that reads it, by name.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXERCISES = REPO / "exercises"
SOLUTIONS = REPO / "solutions"

sys.path.insert(0, str(EXERCISES))
from graderkit import load_manifest, tomllib  # noqa: E402  (one manifest reader, one TOML)

MANIFEST = load_manifest()

# The bound on ONE lesson's grading run. The slowest lesson takes about 5 s idle (measured
# 2026-11); a machine three times slower, shared with the other runs going on in parallel
# (PARALLEL_RUNS on 2 cores), makes that about 30 s; a planted mistake that hangs a grader
# costs one grader timeout (10 s) before `-x` stops its run. 120 s leaves room for Part B's
# slower HTTP lessons and still catches a run that will never end.
LESSON_RUN_TIMEOUT_S = 120
# What a test that waits for one run may add on top: copying the reference, reading the
# report, a loaded machine's scheduling. Tests that read a run get pytest-timeout marks of
# LESSON_RUN_TIMEOUT_S + SLACK_S, so the run's own bound (with its clear message) fires first.
SLACK_S = 30
# Grading runs mostly wait on sockets and timeouts, not the CPU (measured: 4 at a time kept
# 2 cores about a third busy), so several share 2 cores: 8 at a time took the planted-mistake
# and honesty runs from 204 s to 139 s on a loaded machine. Every grader's clock tolerates a
# machine three times slower, which is what more runs at once amount to.
PARALLEL_RUNS = 8

# Runs compile the graders' assertion rewrites once into a shared cache instead of once per
# run (PYTHONDONTWRITEBYTECODE would make every run rewrite every plugin module: ~1 s CPU).
PYCACHE = Path(tempfile.mkdtemp(prefix="course-pycache-"))
atexit.register(shutil.rmtree, PYCACHE, ignore_errors=True)


@dataclass(frozen=True)
class Outcome:
    file: str  # e.g. "test_lesson03_framing.py"
    name: str  # e.g. "test_recv_exact_of_zero_bytes_is_empty[ascii]"
    task: str | None
    status: str  # "passed", "failed", "error" or "skipped"
    message: str

    @property
    def lesson(self) -> str:
        return re.search(r"test_lesson(\d\d)_", self.file).group(1)


@dataclass
class GradingRun:
    outcomes: list[Outcome]
    returncode: int
    output: str
    command: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    note: str = ""  # anything the reader of a failure should know about what was graded
    bound: float = field(default=LESSON_RUN_TIMEOUT_S)

    def by_status(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    def tail(self, chars: int = 3000) -> str:
        """The end of the run's output, for an assertion message."""
        return self.output[-chars:]

    def check_finished(self) -> None:
        """Fail (by raising AssertionError) if the run had to be killed at its bound."""
        assert not self.timed_out, (
            f"`{self.command}` did not finish within {self.bound:.0f} s and was killed (its "
            f"tests' own timeouts should have ended it long before).{self.note}\n"
            f"Its output so far:\n{self.tail(2000)}")


def run_graders(against: Path, *extra: str, lesson: str | None = None,
                timeout: float = LESSON_RUN_TIMEOUT_S) -> GradingRun:
    """`pytest exercises --against <against> *extra` in a subprocess, parsed test by test;
    with `lesson`, only that lesson's grader files (as `-k lessonNN` would select, without
    collecting the other lessons' graders: each run starts faster).

    The run is killed (with everything it started) after `timeout` seconds; the result then
    says so (GradingRun.timed_out) instead of raising, so the caller can fail by name."""
    with tempfile.TemporaryDirectory() as tmp:
        report, log = Path(tmp) / "report.xml", Path(tmp) / "output.txt"
        # As a student runs it, less the plugins these runs never use: importing nbval costs
        # a second or more of CPU per run (they collect no notebooks), anyio's and
        # platformdirs' a little. A suite makes well over a hundred runs: startup adds up.
        targets = ([f"exercises/{name}" for name in grader_files(lesson)] if lesson
                   else ["exercises"])
        command = [sys.executable, "-m", "pytest", *targets, "--against", str(against),
                   "-o", "addopts=", "-p", "no:nbval", "-p", "no:anyio", "-p", "no:platformdirs",
                   "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                   f"--junitxml={report}", "-q", *extra]
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(PYCACHE)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        started = time.monotonic()
        with open(log, "wb") as out:
            # A session of its own, so a timeout can kill the servers a grader started too
            # (their inherited output pipe would otherwise keep the run from ending).
            proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
            try:
                returncode, timed_out = proc.wait(timeout), False
            except subprocess.TimeoutExpired:
                kill_session(proc)
                returncode, timed_out = proc.wait(), True
            kill_session(proc)  # a program a grader left running must not outlive its run
        outcomes = parse_junit(report) if report.exists() else []
        output = log.read_text(encoding="utf-8", errors="replace")
    shown = " ".join(["pytest", *targets, "--against", str(against), *extra])
    return GradingRun(outcomes, returncode, output, shown, time.monotonic() - started,
                      timed_out, bound=timeout)


def kill_session(proc: subprocess.Popen) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows has no process groups of this kind
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass  # everything in it has already ended


def parse_junit(path: Path) -> list[Outcome]:
    outcomes = []
    for case in ET.parse(path).getroot().iter("testcase"):
        file = case.get("file") or case.get("classname", "").split(".")[-1] + ".py"
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        status, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or "") + "\n" + (node.text or "")
                break
        outcomes.append(Outcome(Path(file).name, case.get("name"), props.get("task"),
                                status, message))
    return outcomes


# --------------------------------------------------------------------------- jobs


class Jobs:
    """Grading runs started ahead of the tests that read them, PARALLEL_RUNS at a time.

    tests/conftest.py starts the runs of all selected tests at once, in the order the tests
    will run; each test then waits only for its own run (wait). The pool takes runs first in,
    first out, so by the time a test starts, every run queued before its own has finished and
    its own has started: the test's wait is bounded by its own run, never by the queue. That
    is what lets each test carry a timeout sized to one run."""

    def __init__(self, workers: int = PARALLEL_RUNS):
        self.workers = workers
        self.futures: dict = {}
        self.pool: ThreadPoolExecutor | None = None

    def start(self, key, function, *args) -> None:
        if key in self.futures:
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="grading-run")
        self.futures[key] = self.pool.submit(function, *args)

    def cancel_pending(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def wait(self, key, bound: float = LESSON_RUN_TIMEOUT_S):
        """The job's result (re-raising its exception). The job's run has its own bound;
        this wait adds a little slack on top, in case the machinery around it stalls."""
        try:
            return self.futures[key].result(timeout=bound + SLACK_S / 2)
        except FutureTimeout:
            raise AssertionError(f"the grading run {key!r} did not end within "
                                 f"{bound + SLACK_S / 2:.0f} s") from None


JOBS = Jobs()


def callspec_param(item, name: str):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(name) if callspec else None


# --------------------------------------------------------------------------- helpers


def load_toml(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def listing(outcomes, limit: int = 20) -> str:
    """Outcomes as readable lines for an assertion message: which test, how it ended, why."""
    return "\n".join(f"  {o.file}::{o.name}: {o.status} {clip(o.message.strip())}"
                     for o in outcomes[:limit])


def clip(message: str, head: int = 300, tail: int = 900) -> str:
    """A long grader story cut in the middle: its first steps and its end, where the
    Expected/Got lines say what went wrong, both survive."""
    if len(message) <= head + tail:
        return message
    return f"{message[:head]}\n  [...]\n{message[-tail:]}"


def grader_files(lesson: str | None = None) -> list[str]:
    pattern = f"test_lesson{lesson}_*.py" if lesson else "test_lesson*.py"
    return sorted(p.name for p in EXERCISES.glob(pattern))


def graded_copy(name: str, prepare, lesson: str, *extra: str) -> GradingRun:
    """Grade lesson `lesson` on a copy of solutions/ called `name`, after prepare(copy) has
    changed it; the copy lives in a temporary folder for the length of the run only."""
    with tempfile.TemporaryDirectory(prefix="course-") as tmp:
        copy = copy_of_solutions(Path(tmp), name)
        prepare(copy)
        return run_graders(copy, *extra, lesson=lesson)


def copy_of_solutions(parent: Path, name: str) -> Path:
    """A copy of solutions/ as a package called `name`, ready to be broken on purpose."""
    target = parent / name
    shutil.copytree(SOLUTIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


# --------------------------------------------------------------------------- the stubs


STUDENT_NOTE = ("`pytest exercises` is your command; this suite checks the untouched stubs "
                "(as committed), so a solved exercise in your working copy must not show here.")


def graded_modules() -> list[str]:
    """The module files the graders import from the graded folder: the same names as in
    solutions/ (that is the --against contract), plus the package's __init__.py."""
    return sorted({"__init__.py", *(p.name for p in SOLUTIONS.glob("*.py"))})


def committed_stubs(parent: Path, repo: Path = REPO, name: str = "stubs_as_committed"):
    """The stubs as committed in git (HEAD:exercises/), written as package `parent/name`.

    A student who has solved exercises in the working copy still gets an honest check of the
    untouched stubs. Returns (folder, note): without git (or outside a clone) it falls back
    to the working copy of exercises/ and the note says so plainly."""
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                              timeout=60, check=True).stdout
    try:
        listed = git("ls-tree", "--name-only", "HEAD", "exercises/").decode().split()
        committed = {Path(p).name for p in listed}
        target = parent / name
        target.mkdir(parents=True)
        for module in graded_modules():
            if module in committed:
                (target / module).write_bytes(git("show", f"HEAD:exercises/{module}"))
        return target, ""
    except (OSError, subprocess.SubprocessError) as exc:
        why = getattr(exc, "stderr", b"") or str(exc).encode()
        return repo / "exercises", (
            "\nNOTE: the committed stubs could not be read from git "
            f"({why.decode(errors='replace').strip()[:200]}), so the WORKING COPY of "
            f"exercises/ was graded instead.\n{STUDENT_NOTE}")
