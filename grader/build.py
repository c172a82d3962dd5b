"""Build the student template from the answer key.

The answer key is the single source of truth. Building the template is an ordered list of
notebook preprocessors, nbgrader's own where one exists:

1. ClearSolutions: each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region becomes a stub
   that raises NotImplementedError; the ``# TODO`` comment and hint above it stay.
2. ClearHiddenTests: removes ``### BEGIN HIDDEN TESTS`` regions from check cells.
3. LockCells: check cells become read-only in Jupyter.
4. ClearOutput: no outputs or execution counts.
5. RetargetColabLink: the "Open in Colab" badge opens the template, not the answer key.
"""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor
from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions, LockCells
from traitlets import Unicode

from .course import (ANSWER_KEY, ANSWER_KEYS, GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE,  # noqa: F401
                     NOTEBOOKS, ROOT, TEMPLATE)
from .errors import NotebookInvalid, TemplateOutOfDate

STUB = ('raise NotImplementedError("TODO: replace this line with your code '
        '(see the TODO comment above), then run the cell again.")')


class RetargetColabLink(Preprocessor):
    """Point links at the answer key's path to the template's path instead."""

    old_path = Unicode()
    new_path = Unicode()

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown" and self.old_path:
            cell.source = cell.source.replace(self.old_path, self.new_path)
        return cell, resources


def template_preprocessors(answer_key: Path, template: Path) -> list[Preprocessor]:
    return [
        ClearSolutions(code_stub={"python": STUB}),
        ClearHiddenTests(),
        LockCells(),
        ClearOutput(),
        RetargetColabLink(old_path=_repo_path(answer_key), new_path=_repo_path(template)),
    ]


def _repo_path(path: Path) -> str:
    path = Path(path).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def read_notebook(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several unrelated types for unreadable files
        raise NotebookInvalid(f"{path} is not a readable notebook: {error}") from error


def build_template(answer_key: Path = ANSWER_KEY, template: Path = TEMPLATE) -> nbformat.NotebookNode:
    """Return the student template built from ``answer_key`` (nothing is written)."""
    nb = copy.deepcopy(read_notebook(answer_key))
    resources: dict = {}
    for preprocessor in template_preprocessors(answer_key, template):
        nb, resources = preprocessor.preprocess(nb, resources)
    return nb


def template_text(answer_key: Path = ANSWER_KEY, template: Path = TEMPLATE) -> str:
    return nbformat.writes(build_template(answer_key, template)) + "\n"


def write_template(answer_key: Path = ANSWER_KEY, template: Path = TEMPLATE) -> Path:
    template = Path(template)
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text(template_text(answer_key, template), encoding="utf-8")
    return template


def check_template(answer_key: Path = ANSWER_KEY, template: Path = TEMPLATE) -> None:
    """Raise TemplateOutOfDate unless ``template`` is byte-identical to a fresh build."""
    template = Path(template)
    if not template.is_file():
        raise TemplateOutOfDate(f"{template} does not exist; run `grade build`")
    if template.read_text(encoding="utf-8") != template_text(answer_key, template):
        raise TemplateOutOfDate(f"{template} differs from a fresh build of {answer_key}; run `grade build`")


def check_templates(pairs=NOTEBOOKS) -> None:
    """check_template for each (answer key, template) pair; one TemplateOutOfDate naming every stale one."""
    stale = []
    for answer_key, template in pairs:
        try:
            check_template(answer_key, template)
        except TemplateOutOfDate as error:
            stale.append(str(error))
    if stale:
        raise TemplateOutOfDate("; ".join(stale))
