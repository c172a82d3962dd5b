"""nbgrader interop: the answer key is a valid nbgrader source notebook, end to end.

A course directory in tmp_path, the answer key copied into ``source/``, then the real nbgrader CLI:
``nbgrader generate_assignment`` and ``nbgrader autograde``, offline, with the tiny model of
conftest.py. The scores are read back from nbgrader's own gradebook (``gradebook.db``).

Two students, whose notebooks differ only in their solutions. Both set the parameters cell to the tiny
model and data (the grading machine's settings, as ``grade -p`` would), so that both run offline
against the same data and the stubs, not a missing download, are what stops the blank one:

- ``solved`` submits the answer key itself, solutions in place: each check cell earns its 25 points
  exactly when it ran without an error in nbgrader's autograded copy, and the answer key passes all four;
- ``blank`` submits the release notebook nbgrader generated, nothing else changed: its first stub raises
  NotImplementedError and every graded cell scores 0. Were the solutions left in the release, it
  would score points here.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="nbgrader is not installed")
from nbgrader.api import Gradebook  # noqa: E402

from grader.build import ANSWER_KEY, STUB, build_template  # noqa: E402
from grader.submissions import discover  # noqa: E402

ASSIGNMENT = "finetune"
NOTEBOOK = "MLB_Project_FineTuning"   # the name students see; nbgrader keys submissions by it
CHECKS = ["check-accuracy", "check-f1", "check-predictions", "check-reload"]
# The short questions' answer cells: markdown, nbgrader solution + grade cells, graded by hand (0 points here).
ANSWERS = ["q-validation-split", "q-dynamic-padding", "q-mcnemar", "q-error-analysis"]
STUB_MESSAGE = STUB.split('"')[1]   # what the stubs raise
CELL_TIMEOUT_S = 300                  # nbgrader's default is 30 s per cell

COURSE_CONFIG = f"""\
c = get_config()
c.CourseDirectory.course_id = "finetune-sentiment"
c.Execute.timeout = {CELL_TIMEOUT_S}
c.ClearSolutions.code_stub = {{"python": {STUB!r}}}
"""


def nbgrader(course: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    """The real nbgrader CLI of this Python, run in the course directory."""
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def set_parameters(nb: nbformat.NotebookNode, values: dict) -> None:
    """Change the values assigned in the cell tagged ``parameters`` (its comments and layout stay)."""
    cell = next(c for c in nb.cells if c.get("id") == "parameters")
    lines = cell.source.split("\n")
    for name, value in values.items():
        pattern = re.compile(rf"^({name}\s*=\s*)(\S+)(\s*#.*)?$")
        matches = [i for i, line in enumerate(lines) if pattern.match(line)]
        assert len(matches) == 1, f"{name} is not assigned once in the parameters cell"
        lines[matches[0]] = pattern.sub(lambda m: f"{m[1]}{value!r}{m[3] or ''}", lines[matches[0]])
    cell.source = "\n".join(lines)
    namespace: dict = {}
    exec(cell.source, namespace)
    assert {name: namespace[name] for name in values} == values


def submit(course: Path, student: str, nb: nbformat.NotebookNode) -> None:
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")


def errors_of(cell) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in cell.get("outputs", []) if o.output_type == "error"]


@pytest.fixture(scope="module")
def course(tiny_parameters, tmp_path_factory):
    """A graded course directory: released, submitted by two students, autograded."""
    course = tmp_path_factory.mktemp("nbgrader-course")
    (course / "nbgrader_config.py").write_text(COURSE_CONFIG, encoding="utf-8")
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copyfile(ANSWER_KEY, course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
    # alembic (run by nbgrader to create gradebook.db) lives next to this Python; an empty Hugging Face
    # home, so that nothing cached on this machine is used: the tiny model is a local folder
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               HF_HOME=str(course / "hf-home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

    nbgrader(course, "generate_assignment", ASSIGNMENT, env=env)
    release = nbformat.read(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)

    solved = nbformat.read(ANSWER_KEY, as_version=4)
    set_parameters(solved, tiny_parameters)
    submit(course, "solved", solved)
    blank = nbformat.from_dict(copy.deepcopy(release))
    set_parameters(blank, tiny_parameters)
    submit(course, "blank", blank)

    nbgrader(course, "autograde", ASSIGNMENT, env=env)
    return course, release


def scores(course: Path, student: str) -> tuple[dict, float, float]:
    """Per autograded cell score, the notebook's score and its maximum, from nbgrader's gradebook."""
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
        return ({grade.name: grade.score for grade in submission.grades if grade.name not in ANSWERS},
                submission.score, submission.max_score)


def manual_grades(course: Path, student: str) -> dict:
    """The answer cells as nbgrader's gradebook holds them: (needs a manual grade, its maximum)."""
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
        return {grade.name: (grade.needs_manual_grade, grade.max_score) for grade in submission.grades
                if grade.name in ANSWERS}


