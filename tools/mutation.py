"""Measure the graders with mutmut: how many small, realistic mistakes in solutions/ do they catch?

An instructor tool, not part of CI or of the students' requirements:

    pip install -r requirements-instructor.txt
    python -m tools.mutation 03            # one lesson
    python -m tools.mutation 01 02 03 -v   # several, with every survivor's diff

For each lesson, mutmut copies the repository into a scratch folder, makes hundreds of one-token
changes to solutions/lessonNN_*.py (`<` for `<=`, `None` for a value, a string altered, a call
dropped, ...) and runs that lesson's graders (`pytest exercises --against solutions`) against each.
A mutant is *killed* when a grader fails (or the run times out); it *survives* when every grader
still passes. A survivor is a mistake a student could make and be told they are done, unless it
is *equivalent* (it changes nothing a client can observe): those are listed, with the reason, in
tools/mutation_equivalents.toml, and this tool reports them apart.

    score = killed / (total - equivalent)

Each lesson runs in its own scratch folder, so several runs never share mutmut's state.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EQUIVALENTS = REPO / "tools" / "mutation_equivalents.toml"
# Copied into the scratch folder beside the mutated solutions/ (mutmut copies solutions/ itself).
COPY = ["exercises", "tools", "pytest.ini"]
SKIP = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".hypothesis", "mutants",
                              ".ipynb_checkpoints", "*.ipynb")
# How mutmut names each verdict (`mutmut results --all true`), and whether it counts as caught.
CAUGHT = {"killed": True, "timeout": True, "survived": False, "no tests": False,
          "suspicious": False, "skipped": False}

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def lesson_files(lesson: str) -> tuple[list[str], list[str]]:
    """(modules to mutate, grader files) of a lesson, found by the course's naming rule."""
    modules = sorted(f"solutions/{p.name}" for p in (REPO / "solutions").glob(f"lesson{lesson}_*.py"))
    graders = sorted(f"exercises/{p.name}" for p in (REPO / "exercises").glob(f"test_lesson{lesson}_*.py"))
    if not modules or not graders:
        raise SystemExit(f"lesson {lesson}: no solutions/lesson{lesson}_*.py or grader file")
    return modules, graders


def setup_cfg(modules: list[str], graders: list[str]) -> str:
    lines = ["[mutmut]", "source_paths=solutions", "only_mutate="]
    lines += [f"    {m}" for m in modules]
    lines += ["also_copy="] + [f"    {c}" for c in COPY]
    # One argument per line: mutmut splits this setting on newlines, not on spaces.
    lines += ["pytest_add_cli_args="]
    lines += [f"    {a}" for a in ["-p", "no:nbval", "-o", "addopts=", "-p", "no:cacheprovider",
                                   "--against", "solutions"]]
    lines += ["pytest_add_cli_args_test_selection="] + [f"    {g}" for g in graders]
    return "\n".join(lines) + "\n"


def scratch_copy(lesson: str, modules: list[str], graders: list[str]) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix=f"mutation-{lesson}-"))
    shutil.copytree(REPO / "solutions", scratch / "solutions", ignore=SKIP)
    for name in COPY:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, scratch / name, ignore=SKIP)
        elif source.exists():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, scratch / name)
    (scratch / "setup.cfg").write_text(setup_cfg(modules, graders), encoding="utf-8")
    return scratch


def mutmut(scratch: Path, *args: str, timeout: float | None = None) -> str:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def load_equivalents() -> dict[str, str]:
    """mutant name -> why it is equivalent."""
    if not EQUIVALENTS.exists():
        return {}
    data = tomllib.loads(EQUIVALENTS.read_text(encoding="utf-8"))
    return {e["mutant"]: e["reason"] for e in data.get("equivalent", [])}


def measure(lesson: str, verbose: bool = False, keep: bool = False) -> dict:
    modules, graders = lesson_files(lesson)
    scratch = scratch_copy(lesson, modules, graders)
    try:
        mutmut(scratch, "run", "--max-children", "2", timeout=3600)
        listing = mutmut(scratch, "results", "--all", "true")
        verdicts = dict(re.findall(r"^\s*(\S+__mutmut_\d+): (.+?)\s*$", listing, re.MULTILINE))
        equivalents = load_equivalents()
        survivors = [m for m, v in verdicts.items() if not CAUGHT.get(v, False)]
        equivalent = [m for m in survivors if m in equivalents]
        missed = [m for m in survivors if m not in equivalents]
        total = len(verdicts) - len(equivalent)
        killed = total - len(missed)
        print(f"lesson {lesson}: {killed}/{total} killed "
              f"({100 * killed / total if total else 0:.0f}%), "
              f"{len(equivalent)} equivalent, {len(missed)} missed", flush=True)
        for name in missed:
            print(f"  missed: {name} ({verdicts[name]})")
            if verbose:
                diff = mutmut(scratch, "show", name)
                print("    " + "\n    ".join(l for l in diff.splitlines() if l[:1] in "+-"))
        return {"lesson": lesson, "killed": killed, "total": total,
                "equivalent": len(equivalent), "missed": missed}
    finally:
        if keep:
            print(f"  (scratch folder kept: {scratch})")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="+", help="lesson numbers, e.g. 01 05")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each survivor's diff")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    results = [measure(lesson.zfill(2), args.verbose, args.keep) for lesson in args.lessons]
    print("\nlesson  killed/total  score")
    for r in results:
        score = 100 * r["killed"] / r["total"] if r["total"] else 0
        print(f"  {r['lesson']}    {r['killed']:>4}/{r['total']:<5}   {score:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
