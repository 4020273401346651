"""The grading plugin: loads the code under test, explains failures, keeps score.

    pytest exercises                        grade your stubs in exercises/
    pytest exercises --against solutions    grade the reference with the same graders
    pytest exercises --against DIR          grade any folder holding the same module names
    pytest exercises -k lesson03            grade one lesson
    pytest exercises --hints                show the hint of every unfinished task

Everything here uses pytest's own hooks; the graders themselves live in test_lessonNN_*.py.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # so graders can `import graderkit`

from graderkit import ListHandler, Transcript, load_manifest  # noqa: E402

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
        "--hints", action="store_true", help="print the hint of every unfinished task"
    )
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
    """A stub's NotImplementedError becomes one readable line. Building the report here also
    skips pytest's traceback formatting, which would cost more than the test itself."""
    if not is_stub_failure(item, call):
        return None  # pytest builds the report as usual
    return pytest.TestReport(
        item.nodeid, item.location, {name: 1 for name in item.keywords}, "failed",
        f"Not implemented yet: {call.excinfo.value}", call.when, duration=call.duration,
        start=call.start, stop=call.stop, user_properties=item.user_properties)


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
                           f"Hint: pytest exercises --hints   (or exercises/tasks.toml, "
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
        terminalreporter.section(f"course scoreboard (graded: {graded_dir(self.config)})")
        for lesson in self.manifest.lessons:
            graded_tasks = [t for t in lesson.tasks if t.id in by_task]
            if not graded_tasks:
                continue
            done = [t for t in graded_tasks if all(by_task[t.id])]
            todo = [t for t in graded_tasks if t not in done]
            mark = "done" if not todo else "    "
            write(f"lesson {lesson.number}  {lesson.title:<40} {len(done)}/{len(graded_tasks)} "
                  f"tasks  {mark}")
            for task in todo[: None if self.config.getoption("hints") else 1]:
                write(f"    next: {task.id}  {task.title}")
                write(f"    read: {lesson.notebook}, section \"{task.section}\"")
                write(f"    run:  pytest exercises -k lesson{lesson.number}")
                for line in task.hint.splitlines():
                    write(f"    hint: {line}")
        if not self.config.getoption("hints"):
            write("(pytest exercises --hints shows the hint of every unfinished task)")


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
