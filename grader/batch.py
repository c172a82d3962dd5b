"""Grade a folder of submissions: the grader's Python API.

    from grader import GradingOptions, grade_submissions
    batch = grade_submissions("submissions/", GradingOptions(hidden_set="test.csv"))

Each student's result is written as soon as they are graded. A rerun keeps an earlier result
only when nothing it depends on has changed (``grader.fingerprint``) and regrades the others,
unless ``force`` regrades everyone. One run at a time writes into an output folder (a lock).

``jobs`` notebooks run at once, each in its own kernel with its share of the CPU threads; with
several GPUs they are handed round, one per job when there are enough.

Ctrl-C (or SIGTERM) stops the run: no student starts, the running kernels and verifiers are stopped,
those students are saved as not graded (a rerun grades them), the gradebook is written, and
``GradingInterrupted`` (a KeyboardInterrupt) is raised.

A machine fault of the output folder (a full disk, a read-only folder) stops the run as well: the
gradebook is rewritten from the results on disk, where it can be, and ``OutputUnwritable`` is raised.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tqdm.auto import tqdm

from .course import ANSWER_KEY
from .cancel import Cancellation, GradingInterrupted, cancel_on_signals
from .audit import run_audit, write_class_review
from .class_report import write_class_report_after_grading
from .errors import NoSubmissions, OutputUnwritable, UsageError
from .fingerprint import file_digest, submission_fingerprint
from .hidden import load_hidden_set, write_hidden_set
from .integrity import ClassReview
from .options import GradingOptions, graded_settings, measures_models, validate
from .pipeline import INTERRUPTED_REASON, course_base_model, grade_submission
from .files import kept_seed
from .report import OutputFolder
from .results import GRADER_ERROR, INTERRUPTED, RETRIED, GradeResult, Mode
from .run_folder import grade_into_folder, job_environment, job_tokens, output_folder_lock
from .sandbox import SandboxPlan, bubblewrap_flags, plan_sandbox
from .submissions import Submission, discover
from .verify_mode import resolve_base_model

if TYPE_CHECKING:
    from .rubric import Rubric
    from .slurm import SlurmOptions

HIDDEN_SET_FILE = "hidden-set.json"   # in the output folder's private part, which no kernel sees
HIDDEN_SEED_FILE = "hidden-seed"


@dataclass
class BatchResult:
    results: list[GradeResult] = field(default_factory=list)
    graded_now: list[str] = field(default_factory=list)     # student ids graded in this run
    resumed: list[str] = field(default_factory=list)        # student ids kept from an earlier run
    interrupted: list[str] = field(default_factory=list)    # student ids left not graded by Ctrl-C
    skipped: list[tuple[str, str]] = field(default_factory=list)
    output_dir: Path = Path()
    sandbox: SandboxPlan = SandboxPlan(flags=None)
    slurm_job: str | None = None                            # the array job, when graded on Slurm
    review: ClassReview | None = None                       # the class's integrity review (grader.integrity)
    audit: dict | None = None                               # the spot audit of this run (grader.audit)

    @property
    def passed(self) -> int:
        return sum(result.passed for result in self.results)


def hidden_seed(out: OutputFolder, chosen: int | None) -> int:
    """The hidden sample's seed: ``chosen``, or drawn at random on the folder's first run.

    A seed in public code would let students draw the very sample they are measured on. It is kept
    in the folder's private part, so that later runs into the folder measure on the same sample.
    """
    return kept_seed(out.private / HIDDEN_SEED_FILE, chosen)


def draw_hidden_set(out: OutputFolder, options: GradingOptions) -> Path:
    rows = load_hidden_set(options.hidden_set, options.hidden_size, hidden_seed(out, options.hidden_seed))
    return write_hidden_set(rows, out.private / HIDDEN_SET_FILE)


def is_current(earlier: GradeResult | None, fingerprint_now: str) -> bool:
    """Whether an earlier result still stands: a grade, made from the same notebook with the same settings."""
    return earlier is not None and earlier.status not in RETRIED and earlier.fingerprint == fingerprint_now


def resume(batch: BatchResult, out: OutputFolder, submissions: list[Submission], fingerprints: dict[str, str],
           force: bool) -> list[Submission]:
    """Keep in ``batch`` the earlier results that still stand; returns the submissions to grade."""
    pending = []
    for submission in submissions:
        earlier = None if force else out.load_result(submission.student_id)
        if is_current(earlier, fingerprints[submission.student_id]):
            batch.results.append(earlier)
            batch.resumed.append(submission.student_id)
        else:
            pending.append(submission)
    return pending


def not_graded(submission: Submission) -> GradeResult:
    return GradeResult.for_submission(submission, status=INTERRUPTED, reason=INTERRUPTED_REASON)


OUTPUT_FAULT_REASON = ("not graded: the run stopped when the output folder could not be written; "
                       "a rerun grades this student")


def results_on_disk(out: OutputFolder, submissions: list[Submission], fingerprints: dict[str, str]) -> list[GradeResult]:
    """The class as the output folder holds it: each student's saved result when it is current, else a
    retried row saying why there is none, so that nobody is missing from the gradebook silently."""
    rows = []
    for submission in submissions:
        saved = out.load_result(submission.student_id)
        current = saved is not None and saved.fingerprint == fingerprints.get(submission.student_id)
        rows.append(saved if current else
                    GradeResult.for_submission(submission, status=GRADER_ERROR, reason=OUTPUT_FAULT_REASON))
    return rows


def after_output_fault(out: OutputFolder, submissions: list[Submission], fingerprints: dict[str, str],
                       rubric: Rubric) -> str:
    """Rewrite the gradebooks from the results on disk, as far as the machine lets; says how it went."""
    rows = results_on_disk(out, submissions, fingerprints)
    saved = sum(row.reason != OUTPUT_FAULT_REASON for row in rows)
    try:
        out.write_gradebooks(rows, rubric)
    except OutputUnwritable as fault:
        return (f"the gradebook could not be rewritten either ({fault.__cause__ or fault}); once the folder can be "
                f"written, `grade collect {out.root}` rebuilds it from the {saved} result(s) saved, and a rerun "
                "grades the others")
    return (f"the gradebook was rewritten from the {saved} result(s) saved, which a rerun keeps; "
            f"it grades the {len(rows) - saved} other student(s)")


def no_submissions_text(folder: Path, discovery) -> str:
    text = (f"no notebook to grade in {folder}: it holds no .ipynb file, no student folder with one, "
            "and no unzipped Canvas download")
    if discovery.skipped:
        path, reason = discovery.skipped[0]
        text += f" ({len(discovery.skipped)} entr{'y' if len(discovery.skipped) == 1 else 'ies'} skipped, " \
                f"such as {Path(path).name}: {reason})"
    return text


def grade_submissions(folder: str | Path, options: GradingOptions | None = None,
                      progress: bool = True, slurm: "SlurmOptions | None" = None) -> BatchResult:
    """Grade every submission in ``folder``: here, ``options.jobs`` at a time, or with ``slurm`` as a
    Slurm job array, one task per pending student (``grader.slurm``); the same files come out of both."""
    options = options or GradingOptions()
    validate(options)
    if slurm is not None and options.audit:
        raise UsageError("--audit re-runs notebooks on this machine: run it after the Slurm batch, without --slurm "
                         "(the verify-mode results are resumed, only the audit runs)")
    discovery = discover(Path(folder), output_dir=Path(options.output_dir))
    if not discovery.submissions:
        raise NoSubmissions(no_submissions_text(Path(folder), discovery))
    out = OutputFolder(options.output_dir)
    batch = BatchResult(skipped=discovery.skipped, output_dir=out.root)
    fingerprints: dict[str, str] = {}
    cancellation = Cancellation()
    with output_folder_lock(out):
        try:
            grade_pending(batch, Path(folder), discovery.submissions, fingerprints, out, options, slurm,
                          cancellation, progress)
        except OutputUnwritable as fault:
            aftermath = after_output_fault(out, discovery.submissions, fingerprints, options.rubric)
            raise OutputUnwritable(f"{fault}. The run stopped: {aftermath}") from fault
    batch.results.sort(key=lambda r: r.student_id)
    if cancellation.cancelled:
        raise GradingInterrupted(batch, cancellation.signal_number)
    return batch


def grade_pending(batch: BatchResult, folder: Path, submissions: list[Submission], fingerprints: dict[str, str],
                  out: OutputFolder, options: GradingOptions, slurm: "SlurmOptions | None",
                  cancellation: Cancellation, progress: bool) -> None:
    """Resume what still stands, grade the others into ``batch`` (each saved as it is graded), then write
    the gradebooks. ``fingerprints`` is filled in as soon as they are known."""
    hidden_file, settings = fingerprint_class(submissions, fingerprints, out, options)
    pending = resume(batch, out, submissions, fingerprints, options.force)
    if pending:
        prepare_to_grade(batch, folder, out, options)
    with cancel_on_signals(cancellation), tqdm(total=len(pending), desc="Grading on Slurm" if slurm else "Grading",
                                               unit="notebook", disable=not progress) as bar:
        record = Recorder(batch, out, options.rubric, cancellation, bar)
        if slurm is not None:
            from .slurm import grade_on_slurm
            batch.slurm_job = grade_on_slurm(folder, pending, fingerprints, settings, hidden_file, out,
                                             options, slurm, cancellation, record)
        else:
            grade_here(pending, batch, hidden_file, fingerprints, out, options, cancellation, record)
    if options.audit and batch.results and not cancellation.cancelled:
        with cancel_on_signals(cancellation):
            batch.audit = run_audit(folder, submissions, batch.results, options, out, hidden_file, cancellation,
                                    progress)
    # Recomputed from every result, those resumed included: a flag depends on the whole class.
    batch.review = write_class_review(out, batch.results, options)
    out.write_gradebooks(batch.results, options.rubric, batch.review)
    write_class_report_after_grading(out.root, options.rubric)


def fingerprint_class(submissions: list[Submission], fingerprints: dict[str, str], out: OutputFolder,
                      options: GradingOptions) -> tuple[Path | None, str]:
    """Draw the hidden sample and fingerprint every student's work into ``fingerprints``; returns the hidden
    set's file (None when nothing is measured) and the run's settings."""
    # Drawn even when all could resume: an earlier result stands only if measured on this very sample.
    measures = measures_models(options)
    hidden_file = draw_hidden_set(out, options) if measures else None
    sandboxed = measures and options.sandbox != "off" and bubblewrap_flags()[0] is not None
    settings = graded_settings(options, file_digest(hidden_file) if hidden_file else "", sandboxed)
    fingerprints.update({s.student_id: submission_fingerprint(s, settings, options.mode) for s in submissions})
    return hidden_file, settings


def prepare_to_grade(batch: BatchResult, folder: Path, out: OutputFolder, options: GradingOptions) -> None:
    """What must hold once before anyone is graded: the course's base model (verify mode), the sandbox."""
    if options.mode is Mode.VERIFY:   # a base model that cannot be had stops the run, once
        resolve_base_model(course_base_model(options))
    if measures_models(options):
        # Invisible to every kernel: other students' work and results, their notebooks, the answer
        # key and the hidden set (its file, and the grader's copy under the output folder).
        batch.sandbox = plan_sandbox(options.sandbox, parameters=options.parameters,
                                     hidden=[out.root, folder, ANSWER_KEY.parent, options.hidden_set])


