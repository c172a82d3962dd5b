"""Batch behaviour that needs no kernel: GPU spreading, and a grader bug staying one student's result."""
import threading
import time

import nbformat

from grader import GradingOptions, batch as batch_module, grade_submissions
from grader.results import GRADER_ERROR, GradeResult


def write_notebooks(folder, names):
    folder.mkdir()
    for name in names:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), folder / f"{name}.ipynb")
    return folder


def test_parallel_jobs_get_one_gpu_each(tmp_path, monkeypatch):
    seen, running, lock = [], set(), threading.Lock()

    def fake_grade(submission, options, hidden, workdir, env, sandbox):
        gpu = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert gpu not in running, "two jobs on one GPU"
            running.add(gpu)
            seen.append(gpu)
        time.sleep(0.2)
        with lock:
            running.discard(gpu)
        return GradeResult(submission.student_id, str(submission.notebook)), None

    monkeypatch.setattr(batch_module, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(batch_module, "grade_submission", fake_grade)
    folder = write_notebooks(tmp_path / "subs", [f"s{i}" for i in range(6)])
    batch = grade_submissions(folder, GradingOptions(output_dir=tmp_path / "out", execute=False, jobs=2),
                              progress=False)
    assert len(batch.results) == 6 and sorted(set(seen)) == ["0", "1"]


def test_a_grader_bug_becomes_that_students_result_and_is_retried(tmp_path, monkeypatch):
    def flaky(submission, *args):
        if submission.student_id == "bad":
            raise RuntimeError("boom")
        return GradeResult(submission.student_id, str(submission.notebook)), None

    monkeypatch.setattr(batch_module, "grade_submission", flaky)
    folder = write_notebooks(tmp_path / "subs", ["bad", "good"])
    options = GradingOptions(output_dir=tmp_path / "out", execute=False)
    first = {r.student_id: r for r in grade_submissions(folder, options, progress=False).results}
    assert first["bad"].status == GRADER_ERROR and "boom" in first["bad"].reason
    assert first["good"].status == "graded"
    again = grade_submissions(folder, options, progress=False)
    assert again.graded_now == ["bad"] and again.resumed == ["good"]
