"""The rubric: thresholds and points from a small TOML file, and the checks that score a submission."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .results import CheckResult

DEFAULT_RUBRIC = Path(__file__).with_name("rubric.toml")
# The assignment's column in the Canvas import (canvas-import.csv) when the rubric names none.
DEFAULT_CANVAS_ASSIGNMENT = "Fine-Tuning Sentiment Project"
CHECKS = ("ran_to_end", "no_todo_left", "accuracy", "f1", "predictions", "reload")
TODO_STUB = "raise NotImplementedError"
SELF_CHECK_PREFIX = "check-"   # the ids of the answer key's self-check cells (ids are not trusted: see below)
# The student's own test figures may differ from the hidden set's by sampling noise (their test
# split has 750 reviews) plus a little for the different sample; beyond this we flag it.
STUDENT_TEST_SIZE = 750
AGREEMENT_SLACK = 0.02


# The kit's notebooks by the names a rubric may use in its [notebook] table.
KIT_NOTEBOOKS = {"main": "answer_key/MLB_Project_FineTuning_AnswerKey.ipynb",
                 "going-further": "answer_key/MLB_Project_GoingFurther_AnswerKey.ipynb"}
DEFAULT_BASE_MODEL = "distilbert-base-uncased"
NO_BASE_MODEL = ("", "none")   # [model] base = "none": the base-model check is off


@dataclass(frozen=True)
class Rubric:
    accuracy: float = 0.85
    f1: float = 0.85
    min_predictions: int = 5
    points: dict[str, float] = field(default_factory=lambda: {name: 0.0 for name in CHECKS})
    # The notebook this rubric grades (its answer key, as a path) and the model students fine-tune.
    answer_key: str = ""
    base_model: str = DEFAULT_BASE_MODEL

    @property
    def answer_key_path(self) -> Path:
        from .course import ANSWER_KEY
        return Path(self.answer_key) if self.answer_key else ANSWER_KEY
    # Canvas's gradebook import matches a column to an assignment by its header: each rubric needs its
    # own, or importing the bonus gradebook overwrites the main project's scores.
    canvas_assignment: str = DEFAULT_CANVAS_ASSIGNMENT
    canvas_assignment_id: str = ""     # the assignment's id in Canvas (digits), when the instructor gives it

    @property
    def max_points(self) -> float:
        return sum(self.points.values())

    @property
    def canvas_column(self) -> str:
        """The assignment's header in the Canvas import: "Name (id)", as Canvas's own export writes it, when the
        id is known (Canvas then matches the assignment by its id), else the name alone."""
        if self.canvas_assignment_id:
            return f"{self.canvas_assignment} ({self.canvas_assignment_id})"
        return self.canvas_assignment


def canvas_assignment_problem(name: str, assignment_id: str) -> str | None:
    """Why a Canvas assignment name or id cannot head a column of the import, or None."""
    if not name.strip():
        return "the Canvas assignment name is empty"
    if any(not char.isprintable() for char in name):
        return f"the Canvas assignment name {name!r} holds a control character"
    if assignment_id and not assignment_id.isdigit():
        return f"the Canvas assignment id {assignment_id!r} is not a number (it is the number in the " \
               "assignment's address in Canvas: .../assignments/NUMBER)"
    return None


def with_canvas_assignment(rubric: Rubric, name: str | None = None, assignment_id: str | None = None) -> Rubric:
    """``rubric`` with the Canvas assignment an instructor gave on the command line, checked."""
    name = rubric.canvas_assignment if name is None else name
    assignment_id = rubric.canvas_assignment_id if assignment_id is None else str(assignment_id).strip()
    problem = canvas_assignment_problem(name, assignment_id)
    if problem:
        raise ConfigError(problem)
    return dataclasses.replace(rubric, canvas_assignment=name, canvas_assignment_id=assignment_id)


def load_rubric(path: Path | None = None) -> Rubric:
    path = Path(path) if path else DEFAULT_RUBRIC
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read the rubric {path}: {error}") from error
    thresholds, points, canvas = data.get("thresholds", {}), data.get("points", {}), data.get("canvas", {})
    notebook, model = data.get("notebook", {}), data.get("model", {})
    unknown = ((set(thresholds) - {"accuracy", "f1", "min_predictions"}) | (set(points) - set(CHECKS))
               | (set(notebook) - {"answer_key"}) | (set(model) - {"base"})
               | (set(canvas) - {"assignment", "assignment_id"})
               | (set(data) - {"thresholds", "points", "notebook", "model", "canvas"}))
    if unknown:
        raise ConfigError(f"{path}: unknown rubric entries {', '.join(sorted(unknown))}")
    try:
        rubric = Rubric(accuracy=float(thresholds.get("accuracy", 0.85)), f1=float(thresholds.get("f1", 0.85)),
                        min_predictions=int(thresholds.get("min_predictions", 5)),
                        points={name: float(points.get(name, 0)) for name in CHECKS},
                        answer_key=str(answer_key_of(notebook.get("answer_key", "main"), path)),
                        base_model=str(model.get("base", DEFAULT_BASE_MODEL)),
                        canvas_assignment=str(canvas.get("assignment", DEFAULT_CANVAS_ASSIGNMENT)),
                        canvas_assignment_id=str(canvas.get("assignment_id", "")).strip())
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from error
    problem = canvas_assignment_problem(rubric.canvas_assignment, rubric.canvas_assignment_id)
    if problem:
        raise ConfigError(f"{path}: [canvas]: {problem}")
    if not (0 <= rubric.accuracy <= 1 and 0 <= rubric.f1 <= 1) or any(v < 0 for v in rubric.points.values()):
        raise ConfigError(f"{path}: thresholds must lie in [0, 1] and points must not be negative")
    return rubric


def answer_key_of(name, rubric_path: Path) -> Path:
    """The answer key a rubric's ``[notebook] answer_key`` names: one of the kit's notebooks by name
    (main, going-further), or a path (relative to the rubric file)."""
    from .course import ROOT

    if not isinstance(name, str) or not name:
        raise ConfigError(f"{rubric_path}: [notebook] answer_key must name a notebook")
    path = ROOT / KIT_NOTEBOOKS[name] if name in KIT_NOTEBOOKS else Path(rubric_path).parent / name
    if not path.is_file():
        raise ConfigError(f"{rubric_path}: [notebook] answer_key {name!r} is not one of "
                          f"{', '.join(KIT_NOTEBOOKS)} nor an answer key's path ({path} does not exist)")
    return path.resolve()


def check(rubric: Rubric, name: str, passed: bool, message: str) -> CheckResult:
    max_points = rubric.points[name]
    return CheckResult(name, passed, max_points if passed else 0.0, max_points, message)


def disagrees(reported: float | None, measured: float | None, hidden_size: int) -> bool:
    """Whether a student's own figure lies beyond noise from the grader's measurement."""
    if reported is None or measured is None or hidden_size == 0:
        return False
    variance = measured * (1 - measured)
    noise = 1.96 * math.sqrt(variance / hidden_size + variance / STUDENT_TEST_SIZE)
    return abs(reported - measured) > noise + AGREEMENT_SLACK


def source_digest(source: str) -> str:
    """A cell's source, whitespace at line ends and around it ignored, as a hash."""
    text = "\n".join(line.rstrip() for line in source.strip().splitlines())
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@functools.cache
def self_check_digests(answer_key: Path | None = None) -> frozenset[str]:
    """The answer keys' self-check cells, which the templates hold locked, by their source.

    Every answer key of the kit counts (the main project's and the going-further notebook's), or only
    ``answer_key`` when given. A student can rename any cell's id, so a cell counts as a self-check only
    when its source is one of these, the way nbgrader checksums its locked cells.
    """
    import nbformat

    from .course import ANSWER_KEYS
    digests = set()
    for path in [answer_key] if answer_key else ANSWER_KEYS:
        nb = nbformat.read(path, as_version=4)
        digests.update(source_digest(cell.source) for cell in nb.cells
                       if cell.cell_type == "code" and cell.get("id", "").startswith(SELF_CHECK_PREFIX))
    return frozenset(digests)


def notebook_errors(errors: list) -> list:
    """Errors outside the self-check cells: a failing self-check is scored by the check it mirrors."""
    checks = self_check_digests()
    return [error for error in errors if source_digest(error.source) not in checks]


def no_todo_check(rubric: Rubric, nb) -> CheckResult:
    left = any(TODO_STUB in cell.source for cell in nb.cells if cell.cell_type == "code")
    return check(rubric, "no_todo_left", not left,
                 "TODO left: a `raise NotImplementedError` stub remains" if left else "no TODO stub left")
