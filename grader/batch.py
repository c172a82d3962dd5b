"""Grade a folder of submissions: the grader's Python API.

    from grader import GradingOptions, grade_submissions
    batch = grade_submissions("submissions/", GradingOptions(hidden_set="test.csv"))

Each student's result is written as soon as they are graded. A rerun keeps an earlier result
only when nothing it depends on has changed (``grader.fingerprint``) and regrades the others,
unless ``force`` regrades everyone. One run at a time writes into an output folder (a lock).

``jobs`` notebooks run at once, each in its own kernel with its share of the CPU threads; with
several GPUs they are handed round, one per job when there are enough.

Ctrl-C stops the run: no student starts, the running kernels and verifiers are stopped, those
students are saved as not graded (a rerun grades them), the gradebook is written, and
``GradingInterrupted`` (a KeyboardInterrupt) is raised.
"""
from __future__ import annotations

import fcntl
import os
import queue
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tqdm.auto import tqdm

from .course import ANSWER_KEY
from .cancel import Cancellation, GradingInterrupted, cancel_on_sigint
from .class_report import write_class_report_after_grading
from .errors import ConfigError, UsageError
from .fingerprint import file_digest, fingerprint, run_settings
from .hidden import load_hidden_set, write_hidden_set
from .pipeline import INTERRUPTED_REASON, GradingOptions, grade_submission, threads_per_job
from .report import OutputFolder, write_atomic
from .results import GRADER_ERROR, INTERRUPTED, RETRIED, GradeResult
from .sandbox import SandboxPlan, bubblewrap_flags, plan_sandbox
from .submissions import Submission, discover

if TYPE_CHECKING:
    from .slurm import SlurmOptions

HIDDEN_SET_FILE = "hidden-set.json"   # in the output folder's private part, which no kernel sees
HIDDEN_SEED_FILE = "hidden-seed"
LOCK_FILE = "lock"


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

    @property
    def passed(self) -> int:
        return sum(result.passed for result in self.results)


