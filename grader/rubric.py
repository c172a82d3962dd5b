"""The rubric: thresholds and points from a small TOML file, and the checks that score a submission.

Every check is scored here, one small function each, in the rubric's order (CHECKS): ``ran_to_end_check``,
``no_todo_left_check``, ``accuracy_check``, ``f1_check``, ``predictions_check``, ``reload_check``. Execute mode
(grader.pipeline) and verify mode (grader.verify_mode, through the pipeline) score the saved model's measurement
(a ``Verification``) with ``score``; saved-outputs mode (grader.saved_outputs) has only the notebook's own
self-check outputs and scores the four model checks from them with ``score_saved_outputs``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .results import CheckResult, GradeResult, Verification

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


# The checks, in the rubric's order ------------------------------------------------------------------
MESSAGE_CHARS = 400   # of an error's message in a check's: a self-check's says what to fix, in a sentence or two
# saved-outputs mode: the answer key's self-check cell whose saved output ("OK: ...") stands for each model check
SELF_CHECK_CELLS = {"accuracy": "check-accuracy", "f1": "check-f1", "predictions": "check-predictions",
                    "reload": "check-reload"}


def check(rubric: Rubric, name: str, passed: bool, message: str) -> CheckResult:
    max_points = rubric.points[name]
    return CheckResult(name, passed, max_points if passed else 0.0, max_points, message)


def ran_to_end_check(rubric: Rubric, ran: bool, message: str) -> CheckResult:
    """``ran``, ``message``: what the mode found (executed_to_end, saved_outputs_ran, submitted.ran_in_order)."""
    return check(rubric, "ran_to_end", ran, message)


def executed_to_end(result: GradeResult, execution, structure: str | None = None) -> tuple[bool, str]:
    """Execute mode's ran_to_end: the kernel ran every cell (``execution``: an execute.Execution), no cell outside
    the self-checks failed, and the notebook is the course's. ``structure``: why the submitted notebook is not the
    course's (identity.notebook_problem), or None."""
    if not execution.completed:
        return False, result.reason
    failures = notebook_errors(result.errors)
    if failures:
        first = failures[0]
        return False, f"{first.where} raised {first.ename}: {first.evalue[:MESSAGE_CHARS]}"
    if structure:
        return False, structure
    return True, "every cell ran without errors"


def saved_outputs_ran(failures: int, unexecuted: int, structure: str | None) -> tuple[bool, str]:
    """Saved-outputs mode's ran_to_end: no error in the saved outputs, no cell left unrun, the course's notebook."""
    if not failures and not unexecuted and not structure:
        return True, "the saved outputs show every cell run without errors"
    if not failures and not unexecuted:
        return False, structure
    return False, f"the saved notebook has {failures} error(s) and {unexecuted} cell(s) never run"


def no_todo_left_check(rubric: Rubric, nb) -> CheckResult:
    left = any(TODO_STUB in cell.source for cell in nb.cells if cell.cell_type == "code")
    return check(rubric, "no_todo_left", not left,
                 "TODO left: a `raise NotImplementedError` stub remains" if left else "no TODO stub left")


def metric_check(rubric: Rubric, name: str, measured: float | None, ci, problem: str | None) -> CheckResult:
    threshold = getattr(rubric, name)
    if measured is None:
        return check(rubric, name, False, f"not measured: {problem or 'no saved model'}")
    interval = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    verdict = ">=" if measured >= threshold else "<"
    return check(rubric, name, measured >= threshold,
                 f"hidden-set {name} {measured:.3f}{interval} {verdict} {threshold:.2f}")


def accuracy_check(rubric: Rubric, verification: Verification) -> CheckResult:
    return metric_check(rubric, "accuracy", verification.accuracy, verification.accuracy_ci, verification.problem)


def f1_check(rubric: Rubric, verification: Verification) -> CheckResult:
    return metric_check(rubric, "f1", verification.f1, verification.f1_ci, verification.problem)


def predictions_mistake(predictions, verification: Verification) -> str | None:
    """The way the predictions are written wrong, in words, when the saved model makes them all the same:
    labels given as ids, confidences given as P(positive)."""
    ids = any(p.label_was_id for p in predictions)
    positive = verification.confidence_is_positive_probability
    if not (ids or positive):
        return None
    wrong = " and ".join(part for part, found in (("the labels are ids (0/1), not the names 'negative' and "
                                                   "'positive'", ids),
                                                  ("the confidences are P(positive), not the probability of "
                                                   "each predicted label", positive)) if found)
    return (f"{wrong}: give each label's name (model.config.id2label[label_id]) and, as its confidence, the "
            "probability of that label (for a negative review, 1 - P(positive)). Your saved model does make these "
            "predictions")


