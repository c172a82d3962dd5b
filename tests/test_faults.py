"""Faults of the machine, not of a student: an I/O error is never a student's final grade."""
import builtins
import errno
import io
import os
from pathlib import Path

import nbformat
import pytest

from grader import GradingOptions, grade_submissions
from grader.pipeline import read_submission
from grader.results import GRADER_ERROR, NOT_GRADABLE
from grader.submissions import Submission
from grader import pipeline


def write_notebooks(folder, names, source="x = 1", outputs_bytes=0):
    """Notebooks of one cell; ``outputs_bytes`` of saved output each (their executed copies fill a disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cell = nbformat.v4.new_code_cell(source, execution_count=1)
        if outputs_bytes:
            cell.outputs = [nbformat.v4.new_output("stream", text="x" * outputs_bytes)]
        nbformat.write(nbformat.v4.new_notebook(cells=[cell]), folder / f"{name}.ipynb")
    return folder


# --- reading a notebook: the machine's failure is not the notebook's ---------------------------
@pytest.mark.parametrize("code", [errno.EMFILE, errno.EIO])
def test_an_io_error_reading_a_notebook_is_a_retried_grader_error(tmp_path, monkeypatch, code):
    """The machine fails to open ann's notebook (every way of opening a file goes through io.open)."""
    folder = write_notebooks(tmp_path / "subs", ["ann", "bob"])
    real_open = io.open

    def failing_open(file, *args, **kwargs):
        if str(file).endswith("ann.ipynb"):
            raise OSError(code, os.strerror(code), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", failing_open)
    monkeypatch.setattr(builtins, "open", failing_open)
    options = GradingOptions(output_dir=tmp_path / "out", execute=False)
    results = {r.student_id: r for r in grade_submissions(folder, options, progress=False).results}
    assert results["ann"].status == GRADER_ERROR, results["ann"]
    assert os.strerror(code) in results["ann"].reason and "rerun" in results["ann"].reason
    assert results["bob"].status == "graded"   # negative control: the same run reads the others
    monkeypatch.undo()
    again = grade_submissions(folder, options, progress=False)
    assert again.graded_now == ["ann"] and again.resumed == ["bob"]


def test_a_notebook_that_is_invalid_stays_not_gradable(tmp_path):
    """Negative control of the above: a file that is not a notebook is the student's, and final."""
    path = tmp_path / "broken.ipynb"
    path.write_text("{ not json", encoding="utf-8")
    result, _ = pipeline.grade_submission(Submission("broken", path), GradingOptions(execute=False), None,
                                          tmp_path / "work")
    assert result.status == NOT_GRADABLE and "not a valid Jupyter notebook" in result.reason


@pytest.mark.parametrize("content, kind", [("[]", "a list"), ('[{"cells": []}]', "a list"), ("42", "a number"),
                                           ("null", "null"), ('"a notebook"', "a string")])
def test_a_notebook_that_is_json_but_not_an_object_gets_a_readable_reason(tmp_path, content, kind):
    path = tmp_path / "list.ipynb"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(Exception) as raised:
        read_submission(path)
    assert str(raised.value) == (f"not a valid Jupyter notebook: the file holds {kind} in JSON, where a notebook is "
                                 "a JSON object with its cells")
