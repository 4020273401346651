"""Every planted mistake is caught.

Each entry in tests/planted/*.toml is the reference with one defence removed or broken. For
each, this suite copies solutions/ to a temporary package, plants the mistake, grades the copy
with the lesson's own graders, and requires at least one of them to fail. A mistake the graders
miss is a hole in the course: a student could make it and be told they are done.

Each mistake is one grading run of one lesson, bounded on its own: the runs are started a few
at a time as soon as collection ends (tests/conftest.py), and each test waits for its own.
"""
import re
from pathlib import Path

import pytest

from gradingrun import (LESSON_RUN_TIMEOUT_S, MANIFEST, SLACK_S, callspec_param, graded_copy,
                        listing, load_toml)

PLANTED = Path(__file__).resolve().parent / "planted"

# Why these marks: a test below waits for ONE grading run, which started no later than the
# test did (Jobs runs them first in, first out, in test order). So the test's budget is one
# run's bound plus slack, whatever the number of mistakes queued behind it, and on a slow
# machine the run's own bound (which names the mistake) fires before pytest-timeout.
ONE_RUN = pytest.mark.timeout(LESSON_RUN_TIMEOUT_S + SLACK_S)


def load_mistakes():
    mistakes = []
    for path in sorted(PLANTED.glob("*.toml")):
        for entry in load_toml(path)["mistake"]:
            mistakes.append({**entry, "catalogue": path.name})
    return mistakes


MISTAKES = load_mistakes()


def edits(mistake):
    """(find, replace) pairs: find/replace, then find2/replace2, ..."""
    pairs, n = [(mistake["find"], mistake["replace"])], 2
    while f"find{n}" in mistake:
        pairs.append((mistake[f"find{n}"], mistake[f"replace{n}"]))
        n += 1
    return pairs


def test_the_catalogue_is_well_formed():
    ids = [m["id"] for m in MISTAKES]
    assert len(ids) == len(set(ids)), "planted mistake ids must be unique"
    lessons = {lesson.number for lesson in MANIFEST.lessons}
    for m in MISTAKES:
        assert m["lesson"] in lessons, f"{m['id']}: no lesson {m['lesson']} in the manifest"
        assert m["id"].startswith(m["lesson"]), f"{m['id']}: ids start with the lesson number"
        assert len(m["description"]) > 20, f"{m['id']}: describe the mistake in plain words"
        assert all(find != replace for find, replace in edits(m)), f"{m['id']}: changes nothing"


def test_every_lesson_has_planted_mistakes():
    covered = {m["lesson"] for m in MISTAKES}
    missing = [lesson.number for lesson in MANIFEST.lessons if lesson.number not in covered]
    assert not missing, f"lessons without any planted mistake: {missing}"


# --------------------------------------------------------------------------- the runs


def plant_into(mistake):
    def prepare(copy):
        module = copy / f"{mistake['module']}.py"
        source = module.read_text(encoding="utf-8")
        for find, replace in edits(mistake):
            count = source.count(find)
            assert count == 1, (
                f"planted mistake {mistake['id']}: the text to replace occurs {count} times in "
                f"solutions/{mistake['module']}.py (must be exactly once); update "
                f"{mistake['catalogue']} to match the reference:\n{find}")
            source = source.replace(find, replace)
        module.write_text(source, encoding="utf-8")
    return prepare


def grading_job(item):
    """One lesson's grading run per test (see tests/conftest.py): the unbroken copy for a
    control, the copy with the mistake planted for a mistake."""
    lesson, mistake = callspec_param(item, "control"), callspec_param(item, "mistake")
    if lesson is not None:
        return (("control", lesson), graded_copy, f"planted_control_{lesson}", lambda copy: None,
                lesson)
    if mistake is not None:
        # -x: one failing grader is enough to call the mistake caught; the rest cost time.
        return (("mistake", mistake["id"]), graded_copy,
                "planted_" + re.sub(r"\W", "_", mistake["id"]), plant_into(mistake),
                mistake["lesson"], "-x")
    return None


@ONE_RUN
@pytest.mark.parametrize("control", [lesson.number for lesson in MANIFEST.lessons])
def test_an_unbroken_copy_passes(control, grading_run):
    """The control: copying solutions/ under another name changes nothing, so a failure in the
    tests below is the planted mistake's doing and not the copy's."""
    failed = [o for o in grading_run.outcomes if o.status != "passed"]
    assert grading_run.outcomes and not failed, f"{listing(failed)}\n{grading_run.tail()}"


@ONE_RUN
@pytest.mark.parametrize("mistake", MISTAKES, ids=[m["id"] for m in MISTAKES])
def test_the_graders_catch_the_planted_mistake(mistake, grading_run):
    # An error counts too: a grader fixture that fails in teardown (e.g. "a thread of your
    # server crashed") shows as an error in pytest's report, and the student sees it all the same.
    caught = grading_run.by_status("failed") + grading_run.by_status("error")
    assert caught, (f"No lesson {mistake['lesson']} grader fails on a reference that "
                    f"{mistake['description']}.\n{grading_run.tail(2000)}")
