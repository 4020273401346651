"""The graders are honest: they pass on the reference, fail on the untouched stubs, and cover
every task in the manifest. Each claim is checked by really running `pytest exercises`.

The stubs graded here are the ones COMMITTED in git (gradingrun.committed_stubs), not the
working copy: a student who has solved exercises and runs the instructor suite still gets an
honest, green result. Every run is one lesson with its own bound, started as soon as
collection ends (tests/conftest.py).
"""
import atexit
import functools
import re
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from gradingrun import (LESSON_RUN_TIMEOUT_S, MANIFEST, REPO, SLACK_S, SOLUTIONS,
                        callspec_param, committed_stubs, grader_files, listing, run_graders)

STUBS_LOCK = threading.Lock()
LESSONS = [lesson.number for lesson in MANIFEST.lessons]
TITLES = {lesson.number: lesson.title for lesson in MANIFEST.lessons}
# Each test below waits for one lesson's grading run, started no later than the test itself
# (first in, first out, in test order), so one run's bound plus slack is its whole budget.
ONE_RUN = pytest.mark.timeout(LESSON_RUN_TIMEOUT_S + SLACK_S)


@functools.lru_cache(maxsize=None)
def stubs_once():
    folder = tempfile.mkdtemp(prefix="course-stubs-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return committed_stubs(Path(folder))


def stubs():
    """(folder, note): the committed stubs as a package of their own, made once a session
    (grading runs ask for it from several threads at once)."""
    with STUBS_LOCK:
        return stubs_once()


def grade(kind, lesson, *extra):
    folder, note = stubs() if kind != "reference" else (SOLUTIONS, "")
    run = run_graders(folder, *extra, lesson=lesson)
    run.note = note
    return run


def grading_job(item):
    """One lesson's run per test (see tests/conftest.py), shared by the tests that read it:
    the reference, the committed stubs, or the committed stubs with --hints=2."""
    lesson = callspec_param(item, "lesson")
    for fixture, kind, extra in (("reference_run", "reference", ()), ("stub_run", "stubs", ()),
                                 ("hints_run", "stubs", ("--hints=2",))):
        if lesson is not None and fixture in item.fixturenames:
            return (fixture, lesson), grade, kind, lesson, *extra
    return None


@pytest.fixture
def reference_run(grading_run):
    return nonempty(grading_run)


@pytest.fixture
def stub_run(grading_run):
    return nonempty(grading_run)


@pytest.fixture
def hints_run(grading_run):
    return nonempty(grading_run)


def nonempty(run):
    assert run.outcomes, f"no test ran:{run.note}\n{run.tail()}"
    return run


def per_lesson(test):
    return ONE_RUN(pytest.mark.parametrize("lesson", LESSONS)(test))


@per_lesson
def test_every_grader_passes_against_the_reference(reference_run, lesson):
    not_passed = [o for o in reference_run.outcomes if o.status != "passed"]
    assert not not_passed, f"graders that do not pass on solutions/:\n{listing(not_passed)}"
    assert reference_run.returncode == 0, reference_run.tail()


@per_lesson
def test_every_grader_fails_against_the_untouched_stubs(stub_run, lesson):
    passed = [o for o in stub_run.outcomes if o.status != "failed"]
    assert not passed, ("graders that do not FAIL on the untouched stubs (they would pass "
                        f"a student who did nothing):\n{listing(passed)}{stub_run.note}")


@per_lesson
def test_stubs_fail_at_once_saying_what_to_implement(stub_run, lesson):
    vague = [o for o in stub_run.outcomes if "Not implemented yet:" not in o.message]
    assert not vague, (f"stub failures that do not say what to implement (a stub must be "
                       f"committed to be graded here):\n{listing(vague)}{stub_run.note}")


@per_lesson
def test_every_failure_points_to_its_lesson_section(stub_run, lesson):
    unguided = [o for o in stub_run.outcomes
                if "Read: lessons/" not in o.message or "Hint:" not in o.message]
    assert not unguided, (f"failures without a 'Read:' and 'Hint:' line:\n{listing(unguided)}"
                          f"{stub_run.note}")


def scoreboard_rows(output):
    return [line for line in output.splitlines() if re.match(r"lesson \d\d  ", line)]


@per_lesson
def test_the_run_ends_with_a_scoreboard(stub_run, lesson):
    assert "course scoreboard" in stub_run.output, stub_run.tail()
    rows = scoreboard_rows(stub_run.output)
    assert len(rows) == 1 and rows[0].startswith(f"lesson {lesson}  {TITLES[lesson]} "), rows
    # The counts column starts after the longest title in the course, whichever lesson ran.
    column = len("lesson NN  ") + max(len(title) for title in TITLES.values()) + 1
    assert re.match(r"\d+/\d+ tasks", rows[0][column:]), (
        f"the title column must fit the longest title:\n{rows[0]}")
    assert "next: " in stub_run.output and "hint: " in stub_run.output
    first_task = MANIFEST.lessons[LESSONS.index(lesson)].tasks[0]
    first_line = first_task.hint.splitlines()[0]
    assert f"hint: {first_line}" in stub_run.output, "the scoreboard shows the first hint"
    assert first_task.hint2.splitlines()[0] not in stub_run.output, (
        "without --hints=2 the second hint stays hidden")


@per_lesson
def test_hints_2_shows_both_hints_of_every_unfinished_task(hints_run, lesson):
    for task in MANIFEST.lessons[LESSONS.index(lesson)].tasks:
        for text in (task.hint, task.hint2):
            assert text.splitlines()[0] in hints_run.output, f"{task.id}: {text[:60]!r}"


@per_lesson
def test_no_grader_file_collects_zero_tests(reference_run, lesson):
    counts = {name: 0 for name in grader_files(lesson)}
    for outcome in reference_run.outcomes:
        counts[outcome.file] = counts.get(outcome.file, 0) + 1
    empty = [name for name, count in counts.items() if count == 0]
    assert counts and not empty, f"grader files that collect no test: {empty}"


@per_lesson
def test_every_task_in_the_manifest_is_graded(reference_run, lesson):
    graded = {o.task for o in reference_run.outcomes}
    tasks = MANIFEST.lessons[LESSONS.index(lesson)].tasks
    ungraded = [task.id for task in tasks if task.id not in graded]
    assert not ungraded, f"tasks in exercises/tasks.toml that no grader checks: {ungraded}"


def test_every_lesson_has_a_stub_a_reference_and_graders():
    for lesson in MANIFEST.lessons:
        stub = REPO / lesson.module
        assert stub.is_file(), f"lesson {lesson.number}: missing stub {lesson.module}"
        assert (SOLUTIONS / stub.name).is_file(), f"lesson {lesson.number}: no solutions/{stub.name}"
        graders = grader_files(lesson.number)
        assert graders, f"lesson {lesson.number}: no exercises/test_lesson{lesson.number}_*.py"


def test_every_grader_file_belongs_to_a_lesson_in_the_manifest():
    """The runs above grade one manifest lesson at a time; a grader file of no lesson would
    never be checked."""
    orphans = [name for name in grader_files() if name[11:13] not in LESSONS]
    assert not orphans, f"grader files whose lesson is not in exercises/tasks.toml: {orphans}"