def visible_gpus() -> list[str]:
    """GPU ids to hand out, one per job, honouring CUDA_VISIBLE_DEVICES when it is set."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [gpu for gpu in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if gpu.strip()]
    try:
        import torch
        return [str(index) for index in range(torch.cuda.device_count())]
    except ImportError:
        return []


def validate_options(options: GradingOptions) -> None:
    if options.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if options.time_limit_s <= 0 or options.hidden_size < 1:
        raise UsageError("the time limit and the hidden-set size must be positive")
    if options.verify_submitted and not options.execute:
        raise UsageError("--verify checks the submitted model; --no-execute reads saved outputs only: choose one")
    if options.hidden_set is not None and not Path(options.hidden_set).is_file():
        raise UsageError(f"the hidden evaluation set {options.hidden_set} does not exist")


def job_tokens(jobs: int) -> queue.Queue:
    """One token per job, held while it grades: the GPU it runs on, or None to leave the GPUs as they are.

    With several jobs and GPUs, the GPUs are handed round: one per job when there are enough.
    """
    gpus = visible_gpus() if jobs > 1 else []
    tokens: queue.Queue[str | None] = queue.Queue()
    for index in range(jobs):
        tokens.put(gpus[index % len(gpus)] if gpus else None)
    return tokens


def job_environment(gpu: str | None, jobs: int) -> dict:
    """A job's kernel and verifier environment: its GPU, and its share of the CPU threads (PyTorch and
    NumPy start a thread per core otherwise, and ``jobs`` kernels would fight over every core)."""
    threads = str(threads_per_job(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


@contextmanager
def output_folder_lock(out: OutputFolder) -> Iterator[None]:
    """Held for a whole run: two runs writing into one folder would interleave their results."""
    out.private.mkdir(parents=True, exist_ok=True)
    with open(out.private / LOCK_FILE, "w") as handle:   # closing it releases the lock, even on a crash
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another grade run is writing into {out.root}") from None
        yield


def hidden_seed(out: OutputFolder, chosen: int | None) -> int:
    """The hidden sample's seed: ``chosen``, or drawn at random on the folder's first run.

    A seed in public code would let students draw the very sample they are measured on. It is kept
    in the folder's private part, so that later runs into the folder measure on the same sample.
    """
    path = out.private / HIDDEN_SEED_FILE
    if chosen is None and path.is_file():
        try:
            return int(path.read_text(encoding="utf-8"))
        except ValueError:
            raise ConfigError(f"{path} does not hold a seed; delete it to draw a new one") from None
    seed = secrets.randbits(32) if chosen is None else chosen
    write_atomic(path, str(seed))
    return seed


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


def grade_submissions(folder: str | Path, options: GradingOptions | None = None,
                      progress: bool = True, slurm: "SlurmOptions | None" = None) -> BatchResult:
    """Grade every submission in ``folder``: here, ``options.jobs`` at a time, or with ``slurm`` as a
    Slurm job array, one task per pending student (``grader.slurm``); the same files come out of both."""
    options = options or GradingOptions()
    validate_options(options)
    discovery = discover(Path(folder))
    out = OutputFolder(options.output_dir)
    batch = BatchResult(skipped=discovery.skipped, output_dir=out.root)
    with output_folder_lock(out):
        # Drawn even when all could resume: an earlier result stands only if measured on this very sample.
        measures = options.execute or options.verify_submitted   # a model is measured on the hidden set
        hidden_file = draw_hidden_set(out, options) if measures and discovery.submissions else None
        sandboxed = measures and options.sandbox != "off" and bubblewrap_flags()[0] is not None
        settings = run_settings(options, file_digest(hidden_file) if hidden_file else "", sandboxed)
        fingerprints = {s.student_id: fingerprint(s.notebook, settings, s.model if options.verify_submitted else None)
                        for s in discovery.submissions}
        pending = resume(batch, out, discovery.submissions, fingerprints, options.force)

        if pending and measures:
            # Invisible to every kernel: other students' work and results, their notebooks, the answer
            # key and the hidden set (its file, and the grader's copy under the output folder).
            batch.sandbox = plan_sandbox(options.sandbox, parameters=options.parameters,
                                         hidden=[out.root, Path(folder), ANSWER_KEY.parent, options.hidden_set])

        tokens = job_tokens(options.jobs)
        cancellation = Cancellation()

        def run_one(submission: Submission) -> GradeResult:
            if cancellation.cancelled:  # still queued when the run was interrupted
                result, executed = not_graded(submission), None
            else:
                result, executed = grade_with_a_token(submission)
            result.fingerprint = fingerprints[submission.student_id]
            out.save(result, executed, options.rubric)
            return result

        def grade_with_a_token(submission: Submission):
            gpu = tokens.get()
            workdir = out.work / submission.student_id
            try:
                result, executed = grade_submission(submission, options, hidden_file, workdir,
                                                    job_environment(gpu, options.jobs), batch.sandbox,
                                                    cancellation=cancellation)
            except Exception as error:  # a bug in the grader must not lose the rest of the class
                reason = f"internal grader error: {type(error).__name__}: {error}"
                result, executed = GradeResult.for_submission(submission, status=GRADER_ERROR, reason=reason), None
            finally:
                tokens.put(gpu)
            if cancellation.cancelled:  # stopped part-way: whatever came out of it is not a grade
                result, executed = not_graded(submission), None
            if not options.keep_work:
                shutil.rmtree(workdir, ignore_errors=True)
            return result, executed

        def record(result: GradeResult) -> None:
            batch.results.append(result)
            (batch.interrupted if result.status == INTERRUPTED else batch.graded_now).append(result.student_id)
            if not cancellation.cancelled:  # after Ctrl-C, written once, below
                out.write_gradebooks(batch.results, options.rubric)
            bar.set_postfix_str(f"{result.student_id}: {result.total:g}/{result.max_total:g}")
            bar.update()

        if slurm is not None:
            from .slurm import grade_on_slurm
            with cancel_on_sigint(cancellation), \
                    tqdm(total=len(pending), desc="Grading on Slurm", unit="notebook", disable=not progress) as bar:
                batch.slurm_job = grade_on_slurm(Path(folder), pending, fingerprints, settings, hidden_file, out,
                                                 options, slurm, cancellation, record)
        else:
            with cancel_on_sigint(cancellation), ThreadPoolExecutor(max_workers=options.jobs) as pool, \
                    tqdm(total=len(pending), desc="Grading", unit="notebook", disable=not progress) as bar:
                try:
                    for future in as_completed([pool.submit(run_one, submission) for submission in pending]):
                        record(future.result())
                except BaseException:
                    cancellation.cancel()  # leaving early: the pool must not wait for every running notebook
                    raise
        out.write_gradebooks(batch.results, options.rubric)
        write_class_report_after_grading(out.root, options.rubric)
    batch.results.sort(key=lambda r: r.student_id)
    if cancellation.cancelled:
        raise GradingInterrupted(batch)
    return batch
