"""The instructor suite's one piece of machinery: grading runs started early.

A test module that reads grading runs defines `grading_job(item)`, returning the job for one
of its tests as (key, function, *args), or None. As soon as collection ends, every selected
test's job is started, in test order, a few at a time (gradingrun.Jobs), so the runs overlap
with whatever the session does first; each test then waits only for its own run, through the
`grading_run` fixture.
"""
import pytest

from gradingrun import JOBS


def job_of(item):
    grading_job = getattr(getattr(item, "module", None), "grading_job", None)
    return grading_job(item) if grading_job else None


def pytest_collection_finish(session):
    for item in session.items:
        job = job_of(item)
        if job is not None:
            JOBS.start(*job)


def pytest_sessionfinish(session):
    """Runs still queued are not needed any more (a -x stop, a Ctrl-C): drop them, so the
    session ends after the runs already going, each within its own bound."""
    JOBS.cancel_pending()


@pytest.fixture
def grading_run(request):
    """The GradingRun this test reads, once it has finished (or been killed at its bound)."""
    job = job_of(request.node)
    assert job is not None, f"{request.node.name}: its module's grading_job() gives no job"
    JOBS.start(*job)  # already started at collection, unless this test was not collected
    run = JOBS.wait(job[0])
    run.check_finished()
    return run
