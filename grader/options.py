"""Everything a grading run can be told (``GradingOptions``), with all that belongs to it in one place: the
grading mode, the check of a combination of options, their JSON form (a Slurm run's description) and the part
of them a grade depends on (its fingerprint's settings). A new option is added here, and read where it acts.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import UsageError
from .fingerprint import file_digest, grader_version
from .integrity import IntegritySettings
from .rederive import check_course_data
from .results import Mode
from .rubric import Rubric, load_rubric
from .sandbox import GB, MB, Limits


@dataclass
class GradingOptions:
    """Everything a grading run can be told. The CLI's defaults come from here."""

    output_dir: Path = Path("grade-results")
    hidden_set: Path | None = None        # a CSV (label,title,content); None: the Hub's test split
    hidden_size: int = 500
    hidden_seed: int | None = None        # None: drawn once per output folder, kept private (grader.batch)
    time_limit_s: float = 3600.0          # per notebook, wall clock
    verify_time_limit_s: float = 900.0
    max_output_bytes: int = 20 * MB
    limits: Limits = field(default_factory=Limits)   # memory, processes, file size, disk
    # verify mode: a submitted model's files, in all (DistilBERT's are 268 MB); apart from the notebook's disk
    max_model_bytes: int = 1 * GB
    base_model: str | None = None         # verify mode: the course's base model; None: MODEL_NAME, else the rubric's
    rederive: bool = False                # verify mode: re-measure each model on the student's re-derived test split
    course_data: str | None = None        # ... from this folder's train.csv (else LOCAL_DATA_DIR, else the Hub)
    sandbox: str = "auto"                 # "auto": bubblewrap, or a loud warning without it; "require"; "off"
    max_length: int = 256                 # tokens per review when the grader measures a model
    jobs: int = 1
    parameters: dict = field(default_factory=dict)
    # execute: run each notebook here; verify: check its saved outputs and the model submitted with it, run
    # nothing; saved outputs: judge from the notebook's saved outputs alone
    mode: Mode = Mode.EXECUTE
    force: bool = False                   # regrade students who already have a result
    keep_work: bool = False               # keep each student's working folder (models, checkpoints)
    rubric: Rubric = field(default_factory=load_rubric)
    kernel_name: str = "python3"
    # The class's review after the batch (grader.integrity) and the spot audits of verify mode
    # (grader.audit): neither changes a grade, so neither is in a result's fingerprint.
    integrity: IntegritySettings = field(default_factory=IntegritySettings)
    audit: int = 0                        # verify mode: re-run this many students here, in execute mode
    audit_seed: int | None = None         # None: drawn once per output folder, kept private (grader.audit)
    # The tokenizer the template's tokenize cell loads (a folder or a Hub id; None: the MODEL_NAME parameter,
    # else the course's model). A saved model without its tokenizer is measured with it only when it
    # reproduces the notebook's predictions; the reload check fails either way.
    course_tokenizer: str | None = None

    def __post_init__(self):
        if self.mode not in set(Mode):   # "verify", from JSON or a caller, is Mode.VERIFY
            raise UsageError(f"mode {self.mode!r} is none of {', '.join(repr(str(mode)) for mode in Mode)}")
        self.mode = Mode(self.mode)


def mode_from_flags(verify: bool, no_execute: bool) -> Mode:
    """The CLI's two flags as one mode; both at once is a usage error."""
    if verify and no_execute:
        raise UsageError("--verify checks the submitted model; --no-execute reads saved outputs only: choose one")
    return Mode.VERIFY if verify else Mode.SAVED_OUTPUTS if no_execute else Mode.EXECUTE


def measures_models(options: GradingOptions) -> bool:
    """Whether the run measures models on the hidden set (only the saved-outputs mode runs nothing)."""
    return options.mode is not Mode.SAVED_OUTPUTS


def validate(options: GradingOptions) -> None:
    if options.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if options.time_limit_s <= 0 or options.hidden_size < 1:
        raise UsageError("the time limit and the hidden-set size must be positive")
    if options.hidden_set is not None and not Path(options.hidden_set).is_file():
        raise UsageError(f"the hidden evaluation set {options.hidden_set} does not exist")
    if not (0 < options.integrity.near_identical_agreement <= 1 and 0 <= options.integrity.plausible_accuracy <= 1):
        raise UsageError("--near-identical must lie in (0, 1] and --plausible-accuracy in [0, 1]")
    if options.audit < 0:
        raise UsageError("--audit must be a number of students, 0 or more")
    if options.audit and options.mode is not Mode.VERIFY:
        raise UsageError("--audit re-runs students of a verify-mode batch to check what they submitted: add --verify")
    local = all(options.parameters.get(name) for name in ("MODEL_NAME", "LOCAL_DATA_DIR"))
    if options.audit and options.sandbox != "off" and not local:
        # Otherwise every re-run would fail on the download, and every audited student would be flagged.
        raise UsageError("--audit re-runs notebooks in the sandbox, which has no network: give local copies with "
                         "-p MODEL_NAME=... -p LOCAL_DATA_DIR=... (or --sandbox off)")
    if options.max_model_bytes < 1:
        raise UsageError("--max-model-size must be positive")
    if (options.rederive or options.course_data) and options.mode is not Mode.VERIFY:
        raise UsageError("--rederive and --course-data re-measure submitted models: they go with --verify")
    check_course_data(options.course_data)


# --- the JSON form: a Slurm run's description, shared by the submitter and each task --------------
def options_to_dict(options: GradingOptions) -> dict:
    data = asdict(options)
    return json.loads(json.dumps(data, default=str))   # Paths as text


def options_from_dict(data: dict) -> GradingOptions:
    known = {f.name for f in fields(GradingOptions)}
    data = dict(data)   # the caller's stays as it was
    if "mode" not in data:   # a run prepared by an older grader: two booleans
        data["mode"] = (Mode.VERIFY if data.get("verify_submitted") else
                        Mode.EXECUTE if data.get("execute", True) else Mode.SAVED_OUTPUTS)
    data = {key: value for key, value in data.items() if key in known}
    data["rubric"] = Rubric(**data["rubric"])
    data["limits"] = Limits(**data["limits"])
    if "integrity" in data:   # a run prepared by an older grader has none: the defaults
        data["integrity"] = IntegritySettings(**data["integrity"])
    for name in ("output_dir", "hidden_set"):
        if data.get(name) is not None:
            data[name] = Path(data[name])
    return GradingOptions(**data)


# --- what a grade depends on ----------------------------------------------------------------------
def graded_settings(options: GradingOptions, hidden_set_digest: str, sandboxed: bool) -> str:
    """Everything in a batch's options that can change a grade, as canonical JSON. ``sandboxed``: whether
    notebooks run confined, so that a grade made without the sandbox does not outlive its installation."""
    return json.dumps({
        "sandboxed": sandboxed,
        "rubric": asdict(options.rubric), "hidden_set": hidden_set_digest, "parameters": options.parameters,
        "mode": str(options.mode),
        "time_limit_s": float(options.time_limit_s),   # --timeout 150 is the API's 150
        "verify_time_limit_s": float(options.verify_time_limit_s), "max_output_bytes": options.max_output_bytes,
        "limits": asdict(options.limits), "max_length": options.max_length, "kernel_name": options.kernel_name,
        "max_model_bytes": options.max_model_bytes, "base_model": options.base_model, "rederive": options.rederive,
        "course_data": options.course_data,
        # the locked cells a notebook must hold come from the rubric's answer key
        "answer_key": file_digest(options.rubric.answer_key_path),
        "grader": grader_version(),
    }, sort_keys=True, default=str)
