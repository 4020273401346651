"""The grading plugin: loads the code under test, explains failures, keeps score.

    pytest exercises                        grade your stubs in exercises/
    pytest exercises --against solutions    grade the reference with the same graders
    pytest exercises --against DIR          grade any folder holding the same module names
    pytest exercises -k lesson03            grade one lesson
    pytest exercises --hints                the first hint of every unfinished task
    pytest exercises --hints=2              both hints (the second is close to code)

Everything here uses pytest's own hooks; the graders themselves live in test_lessonNN_*.py.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import traceback
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # so graders can `import graderkit`

from graderkit import ListHandler, NeverReturned, Transcript, describe, load_manifest  # noqa: E402

# Each grader gets this many seconds before pytest-timeout fails it. Graders use timeouts of
# fractions of a second, so 10 s only ever trips on a server that hangs.
GRADER_TIMEOUT_S = 10


def pytest_addoption(parser):
    group = parser.getgroup("course grading")
    group.addoption(
        "--against",
        default=str(HERE),
        metavar="DIR",
        help="folder whose modules are graded (default: exercises/, your own code; "
        "'solutions' grades the reference)",
    )
    group.addoption(
        "--hints", nargs="?", const=1, default=0, type=int, choices=(0, 1, 2), metavar="N",
        help="print the hints of every unfinished task: --hints the first (the idea, and "
        "where the notebook explains it), --hints=2 the second too (close to code)")
    group.addoption(
        "--grader-timeout", type=float, default=GRADER_TIMEOUT_S, metavar="S",
        help=f"seconds before a hung grader is failed (default {GRADER_TIMEOUT_S})"
    )


# --------------------------------------------------------------------------- loading


def graded_dir(config) -> Path:
    return Path(config.getoption("against")).resolve()


def load_graded(config, module_name: str):
    """Import `module_name` from the --against folder, or fail the test with a plain message.

    The folder is imported as a package named after itself (exercises.lesson01_lifecycle,
    solutions.lesson01_lifecycle, planted_xyz.lesson01_lifecycle), so two folders never clash.
    """
    folder = graded_dir(config)
    path = folder / f"{module_name}.py"
    if not path.is_file():
        raise pytest.fail.Exception(f"There is no {path} to grade.", pytrace=False)
    if str(folder.parent) not in sys.path:
        sys.path.insert(0, str(folder.parent))
    try:
        return importlib.import_module(f"{folder.name}.{module_name}")
    except Exception as exc:  # a student's syntax error must not stop the other lessons
        message = (f"Importing {path} failed, so none of its tasks can be graded:\n"
                   f"    {type(exc).__name__}: {exc}")
    raise pytest.fail.Exception(message, pytrace=False) from None


@pytest.fixture
def graded(request):
    """graded("lesson03_framing") -> the module under test (yours, or --against DIR's)."""
    return lambda module_name: load_graded(request.config, module_name)


@pytest.fixture
def story():
    """A fresh Transcript: graders record their steps in it so a failure narrates them."""
    return Transcript()


@pytest.fixture
def logs():
    """A logger of the grader's own (not the root logger, so no other test's lines mix in) and
    what it received: give logs.logger to a server, then read logs.lines() or wait_for_line()."""
    handler = ListHandler()
    handler.logger = logging.Logger("graded-server", logging.DEBUG)
    handler.logger.addHandler(handler)
    return handler


# --------------------------------------------------------------------------- collection


def pytest_configure(config):
    config.addinivalue_line("markers", "task(id): the exercise task (exercises/tasks.toml) "
                            "that a grader test checks")
    if not graded_dir(config).is_dir():
        raise pytest.UsageError(f"--against {config.getoption('against')}: no such folder")
    config.pluginmanager.register(Guide(load_manifest()), "course-guide")
    config.pluginmanager.register(Scoreboard(config, load_manifest()), "course-scoreboard")


def pytest_collection_modifyitems(config, items):
    tasks = load_manifest().tasks
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        marker = item.get_closest_marker("task")
        if marker is None or marker.args[0] not in tasks:
            raise pytest.UsageError(
                f"{item.nodeid}: every grader needs @pytest.mark.task(ID) with an ID from "
                f"exercises/tasks.toml (got {marker.args if marker else 'no marker'})")
        item.user_properties.append(("task", marker.args[0]))
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(config.getoption("grader_timeout")))


# --------------------------------------------------------------------------- reporting


def is_stub_failure(item, call) -> bool:
    return (call.excinfo is not None and call.excinfo.errisinstance(NotImplementedError)
            and item.path.is_relative_to(HERE))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    """A stub's NotImplementedError becomes one readable line, and an exception the grader did
    not expect becomes the end of the grader's story (see narrate). Building the report here
    also skips pytest's traceback formatting, which would cost more than the test itself."""
    if is_stub_failure(item, call):
        text = f"Not implemented yet: {call.excinfo.value}"
    else:
        text = narrate(item, call)
        if text is None:
            return None  # pytest builds the report as usual
    sections = [(f"Captured {key} {when}", content)
                for when, key, content in item._report_sections]
    return pytest.TestReport(
        item.nodeid, item.location, {name: 1 for name in item.keywords}, "failed",
        text, call.when, sections=sections, duration=call.duration,
        start=call.start, stop=call.stop, user_properties=item.user_properties)


# What a socket error means when the GRADER's own call raised it: the other side is yours.
MEANING = {
    BrokenPipeError: "your side had already closed the connection",
    ConnectionResetError: "your side reset (or closed) the connection",
    ConnectionAbortedError: "your side aborted the connection",
    ConnectionRefusedError: "nothing was listening there",
    TimeoutError: "your side sent nothing in time",
}
GRADER_FILES = {"conftest.py", "graderkit.py", "peers.py", "httpkit.py"}


