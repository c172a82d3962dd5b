"""What every way of grading a class shares to grade students into an output folder: the folder's lock, each
job's GPU and share of the CPU threads, and ``grade_into_folder``, which grades one student into the folder.

The local batch (grader.batch), a Slurm task (grader.slurm), the spot audit (grader.audit) and the Gradescope
autograder (grader.gradescope) import it; it imports none of them, nor the pipeline (the grading itself comes
in as a function), so they make no circle.
"""
from __future__ import annotations

import fcntl
import os
import queue
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from .cancel import Cancellation
from .errors import UsageError
from .files import output_fault
from .results import GRADER_ERROR, GradeResult

if TYPE_CHECKING:
    from .report import OutputFolder
    from .rubric import Rubric
    from .submissions import Submission

LOCK_FILE = "lock"


def threads_per_job(jobs: int) -> int:
    """Each parallel job's share of the CPUs, so that N jobs do not each start a thread per core."""
    return max(1, (os.cpu_count() or 1) // jobs)


def visible_gpus(driver_listing: Path = Path("/proc/driver/nvidia/gpus"), dev: Path = Path("/dev")) -> list[str]:
    """GPU ids to hand out, one per job: CUDA_VISIBLE_DEVICES when it is set, else every GPU of the machine.

    Counted without importing torch (some 300 MB of the grader's own memory, and seconds): nvidia-smi's
    list, else the NVIDIA driver's folder per GPU, else the /dev/nvidiaN nodes. Numbered 0.. in PCI order,
    as nvidia-smi numbers them and as the kernels see them (CUDA_DEVICE_ORDER=PCI_BUS_ID).
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [gpu for gpu in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if gpu.strip()]
    listed = nvidia_smi_gpus()
    if listed is not None:
        return listed
    try:
        count = len(list(driver_listing.iterdir())) or len(list(dev.glob("nvidia[0-9]*")))
    except OSError:
        count = len(list(dev.glob("nvidia[0-9]*")))
    return [str(index) for index in range(count)]


def nvidia_smi_gpus() -> list[str] | None:
    """The GPUs' indices as nvidia-smi lists them, or None without a working nvidia-smi."""
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listing.returncode != 0:
        return None
    return [line.strip() for line in listing.stdout.splitlines() if line.strip().isdigit()]


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
    try:
        out.private.mkdir(parents=True, exist_ok=True)
        handle = open(out.private / LOCK_FILE, "w")
    except OSError as error:   # a read-only or full disk: the instructor's message, not a traceback
        raise output_fault(out.private / LOCK_FILE, error) from error
    with handle:   # closing it releases the lock, even on a crash
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another grade run is writing into {out.root}") from None
        yield


def grade_into_folder(submission: Submission, out: OutputFolder, rubric: Rubric, student_fingerprint: str,
                      grade: Callable[[Path], tuple[GradeResult, object]], cancellation: Cancellation,
                      stopped: Callable[[Submission], GradeResult], keep_work: bool = False,
                      where: str = "") -> GradeResult:
    """Grade one student into the output folder: ``grade(workdir)`` (the pipeline, as the caller runs it), then
    the result, its feedback and the executed notebook saved, then the working folder removed (``keep_work``:
    kept). A bug of the grader becomes the student's "grader error" result (``where``: the machine, in its
    reason); a run cancelled before or while the student is graded gives ``stopped(submission)``, not a grade."""
    workdir = out.work / submission.student_id
    try:
        if cancellation.cancelled:   # still queued when the run was interrupted
            result, executed = stopped(submission), None
        else:
            try:
                result, executed = grade(workdir)
            except Exception as error:  # a bug in the grader must not lose the rest of the class
                reason = f"internal grader error{where}: {type(error).__name__}: {error}"
                result, executed = GradeResult.for_submission(submission, status=GRADER_ERROR, reason=reason), None
            if cancellation.cancelled:   # stopped part-way: whatever came out of it is not a grade
                result, executed = stopped(submission), None
        result.fingerprint = student_fingerprint
        out.save(result, executed, rubric)
    finally:
        if not keep_work:
            shutil.rmtree(workdir, ignore_errors=True)
    return result
