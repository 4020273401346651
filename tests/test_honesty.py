"""The graders are honest: they pass on the reference, fail on the untouched stubs, and cover
every task in the manifest. Each claim is checked by really running `pytest exercises`."""

import pytest

from gradingrun import (EXERCISES, MANIFEST, REPO, SOLUTIONS, grader_files, listing,
                        run_graders)


@pytest.fixture(scope="module")
def reference_run():
    return run_graders(SOLUTIONS)


@pytest.fixture(scope="module")
def stub_run():
    return run_graders(EXERCISES)


def test_every_grader_passes_against_the_reference(reference_run):
    assert reference_run.outcomes, f"no test ran:\n{reference_run.output[-3000:]}"
    not_passed = [o for o in reference_run.outcomes if o.status != "passed"]
    assert not not_passed, f"graders that do not pass on solutions/:\n{listing(not_passed)}"
    assert reference_run.returncode == 0, reference_run.output[-3000:]


def test_every_grader_fails_against_the_untouched_stubs(stub_run):
    assert stub_run.outcomes, f"no test ran:\n{stub_run.output[-3000:]}"
    passed = [o for o in stub_run.outcomes if o.status != "failed"]
    assert not passed, ("graders that do not FAIL on the untouched stubs (they would pass "
                        f"a student who did nothing):\n{listing(passed)}")


def test_stubs_fail_at_once_saying_what_to_implement(stub_run):
    vague = [o for o in stub_run.outcomes if "Not implemented yet:" not in o.message]
    assert not vague, f"stub failures that do not say what to implement:\n{listing(vague)}"


def test_every_failure_points_to_its_lesson_section(stub_run):
    unguided = [o for o in stub_run.outcomes
                if "Read: lessons/" not in o.message or "Hint:" not in o.message]
    assert not unguided, f"failures without a 'Read:' and 'Hint:' line:\n{listing(unguided)}"


def test_the_run_ends_with_a_scoreboard(stub_run):
    assert "course scoreboard" in stub_run.output
    for lesson in MANIFEST.lessons:
        assert f"lesson {lesson.number}  {lesson.title}" in stub_run.output
    assert "next: " in stub_run.output and "hint: " in stub_run.output


def test_no_grader_file_collects_zero_tests(reference_run):
    counts = {name: 0 for name in grader_files()}
    for outcome in reference_run.outcomes:
        counts[outcome.file] = counts.get(outcome.file, 0) + 1
    empty = [name for name, count in counts.items() if count == 0]
    assert counts and not empty, f"grader files that collect no test: {empty}"


def test_every_task_in_the_manifest_is_graded(reference_run):
    graded = {o.task for o in reference_run.outcomes}
    ungraded = [task for task in MANIFEST.tasks if task not in graded]
    assert not ungraded, f"tasks in exercises/tasks.toml that no grader checks: {ungraded}"


def test_every_lesson_has_a_stub_a_reference_and_graders():
    for lesson in MANIFEST.lessons:
        stub = REPO / lesson.module
        assert stub.is_file(), f"lesson {lesson.number}: missing stub {lesson.module}"
        assert (SOLUTIONS / stub.name).is_file(), f"lesson {lesson.number}: no solutions/{stub.name}"
        graders = [f for f in grader_files() if f.startswith(f"test_lesson{lesson.number}_")]
        assert graders, f"lesson {lesson.number}: no exercises/test_lesson{lesson.number}_*.py"