def autograded(course: Path, student: str) -> dict:
    nb = nbformat.read(course / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    return {cell.get("id"): cell for cell in nb.cells}


def test_the_release_is_the_kits_template(course):
    """nbgrader's release and `grade build`'s template hold the same code: same stubs, same locked checks."""
    _, release = course
    template = build_template()
    assert ([c.source for c in release.cells if c.cell_type == "code"]
            == [c.source for c in template.cells if c.cell_type == "code"])
    locked = [c.get("id") for c in release.cells if c.metadata.get("nbgrader", {}).get("locked")]
    # read-only too: the self-checks of the split, the TF-IDF baseline, compute_metrics and the report files,
    # which carry no points
    assert locked == ["split-self-check", "tfidf-self-check", "metrics-self-check", "report-self-check", *CHECKS]


def test_the_solved_notebook_earns_what_its_own_checks_did(course):
    course, _ = course
    cells = autograded(course, "solved")
    by_cell, total, max_score = scores(course, "solved")
    assert set(by_cell) == set(CHECKS) and max_score == 25 * len(CHECKS)
    expected = {}
    for check in CHECKS:
        outputs = cells[check].outputs
        ran_clean = not errors_of(cells[check]) and any("OK:" in o.get("text", "") for o in outputs)
        stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, f"{check} wrote to stderr, which nbgrader scores 0: {stderr}"
        expected[check] = 25.0 if ran_clean else 0.0
    assert by_cell == expected
    # the answer key runs without an error and meets its own grading criteria with the tiny model
    # (test_notebooks.py checks the same without nbgrader)
    assert {cell_id: errors_of(cell) for cell_id, cell in cells.items() if errors_of(cell)} == {}
    assert total == sum(expected.values()) == 100
    # the answers to the short questions wait for the instructor's manual grade (0 points of their own here)
    assert manual_grades(course, "solved") == dict.fromkeys(ANSWERS, (True, 0.0))


def test_the_blank_release_scores_zero_on_every_check(course):
    course, _ = course
    by_cell, total, max_score = scores(course, "blank")
    assert by_cell == dict.fromkeys(CHECKS, 0.0) and total == 0 and max_score == 100
    # unanswered (nbgrader's stub left as released): nothing for the instructor to grade
    assert manual_grades(course, "blank") == dict.fromkeys(ANSWERS, (False, 0.0))
    cells = autograded(course, "blank")
    # the first error is the first stub's: the kit's NotImplementedError under the first TODO
    first_error = next(errors_of(cell) for cell in cells.values() if errors_of(cell))
    assert first_error == [f"NotImplementedError: {STUB_MESSAGE}"]
    assert errors_of(cells["combine-text"]) == first_error
    assert all(errors_of(cells[check]) for check in CHECKS)



def test_the_kits_grade_reads_nbgraders_submitted_folder(course):
    """`grade submitted/` finds one notebook per student in nbgrader's layout (the README says so)."""
    course, _ = course
    found = discover(course / "submitted")
    assert found.skipped == []
    assert {s.student_id: s.notebook for s in found.submissions} == {
        student: course / "submitted" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb" for student in ("blank", "solved")}