def is_grader_file(path: Path) -> bool:
    return path.parent == HERE and (path.name.startswith("test_") or path.name in GRADER_FILES)


def narrate(item, call) -> str | None:
    """An exception a grader did not catch, told as the end of its story, not as a traceback
    of grader internals: a student's exception that escaped from a call the grader made
    ("Got: MessageTooLarge: ..., raised in your recv_msg()"), or one a grader helper raised
    because of what the student's code did ("Got: BrokenPipeError ... your side had already
    closed the connection"). Only for graders that tell a story (the `story` fixture), and
    never for pytest's own outcomes (story.fail, timeouts) or a grader's plain assert."""
    story = getattr(item, "funcargs", {}).get("story")
    if call.excinfo is None or call.when == "teardown" or not isinstance(story, Transcript):
        return None
    exc = call.excinfo.value
    if not isinstance(exc, Exception) or not item.path.is_relative_to(HERE):
        return None  # pytest.fail / skip / pytest-timeout are BaseExceptions: told already
    frames = traceback.extract_tb(call.excinfo.tb)
    graded = graded_dir(item.config)
    yours = [f for f in frames if Path(f.filename).parent == graded
             and not is_grader_file(Path(f.filename))]
    if isinstance(exc, AssertionError) and not yours:
        return None  # a grader's own assert: pytest's assertion report is the story
    expected = "the grader's next step to go through without an exception"
    if isinstance(exc, NeverReturned):
        expected, got, where = f"{exc.called} to return", str(exc), ""
    elif yours:
        f = yours[-1]
        expected = "your code to carry on without raising"
        got, where = describe(exc), (f"raised in your code: {Path(f.filename).name}, line "
                                     f"{f.lineno}, in {f.name}()")
    else:
        f = ([f for f in frames if is_grader_file(Path(f.filename))] or frames)[-1]
        meaning = next((text for kind, text in MEANING.items() if isinstance(exc, kind)),
                       "the grader did not expect this")
        got, where = describe(exc), (f"in the grader's {f.name}(), {Path(f.filename).name} "
                                     f"line {f.lineno}: {meaning}")
    return story.told(expected, got + (f"\n({where})" if where else ""))


class Guide:
    """Points every failed grader at the lesson section that explains it, and at its hint."""

    def __init__(self, manifest):
        self.manifest = manifest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if not report.failed or not item.path.is_relative_to(HERE):
            return
        task = self.manifest.tasks.get(dict(item.user_properties).get("task"))
        if task is None:
            return
        report.longrepr = (f"{report.longrepr}\n\n"
                           f"Read: {task.lesson.notebook}, section \"{task.section}\".\n"
                           f"Hint: pytest exercises -k lesson{task.lesson.number} --hints   "
                           f"(--hints=2 for a second, closer to code; or exercises/tasks.toml, "
                           f"task {task.id})")


class Scoreboard:
    """Collects each grader's outcome and prints, per lesson, tasks done and what to do next."""

    def __init__(self, config, manifest):
        self.config = config
        self.manifest = manifest
        self.outcome_by_test = {}  # nodeid -> (task id, passed so far?)

    def pytest_runtest_logreport(self, report):
        task = dict(report.user_properties).get("task")
        if task is None:
            return
        _, passed = self.outcome_by_test.get(report.nodeid, (task, True))
        ok = report.passed or (report.when != "call" and not report.failed)
        self.outcome_by_test[report.nodeid] = (task, passed and ok)

    def pytest_terminal_summary(self, terminalreporter):
        if not self.outcome_by_test:
            return
        by_task = {}
        for task, passed in self.outcome_by_test.values():
            by_task.setdefault(task, []).append(passed)
        write = terminalreporter.write_line
        hints = self.config.getoption("hints")
        width = max(len(lesson.title) for lesson in self.manifest.lessons)
        terminalreporter.section(f"course scoreboard (graded: {graded_dir(self.config)})")
        for lesson in self.manifest.lessons:
            graded_tasks = [t for t in lesson.tasks if t.id in by_task]
            if not graded_tasks:
                continue
            done = [t for t in graded_tasks if all(by_task[t.id])]
            todo = [t for t in graded_tasks if t not in done]
            mark = "done" if not todo else "    "
            write(f"lesson {lesson.number}  {lesson.title:<{width}} {len(done)}/{len(graded_tasks)} "
                  f"tasks  {mark}")
            for task in todo[: None if hints else 1]:
                write(f"    next: {task.id}  {task.title}")
                write(f"    read: {lesson.notebook}, section \"{task.section}\"")
                write(f"    run:  pytest exercises -k lesson{lesson.number}")
                for line in task.hint.splitlines():
                    write(f"    hint: {line}")
                for line in task.hint2.splitlines() if hints >= 2 else ():
                    write(f"    hint 2: {line}")
        if hints < 2:
            write("(pytest exercises --hints: the first hint of every unfinished task; "
                  "--hints=2: the second too, close to code)")


def pytest_unconfigure(config):
    """A student server may leave non-daemon threads running; Python would then wait for
    them forever at exit. Report them and leave anyway, so a grading run always ends."""
    stuck = [t for t in threading.enumerate()
             if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if stuck:
        names = ", ".join(t.name for t in stuck)
        sys.stderr.write(f"\nWARNING: threads still running after grading: {names}\n"
                         "Make your server's threads daemon threads and join them in stop().\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(getattr(config, "_course_exitstatus", 1))


def pytest_sessionfinish(session, exitstatus):
    session.config._course_exitstatus = int(exitstatus)
