"""Is this the course's notebook? Its locked cells, found the way nbgrader finds them: by their source.

The answer key is the single source of truth. Every code cell the template gives the student unchanged is
*locked*: the self-checks, the submit cell, and the given cells (imports, the training loop, the report...).
Only the cells with a solution region (``### BEGIN SOLUTION``, the student's TODOs) and the parameters cell
(the student's own settings, overridden by the grader) are the student's to change; a student may also add
cells of their own anywhere. A submission is the course's notebook when every locked cell is there, in the
answer key's order, with the answer key's source (whitespace at line ends and around it ignored, as
``rubric.source_digest`` hashes it). Cell ids are not trusted: a student can give any cell any id.

When the notebook was not run by the grader (``grade --verify``, ``--no-execute``), the locked cells'
saved outputs must also be what those cells print when they run: a self-check prints a line starting
``OK`` (or stops with an error, scored by the check it mirrors), a given cell that prints at its top level
leaves a printed output, and the submit cell displays the submission. Outputs can still be pasted by hand:
this raises the cost of a notebook that never ran; only an audit (a re-run) proves that it did.

Reading a notebook here is linear in its size: each cell's source is hashed once.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

from .rubric import source_digest

SUBMIT_CELL_ID = "submit"          # the answer key's submit cell (ids are trusted in the answer key only)
SOLUTION_MARK = "### BEGIN SOLUTION"
PARAMETERS_TAG = "parameters"
SELF_CHECK, SUBMIT, GIVEN = "self-check", "submit", "given"
# A notebook holding at least this share of another kit notebook's locked cells, and more of them than of
# the rubric's notebook, is that other notebook: graded with the wrong rubric, it is refused.
RECOGNISED_SHARE = 0.5


@dataclass(frozen=True)
class LockedCell:
    """One locked code cell of an answer key."""

    cell_id: str
    section: str        # the heading of the answer key's section the cell is in
    digest: str         # rubric.source_digest of its source
    kind: str           # SELF_CHECK, SUBMIT or GIVEN
    prints: bool        # its source prints at its top level, so a run always leaves a printed output

    @property
    def name(self) -> str:
        return f"cell {self.cell_id!r} (section {self.section!r})" if self.section else f"cell {self.cell_id!r}"


def _heading(markdown: str) -> str | None:
    for line in markdown.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return None


def _prints_at_top_level(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:   # IPython magics: nothing can be said of what the cell prints
        return False
    return any(isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
               and isinstance(node.value.func, ast.Name) and node.value.func.id == "print" for node in tree.body)


def _is_locked(cell) -> bool:
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    return (cell.cell_type == "code" and SOLUTION_MARK not in cell.source and not nbgrader.get("solution")
            and PARAMETERS_TAG not in cell.get("metadata", {}).get("tags", []) and bool(cell.source.strip()))


@functools.cache
def locked_cells(answer_key: Path) -> tuple[LockedCell, ...]:
    """The locked code cells of ``answer_key``, in order."""
    import nbformat

    nb = nbformat.read(answer_key, as_version=4)
    cells, section = [], ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            section = _heading(cell.source) or section
            continue
        if not _is_locked(cell):
            continue
        nbgrader = cell.get("metadata", {}).get("nbgrader", {})
        kind = SUBMIT if cell.get("id") == SUBMIT_CELL_ID else SELF_CHECK if nbgrader.get("locked") else GIVEN
        cells.append(LockedCell(cell.get("id", ""), section, source_digest(cell.source), kind,
                                _prints_at_top_level(cell.source)))
    return tuple(cells)


def submit_digest(answer_key: Path) -> str | None:
    """The source digest of the answer key's submit cell, or None when it has none."""
    return next((locked.digest for locked in locked_cells(answer_key) if locked.kind == SUBMIT), None)


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def digests(cells) -> list[str]:
    return [source_digest(cell.source) for cell in cells]


@dataclass
class Found:
    """Where the answer key's locked cells are in a student's notebook."""

    cells: dict[str, object]         # locked cell id -> the student's cell, for those found in order
    missing: list[tuple[LockedCell, str]]   # (locked cell, why: "missing", "edited" or "moved")


