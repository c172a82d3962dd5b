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
from .rubric import Rubric, check, no_todo_check, notebook_errors

SELF_CHECK_CELLS = {"accuracy": "check-accuracy", "f1": "check-f1", "predictions": "check-predictions",
                    "reload": "check-reload"}
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
    ran = not failures and not unexecuted and not structure
    result.checks = [
        check(rubric, "ran_to_end", ran, "the saved outputs show every cell run without errors" if ran else
              structure if not failures and not unexecuted else
              f"the saved notebook has {len(failures)} error(s) and {unexecuted} cell(s) never run"),
        no_todo_check(rubric, nb),
    ]
    for name, cell_id in SELF_CHECK_CELLS.items():
        cell = cells.get(cell_id)
        passed = cell is not None and _stdout(cell).lstrip().startswith("OK")
        message = "the saved self-check output says OK (unverified)" if passed else \
            f"the saved output of self-check {cell_id!r} does not say OK"
        result.checks.append(check(rubric, name, passed, message))
