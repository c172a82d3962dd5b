"""Grade from the outputs saved in a notebook, without running it (``grade --no-execute``).

Nothing here is verified: the outputs are whatever the student's file says. The result is
marked ``verified = False`` and the feedback says so. Each rubric check reads the saved output
of the matching self-check cell, which prints ``OK:`` when it passes.
"""
from __future__ import annotations

import re

from .execute import cell_errors
from .identity import notebook_problem
from .results import SAVED_OUTPUTS_MODE, GradeResult
from .rubric import SELF_CHECK_CELLS, Rubric, notebook_errors, saved_outputs_ran, score_saved_outputs

REPORTED_METRIC = re.compile(r"^\s*(accuracy|precision|recall|f1):\s*([0-9.]+)\s*$", re.MULTILINE)


def _stdout(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", [])
                   if output.get("output_type") == "stream" and output.get("name") == "stdout")


def grade_saved_outputs(result: GradeResult, nb, rubric: Rubric) -> None:
    result.verified, result.mode = False, SAVED_OUTPUTS_MODE
    cells = {cell.get("id"): cell for cell in nb.cells if cell.cell_type == "code"}
    result.errors = cell_errors(nb)
    unexecuted = sum(1 for cell in cells.values() if cell.get("execution_count") is None and cell.source.strip())
    failures = notebook_errors(result.errors)
    if "test-eval" in cells:
        result.reported_metrics = {name: float(value) for name, value in REPORTED_METRIC.findall(_stdout(cells["test-eval"]))}
    structure = notebook_problem(nb, rubric.answer_key_path, outputs=True)[0]
    ran = saved_outputs_ran(len(failures), unexecuted, structure)
    stdout = {cell_id: _stdout(cells[cell_id]) if cell_id in cells else None for cell_id in SELF_CHECK_CELLS.values()}
    score_saved_outputs(result, nb, ran, stdout, rubric)