def find_locked_cells(nb, answer_key: Path, cell_digests: list[str] | None = None) -> Found:
    """Match the answer key's locked cells, in order, against the notebook's code cells (a subsequence)."""
    cells = code_cells(nb)
    cell_digests = digests(cells) if cell_digests is None else cell_digests
    present, ids = set(cell_digests), {cell.get("id") for cell in cells}
    found, missing, position = {}, [], 0
    for locked in locked_cells(answer_key):
        index = next((i for i in range(position, len(cells)) if cell_digests[i] == locked.digest), None)
        if index is None:
            why = "moved" if locked.digest in present else "edited" if locked.cell_id in ids else "missing"
            missing.append((locked, why))
            continue
        found[locked.cell_id], position = cells[index], index + 1
    return Found(found, missing)


WHY = {"missing": "is missing", "edited": "was edited (its source is not the template's)",
       "moved": "is out of place (the template's cells must stay in their order)"}


def structure_problem(found: Found, total: int) -> str | None:
    """Why the notebook is not the course's notebook, for the student; None when every locked cell is there."""
    if not found.missing:
        return None
    locked, why = found.missing[0]
    more = f" ({len(found.missing)} of the template's {total} given cells are missing or changed)" \
        if len(found.missing) > 1 else ""
    return (f"this is not the course's notebook as given: {locked.name} {WHY[why]}{more}. Keep every cell the "
            "template gives you, unchanged and in order (write your code in the TODO cells, or in cells of "
            "your own), then Restart and run all")


def _stdout(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", [])
                   if output.get("output_type") == "stream" and output.get("name") == "stdout")


def _raised(cell) -> bool:
    return any(output.get("output_type") == "error" for output in cell.get("outputs", []))


def displays_submission(cell) -> bool:
    return any(is_submission(output.get("data", {}).get("application/json")) for output in cell.get("outputs", []))


def is_submission(data) -> bool:
    return isinstance(data, dict) and "predictions" in data and "test_metrics" in data


def output_problem(locked: LockedCell, cell) -> str | None:
    """Why a locked cell's saved outputs are not what the cell prints when it runs, or None."""
    if _raised(cell):
        return None   # an error is scored elsewhere: as an error of the notebook, or by the check it mirrors
    if locked.kind == SELF_CHECK and not any(line.startswith("OK") for line in _stdout(cell).splitlines()):
        return f"the saved output of self-check {locked.name} is not its \"OK\" line"
    if locked.kind == SUBMIT and not displays_submission(cell):
        return f"the saved output of the submit {locked.name} is not the submission it displays"
    if locked.prints and not _stdout(cell):
        return f"{locked.name} prints when it runs, but its saved output is empty"
    return None


def saved_outputs_problem(found: Found, answer_key: Path) -> str | None:
    """The first locked cell (in order) whose saved outputs are not what it prints, in words, or None."""
    for locked in locked_cells(answer_key):
        cell = found.cells.get(locked.cell_id)
        problem = cell is not None and output_problem(locked, cell)
        if problem:
            return (f"{problem}: the notebook's outputs are not those of a run (use Restart and run all, then "
                    "download the notebook)")
    return None


def notebook_problem(nb, answer_key: Path, outputs: bool) -> tuple[str | None, Found]:
    """Why ``nb`` is not the course's notebook as run (the structure, then, with ``outputs``, the saved
    outputs), or None; and where its locked cells are."""
    found = find_locked_cells(nb, answer_key)
    problem = structure_problem(found, len(locked_cells(answer_key)))
    if problem is None and outputs:
        problem = saved_outputs_problem(found, answer_key)
    return problem, found


def share_present(cell_digests: set[str], answer_key: Path) -> float:
    """The share of the answer key's locked cells whose source the notebook holds (anywhere)."""
    locked = locked_cells(answer_key)
    return sum(cell.digest in cell_digests for cell in locked) / len(locked) if locked else 0.0


def other_kit_notebook(nb, answer_key: Path, kit: tuple[Path, ...]) -> Path | None:
    """The kit's other answer key that ``nb`` is (most of its locked cells, more than of ``answer_key``'s),
    or None. A mutilated or hand-made notebook is none of them: it fails the structure check instead."""
    present = set(digests(code_cells(nb)))
    own = share_present(present, answer_key)
    best = max((key for key in kit if Path(key).resolve() != Path(answer_key).resolve()),
               key=lambda key: share_present(present, key), default=None)
    if best is not None and share_present(present, best) >= RECOGNISED_SHARE and share_present(present, best) > own:
        return best
    return None
