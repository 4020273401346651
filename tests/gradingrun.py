"""Run the graders in a separate pytest process and read back what happened to every test.

The instructor suite never trusts a grader's own word: it runs `pytest exercises --against DIR`
exactly as a student or CI would, and reads the JUnit XML report, test by test.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXERCISES = REPO / "exercises"
SOLUTIONS = REPO / "solutions"

sys.path.insert(0, str(EXERCISES))
from graderkit import load_manifest, tomllib  # noqa: E402  (one manifest reader, one TOML)

MANIFEST = load_manifest()

# A whole grading run is bounded too: if the harness itself hung, the suite fails instead.
RUN_TIMEOUT_S = 300


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

    def by_status(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]


def run_graders(against: Path, *extra: str, timeout: float = RUN_TIMEOUT_S) -> GradingRun:
    """`pytest exercises --against <against> *extra` in a subprocess, parsed test by test."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        # As a student runs it, less the notebook plugin: importing nbval costs a second of
        # CPU per run, and these runs collect no notebooks.
        command = [sys.executable, "-m", "pytest", "exercises", "--against", str(against),
                   "-o", "addopts=", "-p", "no:nbval",
                   "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                   f"--junitxml={report}", "-q", *extra]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, env=env)
        outcomes = parse_junit(report) if report.exists() else []
    return GradingRun(outcomes, done.returncode, done.stdout + done.stderr)


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


def load_toml(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def listing(outcomes, limit: int = 20) -> str:
    """Outcomes as readable lines for an assertion message: which test, how it ended, why."""
    return "\n".join(f"  {o.file}::{o.name}: {o.status} {o.message.strip()[:300]}"
                     for o in outcomes[:limit])


def grader_files() -> list[str]:
    return sorted(p.name for p in EXERCISES.glob("test_lesson*.py"))


def copy_of_solutions(parent: Path, name: str) -> Path:
    """A copy of solutions/ as a package called `name`, ready to be broken on purpose."""
    target = parent / name
    shutil.copytree(SOLUTIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target