@dataclass
class Recorder:
    """Takes each result as it is graded: into the batch, the gradebooks rewritten (until the run is cancelled:
    then they are written once, at the end), the progress bar moved on."""

    batch: BatchResult
    out: OutputFolder
    rubric: Rubric
    cancellation: Cancellation
    bar: tqdm

    def __call__(self, result: GradeResult) -> None:
        self.batch.results.append(result)
        (self.batch.interrupted if result.status == INTERRUPTED else self.batch.graded_now).append(result.student_id)
        if not self.cancellation.cancelled:
            self.out.write_gradebooks(self.batch.results, self.rubric)
        self.bar.set_postfix_str(f"{result.student_id}: {result.total:g}/{result.max_total:g}")
        self.bar.update()


def grade_here(pending: list[Submission], batch: BatchResult, hidden_file: Path | None, fingerprints: dict[str, str],
               out: OutputFolder, options: GradingOptions, cancellation: Cancellation,
               record: Callable[[GradeResult], None]) -> None:
    """Grade ``pending`` on this machine, ``options.jobs`` at a time, each with a GPU token of its own."""
    tokens = job_tokens(options.jobs)

    def grade_with_a_token(submission: Submission, workdir: Path):
        gpu = tokens.get()
        try:
            return grade_submission(submission, options, hidden_file, workdir, job_environment(gpu, options.jobs),
                                    batch.sandbox, cancellation=cancellation)
        finally:
            tokens.put(gpu)

    def run_one(submission: Submission) -> GradeResult:
        return grade_into_folder(submission, out, options.rubric, fingerprints[submission.student_id],
                                 lambda workdir: grade_with_a_token(submission, workdir), cancellation, not_graded,
                                 keep_work=options.keep_work)

    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        try:
            for future in as_completed([pool.submit(run_one, submission) for submission in pending]):
                record(future.result())
        except BaseException:
            cancellation.cancel()  # leaving early: the pool must not wait for every running notebook
            pool.shutdown(wait=False, cancel_futures=True)   # nor start those still queued
            raise