def predictions_check(rubric: Rubric, contract, verification: Verification) -> CheckResult:
    """``contract``: the notebook's contract (contract.Contract, or verify mode's submitted.SubmittedContract)."""
    predictions = contract.predictions
    if len(predictions) < rubric.min_predictions:
        return check(rubric, "predictions", False,
                     f"{len(predictions)} valid predictions; at least {rubric.min_predictions} are needed")
    # Points only for what the model did: predictions typed by hand earn nothing.
    if not verification.loaded:
        return check(rubric, "predictions", False, "no saved model could make these predictions: "
                     + (verification.problem or "the saved model did not load"))
    if not verification.reproduced:
        return check(rubric, "predictions", False, "the saved model does not make these predictions: "
                     + "; ".join(verification.mismatches[:3]))
    mistake = predictions_mistake(predictions, verification)
    if mistake:
        return check(rubric, "predictions", False, mistake)
    if not all(0.5 <= p.confidence <= 1.0 for p in predictions):
        return check(rubric, "predictions", False, "a confidence lies outside [0.5, 1]: use the softmax probability")
    if len({p.label for p in predictions}) < 2:
        return check(rubric, "predictions", False, "every prediction has the same label; include both sentiments")
    return check(rubric, "predictions", True,
                 f"{len(predictions)} predictions with confidences, both labels, made by the saved model")


def reload_check(rubric: Rubric, verification: Verification) -> CheckResult:
    from .model_check.refusals import NO_TOKENIZER   # the model check's own words; imported here, not by every reader of rubrics

    if not verification.loaded:
        return check(rubric, "reload", False, verification.problem or "the saved model did not load")
    if verification.reproduced is None:
        return check(rubric, "reload", False, "the model loads, but there were no predictions to reproduce")
    if not verification.reproduced:
        return check(rubric, "reload", False, "the saved model does not reproduce the predictions: "
                     + "; ".join(verification.mismatches[:3]))
    if verification.tokenizer_missing:
        return check(rubric, "reload", False, NO_TOKENIZER + ". The grader measured the model with the course's "
                     "tokenizer, which reproduces your predictions, but a saved model must load with its own")
    if verification.base_model_problem:
        return check(rubric, "reload", False, verification.base_model_problem)
    if verification.test_split_problem:
        return check(rubric, "reload", False, verification.test_split_problem)
    return check(rubric, "reload", True, "the saved model loads and reproduces every prediction"
                 + (", and is a fine-tune of the course's model" if verification.base_model_checked else ""))


def saved_self_check(rubric: Rubric, name: str, cell_id: str, stdout: str | None) -> CheckResult:
    """Saved-outputs mode's score for a model check: what the self-check cell's saved output says (unverified).
    ``stdout``: that cell's saved standard output, None when the notebook has no such cell."""
    passed = stdout is not None and stdout.lstrip().startswith("OK")
    message = "the saved self-check output says OK (unverified)" if passed else \
        f"the saved output of self-check {cell_id!r} does not say OK"
    return check(rubric, name, passed, message)


def score(result: GradeResult, nb, ran: tuple[bool, str], contract, verification: Verification,
          rubric: Rubric) -> None:
    """Execute and verify mode: the six checks on the saved model's measurement, and where the notebook's own
    test figures disagree with it."""
    result.checks = [
        ran_to_end_check(rubric, *ran),
        no_todo_left_check(rubric, nb),
        accuracy_check(rubric, verification),
        f1_check(rubric, verification),
        predictions_check(rubric, contract, verification),
        reload_check(rubric, verification),
    ]
    result.disagreement.extend(disagreements(contract.test_metrics, verification))


def score_saved_outputs(result: GradeResult, nb, ran: tuple[bool, str], self_check_stdout: dict[str, str | None],
                        rubric: Rubric) -> None:
    """Saved-outputs mode: ``self_check_stdout``: each self-check cell's saved standard output, by cell id."""
    result.checks = [ran_to_end_check(rubric, *ran), no_todo_left_check(rubric, nb)]
    result.checks += [saved_self_check(rubric, name, cell_id, self_check_stdout.get(cell_id))
                      for name, cell_id in SELF_CHECK_CELLS.items()]


def disagreements(reported_metrics: dict, verification: Verification) -> list[str]:
    """The notebook's own test figures that lie beyond noise from the saved model's, in words."""
    found = []
    for name in ("accuracy", "f1"):
        reported, measured = reported_metrics.get(name), getattr(verification, name)
        if disagrees(reported, measured, verification.hidden_size):
            found.append(f"the notebook reports test {name} {reported:.3f}, the saved model measures {measured:.3f}")
    return found
