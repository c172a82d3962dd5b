"""The templates completed from their hints (``tests/completions/``), laid onto the current templates.

A completion is laid onto the CURRENT template (``lay_onto_template``): every cell whose template source holds the
stub takes the completion's cell of the same id, every other cell is the template's. So a given cell that changes
after the fixture was written is run with every completion: a given cell must work for every completion the hints
allow. Used by tests/test_completions.py (graded offline) and tests/test_package_sets.py (run on each package set).
"""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat

from grader.build import ANSWER_KEY, GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE, ROOT, STUB, TEMPLATE, build_template

COMPLETIONS = ROOT / "tests" / "completions"


def is_going_further(nb) -> bool:
    return any(cell.get("id") == "lora-config" for cell in nb.cells)


def lay_onto_template(completion, template):
    """The template with each TODO cell replaced by the completion's cell of the same id (and the
    completion's answers to the short questions)."""
    done = {cell.get("id"): cell for cell in completion.cells}
    nb = copy.deepcopy(template)
    for index, cell in enumerate(nb.cells):
        answer = cell.cell_type == "markdown" and cell.metadata.get("nbgrader", {}).get("solution")
        if STUB in cell.source or answer:
            replacement = done.get(cell.get("id"))
            if replacement is None:
                raise AssertionError(f"the completion has no cell {cell.get('id')!r}: complete that TODO")
            if STUB in replacement.source:
                raise AssertionError(f"the completion leaves the TODO of cell {cell.get('id')!r} undone")
            nb.cells[index] = copy.deepcopy(replacement)
    return nb


def completion_fixtures() -> dict[str, Path]:
    return {path.stem: path for path in sorted(COMPLETIONS.glob("*.ipynb"))}


def laid_completion(path: Path) -> nbformat.NotebookNode:
    """The completion at ``path`` laid onto a fresh build of its template."""
    completion = nbformat.read(path, as_version=4)
    template = (build_template(GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE) if is_going_further(completion)
                else build_template(ANSWER_KEY, TEMPLATE))
    return lay_onto_template(completion, template)
