"""Results as plain dataclasses that round-trip through JSON (never pickle)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .answers import ShortAnswer
from .execute import CellError
from .rubric import CheckResult
from .verify import Verification

GRADED = "graded"           # the pipeline ran to its end; the checks say how the student did
NOT_GRADABLE = "not gradable"  # the file could not be graded at all (not a notebook, ...)
GRADER_ERROR = "grader error"  # the grader itself failed on this submission; a rerun retries it
EXECUTE_MODE, VERIFY_MODE, SAVED_OUTPUTS_MODE = "execute", "verify", "saved outputs"   # how it was graded
INTERRUPTED = "not graded (interrupted)"  # the run was stopped (Ctrl-C) before this student's grade; a rerun retries it
RETRIED = (GRADER_ERROR, INTERRUPTED)    # not grades: a rerun grades these students again


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
    status: str = GRADED
    reason: str = ""               # why the run stopped early, or why it could not be graded
    verified: bool = True          # False with --no-execute: judged from the notebook's saved outputs
    mode: str = EXECUTE_MODE       # run here (execute), submitted model checked (verify), or saved outputs only
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
        data["checks"] = [CheckResult(**check) for check in data.get("checks", [])]
        data["errors"] = [CellError(**error) for error in data.get("errors", [])]
        data["answers"] = [ShortAnswer(**answer) for answer in data.get("answers", [])]
        if data.get("verification"):
            data["verification"] = Verification.from_dict(data["verification"])
        data["provenance"] = Provenance(**data.get("provenance") or {})
        return cls(**data)
