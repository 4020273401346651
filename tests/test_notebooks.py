"""Every lesson notebook keeps the notebook contract (see ../shared/COURSE.md and README).

Executing them is nbval's job (plain `pytest` runs lessons/ under strict --nbval); this file
checks what nbval does not: structure, links to exercises, stored outputs, and the course's
safety rules in the code the notebooks teach.
"""
import re

import nbformat
import pytest

from gradingrun import MANIFEST, REPO

SECTIONS = ["Learning goals", "Warm-up", "New concept", "Worked example", "Try it yourself",
            "Mini-challenge", "Recap", "Vocabulary", "Homework"]
HEADING = re.compile(r"^#{1,4}\s+(.+?)\s*$", re.MULTILINE)
MINUTES = re.compile(r"\(\d+ min\)$")
FIXED_PORT = re.compile(r"""(bind|connect|create_connection|create_server)\(\s*\(\s*["'][^"']*["']"""
                        r"""\s*,\s*[1-9]\d*\s*\)""")
ALL_INTERFACES = re.compile(r"""(bind|create_server)\(\s*\(\s*["']0\.0\.0\.0""")


def lesson_id(lesson):
    return f"{lesson.number}-{lesson.notebook.split('/')[-1]}"


@pytest.fixture(params=MANIFEST.lessons, ids=lesson_id)
def lesson(request):
    return request.param


@pytest.fixture
def notebook(lesson):
    path = REPO / lesson.notebook
    assert path.is_file(), f"lesson {lesson.number}: {lesson.notebook} does not exist"
    return nbformat.read(path, as_version=4)


def headings(nb):
    return [h for cell in nb.cells if cell.cell_type == "markdown"
            for h in HEADING.findall(cell.source)]


def test_is_valid_nbformat_with_a_python_kernel(notebook):
    nbformat.validate(notebook)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"


def test_has_every_section_in_order_with_its_minutes(notebook):
    found = headings(notebook)
    order = []
    for section in SECTIONS:
        matches = [i for i, h in enumerate(found) if h.lower().startswith(section.lower())]
        assert matches, f"no '{section}' heading; headings are: {found}"
        order.append(matches[0])
        for i in matches:
            assert MINUTES.search(found[i]), f"heading '{found[i]}' should end with '(N min)'"
    assert order == sorted(order), f"sections out of order; expected {SECTIONS}, got {found}"


def test_every_task_section_named_by_the_graders_exists(lesson, notebook):
    found = [h.lower() for h in headings(notebook)]
    for task in lesson.tasks:
        assert any(h.startswith(task.section.lower()) for h in found), (
            f"task {task.id} sends students to section '{task.section}', "
            f"which is not a heading of {lesson.notebook}")


def test_links_its_exercise_and_the_command_that_grades_it(lesson, notebook):
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert lesson.module in text, f"{lesson.notebook} never names its exercise {lesson.module}"
    assert f"pytest exercises -k lesson{lesson.number}" in text
    for linked in set(re.findall(r"\b((?:exercises|solutions|tools)/[\w/]+\.py)\b", text)):
        assert (REPO / linked).is_file(), f"{lesson.notebook} links to missing {linked}"


def test_is_stored_with_its_outputs(notebook):
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a lesson without code cannot demonstrate anything"
    unrun = [cell.source[:60] for cell in code if cell.execution_count is None]
    assert not unrun, f"cells without stored outputs (run jupyter execute --inplace): {unrun}"
    assert any(cell.outputs for cell in code), "no stored output at all"


def test_code_uses_no_fixed_port_and_never_binds_every_interface(notebook):
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        assert not FIXED_PORT.search(cell.source), f"a fixed port (use port 0):\n{cell.source}"
        assert not ALL_INTERFACES.search(cell.source), f"binds 0.0.0.0:\n{cell.source}"
