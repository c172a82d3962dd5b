"""The notebooks' short questions: listed for the instructor, scored by nobody here.

The answer keys hold each answer as nbgrader does: a markdown cell that is both a solution cell and a
grade cell, which nbgrader leaves to manual grading. The template shows nbgrader's text stub in it,
which the student writes over. The grader finds the answers of a submission by the answer key's cell
ids, says which are answered, and copies their text (capped) into the result and the feedback: it
gives them no points, whatever the rubric.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from .results import ShortAnswer

ANSWER_STUB = "YOUR ANSWER HERE"     # nbgrader's text stub, which `grade build` leaves in the template
MAX_ANSWER_CHARS = 4000
MAX_QUESTION_CHARS = 400


def is_answer_cell(cell) -> bool:
    grading = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "markdown" and bool(grading.get("solution")) and bool(grading.get("grade"))


@functools.cache
def questions(answer_key: Path | None = None) -> dict[Path, tuple[tuple[str, str], ...]]:
    """(answer cell id, question) of each answer key's short questions, in order. The question is the
    markdown cell just above the answer cell, without its "**Question (graded by hand).**" lead."""
    import nbformat

    from .course import ANSWER_KEYS
    found = {}
    for path in [answer_key] if answer_key else ANSWER_KEYS:
        cells = nbformat.read(path, as_version=4).cells
        found[path] = tuple((cell.get("id", ""), question_text(cells[index - 1].source if index else ""))
                            for index, cell in enumerate(cells) if is_answer_cell(cell))
    return found


def question_text(markdown: str) -> str:
    text = re.sub(r"^\*\*[^*]*\*\*\s*", "", markdown.strip())
    return text if len(text) <= MAX_QUESTION_CHARS else text[:MAX_QUESTION_CHARS] + "..."


def short_answers(nb) -> list[ShortAnswer]:
    """The answers of ``nb`` to the questions of the answer key it comes from (the one whose answer cells
    it holds most of); none when it holds none."""
    cells = {cell.get("id"): cell for cell in nb.cells if cell.get("cell_type") == "markdown"}
    asked = max(questions().values(), key=lambda pairs: sum(cell_id in cells for cell_id, _ in pairs), default=())
    if not any(cell_id in cells for cell_id, _ in asked):
        return []
    return [answer_of(cells.get(cell_id), cell_id, question) for cell_id, question in asked]


def answer_of(cell, cell_id: str, question: str) -> ShortAnswer:
    text = str(cell.get("source", "")).strip() if cell is not None else ""
    answered = bool(text) and text.replace(ANSWER_STUB, "").strip() != ""
    capped = text if len(text) <= MAX_ANSWER_CHARS else text[:MAX_ANSWER_CHARS] + " [cut by the grader]"
    return ShortAnswer(cell_id, question, answered, len(text.split()) if answered else 0, capped if answered else "")
