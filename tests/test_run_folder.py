"""grade_into_folder: the one function that grades a student into the output folder, for the local batch and a
Slurm task alike (grader.batch's run_one, grader.slurm's grade_one)."""
import json

import nbformat

from grader.cancel import Cancellation
from grader.report import OutputFolder
from grader.results import GRADED, GRADER_ERROR, INTERRUPTED, GradeResult
from grader.rubric import load_rubric
from grader.run_folder import grade_into_folder
from grader.submissions import Submission

STUDENT = Submission("alice", "alice.ipynb")


def stopped(submission):
    return GradeResult.for_submission(submission, status=INTERRUPTED, reason="stopped")


def grade_with(tmp_path, grade, cancellation=None, **kwargs):
    out = OutputFolder(tmp_path / "out")
    result = grade_into_folder(STUDENT, out, load_rubric(), "fp", grade, cancellation or Cancellation(), stopped,
                               **kwargs)
    return out, result


def saved(out):
    return json.loads(out.result_path("alice").read_text())


def graded_in(workdir):
    workdir.mkdir(parents=True)
    (workdir / "scratch").write_text("x")
    return GradeResult.for_submission(STUDENT), nbformat.v4.new_notebook()


def test_a_grade_is_saved_with_its_fingerprint_and_notebook_and_the_workdir_removed(tmp_path):
    out, result = grade_with(tmp_path, graded_in)
    assert result.status == GRADED and saved(out)["fingerprint"] == "fp"
    assert (out.executed / "alice.ipynb").is_file() and (out.feedback / "alice.html").is_file()
    assert not (out.work / "alice").exists()


def test_keep_work_keeps_the_workdir(tmp_path):
    out, _ = grade_with(tmp_path, graded_in, keep_work=True)
    assert (out.work / "alice" / "scratch").is_file()


def test_a_bug_of_the_grader_is_the_students_grader_error_and_says_where(tmp_path):
    def broken(workdir):
        workdir.mkdir(parents=True)
        raise RuntimeError("no sandbox here")

    out, result = grade_with(tmp_path, broken, where=" on node7")
    assert result.status == GRADER_ERROR and saved(out)["status"] == "grader error"
    assert result.reason == "internal grader error on node7: RuntimeError: no sandbox here"
    assert not (out.work / "alice").exists()


def test_a_run_cancelled_while_grading_saves_no_grade(tmp_path):
    cancellation = Cancellation()

    def cancelled_part_way(workdir):
        cancellation.cancel()
        return graded_in(workdir)

    out, result = grade_with(tmp_path, cancelled_part_way, cancellation)
    assert result.status == INTERRUPTED and saved(out)["reason"] == "stopped"
    assert not (out.executed / "alice.ipynb").exists()


def test_a_student_still_queued_when_the_run_is_cancelled_is_not_graded(tmp_path):
    cancellation, calls = Cancellation(), []
    cancellation.cancel()
    out, result = grade_with(tmp_path, calls.append, cancellation)
    assert calls == [] and result.status == INTERRUPTED and saved(out)["fingerprint"] == "fp"
