"""The grader's records, at the bottom of the house: plain dataclasses that round-trip through JSON (never pickle).

Everything a result holds is defined here, and this module imports nothing else of the grader (a test
pins it): loading a result JSON (the gradebook, a resume, ``grade report``) imports no nbclient, nbformat
or numpy, and the model check inside the sandbox can return its ``Verification`` without them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class Status(StrEnum):
    """How far grading a submission got. A ``StrEnum``: its JSON is the plain string, as before."""

    GRADED = "graded"                         # the pipeline ran to its end; the checks say how the student did
    NOT_GRADABLE = "not gradable"             # the file could not be graded at all (not a notebook, ...)
    GRADER_ERROR = "grader error"             # the grader itself failed on this submission; a rerun retries it
    INTERRUPTED = "not graded (interrupted)"  # the run was stopped (Ctrl-C) before this student's grade; a rerun retries it


class Mode(StrEnum):
    """How a submission was graded: run here (execute), its submitted model checked (verify), or saved outputs only."""

    EXECUTE = "execute"
    VERIFY = "verify"
    SAVED_OUTPUTS = "saved outputs"


GRADED, NOT_GRADABLE, GRADER_ERROR, INTERRUPTED = Status.GRADED, Status.NOT_GRADABLE, Status.GRADER_ERROR, Status.INTERRUPTED
EXECUTE_MODE, VERIFY_MODE, SAVED_OUTPUTS_MODE = Mode.EXECUTE, Mode.VERIFY, Mode.SAVED_OUTPUTS
RETRIED = (GRADER_ERROR, INTERRUPTED)    # not grades: a rerun grades these students again


@dataclass
class Flag:
    """Something an instructor should look at, with the students it concerns and why. A flag never changes points."""

    kind: str                 # what was seen: identical-weights, near-identical-predictions, ... (grader.integrity)
    students: list[str]       # every student it concerns (a pair, a group)
    message: str              # worded for the instructor
    evidence: dict = field(default_factory=dict)   # the figures behind it: digests, agreement, accuracies, seeds
    source: str = "integrity"  # "integrity": the class's review (OUT/integrity.json); "result": a result's own


@dataclass
class CheckResult:
    """One line of the rubric (grader.rubric.CHECKS), scored."""

    name: str
    passed: bool
    points: float
    max_points: float
    message: str              # why, worded for the student


@dataclass
class CellError:
    """The first lines a student needs: which cell failed, what it said, and where."""

    cell_number: int      # 1-based, as the student counts the cells of their notebook
    cell_id: str
    source: str
    ename: str
    evalue: str
    traceback: str        # the notebook's own frames; library frames folded (execute.student_traceback)
    section: str = ""     # the headings above the cell: "8. Fine-tuning > Training curves"
    execution_count: int | None = None   # the In [N] of the cell in the notebook's outputs, as Colab shows it

    @property
    def where(self) -> str:
        """The cell as a student finds it in Colab: its section, its id, its In [N]."""
        return cell_location(self.section, self.cell_id, self.cell_number, self.execution_count)


def cell_location(section: str, cell_id: str, number: int, execution_count: int | None = None) -> str:
    """``the cell 'curves' under "8. Fine-tuning > Training curves" (In [22])``; the cell's number when it has
    no id, the section only when the notebook has headings."""
    name = f"the cell {cell_id!r}" if cell_id else f"cell {number}"
    under = f' under "{section}"' if section else ""
    shown = f" (In [{execution_count}])" if execution_count is not None else ""
    return f"{name}{under}{shown}"


@dataclass
class Verification:
    """What the model check (grader.model_check) found in a saved model: whether it loads, its hidden-set metrics,
    whether it reproduces the notebook's predictions."""

    loaded: bool = False
    problem: str | None = None
    hidden_size: int = 0
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    f1: float | None = None
    f1_ci: tuple[float, float] | None = None
    reproduced: bool | None = None
    mismatches: list[str] = field(default_factory=list)
    reviews_per_s: float | None = None
    model_source: str = ""         # verify mode: the zip, folder or Hub commit the model came from
    # The label (0 or 1) the model gives each hidden review, in the hidden set's order: the class's models are
    # compared on these (grader.integrity), never re-run. In JSON, one digit a review ("0110...").
    hidden_predictions: list[int] = field(default_factory=list)
    hidden_set_sha256: str = ""    # the hidden sample they were made on: only models measured on one are compared
    # verify mode: is it a fine-tune of the course's model? (None: not checked)
    base_model_problem: str | None = None
    base_model_checked: bool = False
    base_similarity: dict = field(default_factory=dict)   # cosine similarities to the base, by tensor group
    # verify mode with --rederive: the model's metrics on the student's own test split, re-derived
    test_split_metrics: dict = field(default_factory=dict)
    test_split_problem: str | None = None   # the notebook's test metrics are not what the model measures there
    # The notebook's confidences are P(positive), not the probability of each prediction's label (a negative
    # review's is 1 minus it); the model makes those predictions all the same.
    confidence_is_positive_probability: bool = False
    # The saved folder holds no tokenizer. The model was measured with the course's, but only when that one
    # reproduced the notebook's predictions: it is then the tokenizer the student trained with.
    tokenizer_missing: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["hidden_predictions"] = "".join("1" if label else "0" for label in self.hidden_predictions)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Verification":
        data = dict(data)
        for key in ("accuracy_ci", "f1_ci"):
            data[key] = tuple(data[key]) if data.get(key) else None
        labels = data.get("hidden_predictions") or []
        data["hidden_predictions"] = [int(label) for label in labels if str(label) in ("0", "1")]
        return cls(**data)


