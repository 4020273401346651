"""Every planted mistake is caught.

Each entry in tests/planted/*.toml is the reference with one defence removed or broken. For
each, this suite copies solutions/ to a temporary package, plants the mistake, grades the copy
with the lesson's own graders, and requires at least one of them to fail. A mistake the graders
miss is a hole in the course: a student could make it and be told they are done.
"""
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gradingrun import MANIFEST, copy_of_solutions, load_toml, run_graders

PLANTED = Path(__file__).resolve().parent / "planted"
# Grading runs mostly wait on sockets and timeouts, not the CPU, so several can share 2 cores.
PARALLEL_RUNS = 4


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


def plant(mistake, parent: Path) -> Path:
    name = "planted_" + re.sub(r"\W", "_", mistake["id"])
    copy = copy_of_solutions(parent, name)
    module = copy / f"{mistake['module']}.py"
    source = module.read_text(encoding="utf-8")
    for find, replace in edits(mistake):
        count = source.count(find)
        assert count == 1, (f"planted mistake {mistake['id']}: the text to replace occurs {count} "
                            f"times in solutions/{mistake['module']}.py (must be exactly once); "
                            f"update {mistake['catalogue']} to match the reference:\n{find}")
        source = source.replace(find, replace)
    module.write_text(source, encoding="utf-8")
    return copy


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


def test_an_unbroken_copy_passes(tmp_path):
    """The control: copying solutions/ under another name changes nothing, so a failure in the
    tests below is the planted mistake's doing and not the copy's."""
    copy = copy_of_solutions(tmp_path, "planted_control")
    run = run_graders(copy)
    failed = [o for o in run.outcomes if o.status != "passed"]
    assert run.outcomes and not failed, "\n".join(f"{o.name}: {o.message[:300]}" for o in failed)


@pytest.fixture(scope="module")
def planted_runs(request, tmp_path_factory):
    """Grade every selected planted mistake at once, PARALLEL_RUNS at a time: mistake id ->
    the grading run of its lesson against the broken copy (stopping at the first failure)."""
    selected = [item.callspec.params["mistake"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_the_graders_catch_the_planted_mistake"]

    def grade(mistake):
        copy = plant(mistake, tmp_path_factory.mktemp(mistake["id"]))
        return mistake["id"], run_graders(copy, "-k", f"lesson{mistake['lesson']}", "-x")

    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        return dict(pool.map(grade, selected))


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m["id"] for m in MISTAKES])
def test_the_graders_catch_the_planted_mistake(mistake, planted_runs):
    run = planted_runs[mistake["id"]]
    caught = run.by_status("failed")
    assert caught, (f"No lesson {mistake['lesson']} grader fails on a reference that "
                    f"{mistake['description']}.\n{run.output[-2000:]}")