@dataclass
class ShortAnswer:
    """A short question's answer (grader.answers): listed for the instructor, given no points."""

    question_id: str
    question: str        # from the answer key, never from the student's notebook
    answered: bool
    words: int
    text: str            # the student's answer, capped


@dataclass
class Provenance:
    """What identifies a student's work across the class; grader.integrity compares it pairwise."""

    notebook_sha256: str = ""      # the notebook file's bytes
    source_sha256: str = ""        # its cells' sources only (grader.integrity.source_digest)
    seed: int | None = None        # the SEED its parameters cell sets
    hub_repository: str = ""       # verify mode: the Hub repository it names, even when it cannot be downloaded
    weights_sha256: dict[str, str] = field(default_factory=dict)   # verify mode: the staged safetensors files


@dataclass
class GradeResult:
    student_id: str
    notebook: str
    display_name: str = ""
    canvas_user_id: str = ""
    status: Status = GRADED
    reason: str = ""               # why the run stopped early, or why it could not be graded
    verified: bool = True          # False with --no-execute: judged from the notebook's saved outputs
    mode: Mode = EXECUTE_MODE      # run here (execute), submitted model checked (verify), or saved outputs only
    checks: list[CheckResult] = field(default_factory=list)
    reported_metrics: dict[str, float] = field(default_factory=dict)
    contract_problems: list[str] = field(default_factory=list)
    verification: Verification | None = None
    disagreement: list[str] = field(default_factory=list)
    errors: list[CellError] = field(default_factory=list)
    run_time_s: float = 0.0
    output_truncated: bool = False
    sandboxed: bool = False        # the notebook (execute mode) or the model check (verify mode) ran confined
    rederivation: str = ""         # verify mode: whether the test metrics were re-measured on the re-derived split
    fingerprint: str = ""          # what the grade depends on (grader.fingerprint); a rerun keeps it only if unchanged
    provenance: Provenance = field(default_factory=Provenance)
    answers: list[ShortAnswer] = field(default_factory=list)   # the short questions: for the instructor, no points

    @classmethod
    def for_submission(cls, submission, **fields) -> "GradeResult":
        return cls(student_id=submission.student_id, notebook=str(submission.notebook),
                   display_name=submission.display_name, canvas_user_id=submission.canvas_user_id, **fields)

    @property
    def total(self) -> float:
        return sum(check.points for check in self.checks)

    @property
    def max_total(self) -> float:
        return sum(check.max_points for check in self.checks)

    @property
    def passed(self) -> bool:
        return self.status == GRADED and bool(self.checks) and all(check.passed for check in self.checks)

    def check(self, name: str) -> CheckResult | None:
        return next((check for check in self.checks if check.name == name), None)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["verification"] = self.verification.to_dict() if self.verification else None   # its compact form
        data.update(total=self.total, max_total=self.max_total, passed=self.passed)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "GradeResult":
        data = {key: value for key, value in data.items() if key not in ("total", "max_total", "passed")}
        data["status"] = Status(data.get("status", GRADED))   # an unknown status: ValueError, an unreadable result
        data["mode"] = Mode(data.get("mode", EXECUTE_MODE))
        data["checks"] = [CheckResult(**check) for check in data.get("checks", [])]
        data["errors"] = [CellError(**error) for error in data.get("errors", [])]
        data["answers"] = [ShortAnswer(**answer) for answer in data.get("answers", [])]
        if data.get("verification"):
            data["verification"] = Verification.from_dict(data["verification"])
        data["provenance"] = Provenance(**data.get("provenance") or {})
        return cls(**data)
