"""Scale-out: grading one student is a command any scheduler can run, and Slurm runs a class as a job array.

    grade SUBMISSIONS -o OUT --slurm [...]   the batch submits one array task per pending student, waits,
                                             and writes the same gradebook, Canvas CSV and feedback as a local run
    grade one NOTEBOOK -o OUT                grade one student of the run prepared in OUT (what a task runs;
    grade one --index N -o OUT               or the N-th task of that run)
    grade collect OUT                        rebuild the gradebooks from OUT/results

The submitting process does what must happen once: it discovers the class, draws the hidden sample
into OUT/.grader (so every task measures on the same one), works out who is pending (resume,
``--force``), and writes the run to OUT/.grader/run.json: the options, the fingerprint settings and
the tasks. Each task (``grade_one``) runs the very pipeline of a local run, sandbox included, and
writes its student's result atomically; it never writes the gradebooks.

The submitter watches two things, never ``sacct`` (a cluster without accounting has none): the
result files, and ``squeue``. A task gone from squeue without a current result was killed (time
limit, memory, node failure, scancel): after a grace period (a shared file system may show the file
late) it becomes that student's "grader error" result with the reason, which a rerun retries.
Ctrl-C cancels the array (scancel), and the students not graded are listed as such.

Plain ``sbatch`` rather than submitit: each task runs ``grade one``, the same command that any other
scheduler runs (no pickled call to unpickle on the node), and without accounting submitit cannot
see a killed task anyway, so the grader would watch squeue and the result files itself regardless.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .audit import write_class_review
from .course import ANSWER_KEY
from .cancel import Cancellation, cancel_on_signals
from .class_report import saved_rubric, write_class_report_after_grading
from .errors import GraderError, UsageError
from .fingerprint import submission_fingerprint
from .options import GradingOptions, measures_models, options_from_dict, options_to_dict
from .pipeline import INTERRUPTED_REASON, grade_submission
from .report import OutputFolder, write_atomic
from .results import GRADER_ERROR, INTERRUPTED, GradeResult
from .rubric import Rubric
from .run_folder import grade_into_folder, job_environment, output_folder_lock
from .sandbox import SandboxPlan, plan_sandbox
from .submissions import Submission, discover

RUN_FILE = "run.json"           # in OUT/.grader: the run that tasks belong to
SLURM_FOLDER = "slurm"          # in OUT/.grader: each run's sbatch script and task logs
JOB_FILE = "slurm-job"          # in OUT/.grader: the array job of the latest Slurm run
STOPPED_REASON = ("the grading task was stopped by its scheduler (SIGTERM: its time limit, scancel, or a node "
                  "shutdown) before this notebook was graded; a rerun grades it")


class SlurmError(GraderError):
    """Slurm could not be used: sbatch is missing, or it refused the job array."""


class StaleTask(GraderError):
    """A task of an earlier run: the output folder now holds another run, whose tasks it must not grade."""


@dataclass
class SlurmOptions:
    """How each array task asks Slurm for resources, and how the submitter watches the array."""

    partition: str | None = None
    account: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    time_minutes: int | None = None     # None: the notebook's time limit plus the model check's, plus 10 min
    max_running: int | None = None      # at most this many tasks at once (sbatch --array=...%N)
    extra_args: list[str] = field(default_factory=list)   # passed to sbatch as they are
    poll_s: float = 3.0                 # how often squeue and the result files are looked at
    grace_s: float = 30.0               # a task gone from squeue has this long for its result file to show up
    squeue_patience_s: float = 600.0    # squeue failing this long in a row: the array is given up as lost
    submit: bool = True                 # False: write the run's tasks for another scheduler, submit nothing


# --- the run's description, shared by the submitter and each task ------------------------
def write_run(out: OutputFolder, folder: Path, options: GradingOptions, settings: str, hidden_file: Path | None,
              pending: list[Submission], fingerprints: dict[str, str]) -> dict:
    """Describe this run in OUT/.grader/run.json; returns it. A new id, so that tasks of an earlier run stop."""
    absolute = lambda path: str(Path(os.path.abspath(path)))   # noqa: E731: a task may start elsewhere
    stored = options_to_dict(options)
    stored.update({name: absolute(stored[name]) for name in ("output_dir", "hidden_set") if stored[name]})
    run = {"id": secrets.token_hex(8), "submissions": absolute(folder), "options": stored, "settings": settings,
           "hidden_file": absolute(hidden_file) if hidden_file else None,
           "tasks": [{**asdict(s), "notebook": absolute(s.notebook), "model": absolute(s.model) if s.model else None,
                      "fingerprint": fingerprints[s.student_id]} for s in pending]}
    write_atomic(out.private / RUN_FILE, json.dumps(run, indent=1))
    return run


def load_run(out: OutputFolder) -> dict:
    path = out.private / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{out.root} holds no prepared run ({path} is missing): start it with "
                         f"`grade SUBMISSIONS -o {out.root} --slurm` or `--prepare-tasks`") from None
    except ValueError as error:
        raise UsageError(f"{path} is not readable: {error}") from None


def task_submission(task: dict) -> Submission:
    return Submission(student_id=task["student_id"], notebook=Path(task["notebook"]),
                      display_name=task.get("display_name", ""), canvas_user_id=task.get("canvas_user_id", ""),
                      attempt=task.get("attempt", 0), model=Path(task["model"]) if task.get("model") else None)


def find_task(run: dict, notebook: Path) -> tuple[Submission, str]:
    """The student whose notebook this is, as the run's discovery names them, and their fingerprint."""
    wanted = Path(os.path.abspath(notebook))
    for task in run["tasks"]:
        if Path(task["notebook"]) == wanted:
            return task_submission(task), task["fingerprint"]
    found = discover(Path(run["submissions"]), output_dir=Path(run["options"]["output_dir"])).submissions
    for submission in found:   # a student the run did not list as pending
        if Path(os.path.abspath(submission.notebook)) == wanted:
            return submission, submission_fingerprint(submission, run["settings"],
                                                      options_from_dict(run["options"]).mode)
    raise UsageError(f"{notebook} is not a submission of the run in this output folder "
                     f"(its submissions are {run['submissions']})")


def named_task(run: dict, notebook: str | Path | None, index: int | None) -> tuple[Submission, str]:
    """The student a task names (by task index, or by notebook), and their fingerprint."""
    if index is not None:
        if not 0 <= index < len(run["tasks"]):
            raise UsageError(f"task {index} does not exist: the run has {len(run['tasks'])} task(s)")
        task = run["tasks"][index]
        return task_submission(task), task["fingerprint"]
    if notebook is not None:
        return find_task(run, Path(notebook))
    raise UsageError("name a notebook or a task --index")


# --- one task: grade one student into the output folder ----------------------------------
def task_threads() -> int:
    """The CPUs this task was given: Slurm's count, else the ones this process may run on."""
    given = os.environ.get("SLURM_CPUS_PER_TASK")
    if given and given.isdigit():
        return max(1, int(given))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def grade_one(output_dir: str | Path, notebook: str | Path | None = None, index: int | None = None,
              run_id: str | None = None) -> GradeResult:
    """Grade one student of the run prepared in ``output_dir`` (by notebook, or by task index) and save
    the result atomically. The student's problems, and the grader's own, become the saved result."""
    out = OutputFolder(Path(output_dir))
    run = load_run(out)
    if run_id is not None and run["id"] != run_id:
        raise StaleTask(f"this task belongs to run {run_id}, but {out.root} now holds run {run['id']}")
    submission, student_fingerprint = named_task(run, notebook, index)
    options = options_from_dict(run["options"])
    # This task's share of the machine: the verifier's and the kernel's threads follow options.jobs.
    options.jobs = max(1, (os.cpu_count() or 1) // task_threads())
    cancellation = Cancellation()
    # A scheduler stops a task with SIGTERM (Slurm's time limit and scancel, a pod's end), as Ctrl-C does.
    with cancel_on_signals(cancellation):
        return grade_into_folder(submission, out, options.rubric, student_fingerprint,
                                 lambda workdir: grade_in_a_thread(submission, run, out, options, workdir,
                                                                   cancellation),
                                 cancellation, stopped_by_the_scheduler, keep_work=options.keep_work,
                                 where=f" on {socket.gethostname()}")


def grade_in_a_thread(submission: Submission, run: dict, out: OutputFolder, options: GradingOptions,
                      workdir: Path, cancellation: Cancellation) -> tuple[GradeResult, object]:
    """The pipeline, sandbox included, as a local batch runs it: in a thread of its own, because in the main
    thread nbclient takes SIGTERM and SIGINT over while the notebook runs, and a scheduler's stop would read as a
    dead kernel. The main thread stays free to run the signal handlers."""
    hidden = [out.root, Path(run["submissions"]), ANSWER_KEY.parent, options.hidden_set]
    measures = measures_models(options)
    sandbox = plan_sandbox(options.sandbox, parameters=options.parameters, hidden=hidden) \
        if measures else SandboxPlan(flags=None)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(grade_submission, submission, options,
                             Path(run["hidden_file"]) if run["hidden_file"] else None, workdir,
                             job_environment(None, options.jobs), sandbox, cancellation=cancellation)
        while not future.done():
            wait([future], timeout=0.5)
        return future.result()


def stopped_by_the_scheduler(submission: Submission) -> GradeResult:
    return GradeResult.for_submission(submission, status=GRADER_ERROR, reason=STOPPED_REASON)


def current_result(out: OutputFolder, submission: Submission, student_fingerprint: str) -> GradeResult | None:
    """The student's saved result when it was made for this run's notebook and settings, else None."""
    result = out.load_result(submission.student_id)
    return result if result is not None and result.fingerprint == student_fingerprint else None


def collect(output_dir: str | Path, rubric: Rubric | None = None) -> list[GradeResult]:
    """Rebuild the gradebook and the Canvas CSV from the result files in ``output_dir``.

    Students of the prepared run who have no current result are listed as grader errors (not saved:
    their task may still be running), so that nobody is missing from the gradebook silently. The Canvas
    CSV's assignment column is ``rubric``'s, else the prepared run's rubric's, else the course's.
    """
    from .rubric import load_rubric

    out = OutputFolder(Path(output_dir))
    if not out.results.is_dir():
        raise UsageError(f"{out.root} holds no results")
    run = None
    with output_folder_lock(out):
        results = {path.stem: result for path in sorted(out.results.glob("*.json"))
                   if (result := out.load_result(path.stem)) is not None}
        if (out.private / RUN_FILE).is_file():
            run = load_run(out)
            if rubric is None:
                rubric = options_from_dict(run["options"]).rubric
            for task in run["tasks"]:
                submission = task_submission(task)
                if current_result(out, submission, task["fingerprint"]) is None:
                    results[submission.student_id] = GradeResult.for_submission(
                        submission, status=GRADER_ERROR,
                        reason="no result: its task has not finished, or ended without writing one; a rerun grades it")
        ordered = sorted(results.values(), key=lambda r: r.student_id)
        # The class's review, as after a local run: from every result here, with the run's settings if known.
        options = options_from_dict(run["options"]) if run else GradingOptions()
        # the gradebook's Canvas column: the rubric given, else the prepared run's, else the one the class
        # report kept (grader.class_report), else the course's
        out.write_gradebooks(ordered, rubric or saved_rubric(out.private) or load_rubric(),
                             write_class_review(out, ordered, options))
        write_class_report_after_grading(out.root, rubric)
    return ordered


# --- the submitter: a job array, watched until every task has a result -------------------
def sbatch_command(run: dict, out: OutputFolder, options: GradingOptions, slurm: SlurmOptions,
                   log_folder: Path) -> list[str]:
    minutes = slurm.time_minutes or math.ceil((options.time_limit_s + options.verify_time_limit_s) / 60) + 10
    throttle = f"%{slurm.max_running}" if slurm.max_running else ""
    command = ["sbatch", "--parsable", "--job-name=grade", f"--array=0-{len(run['tasks']) - 1}{throttle}",
               f"--output={log_folder}/%a.log", f"--time={minutes}", f"--cpus-per-task={slurm.cpus_per_task}",
               f"--chdir={os.getcwd()}"]
    if slurm.partition:
        command.append(f"--partition={slurm.partition}")
    if slurm.account:
        command.append(f"--account={slurm.account}")
    if slurm.gpus_per_task:
        command.append(f"--gpus-per-task={slurm.gpus_per_task}")
    command += list(slurm.extra_args)
    task = [sys.executable, "-m", "grader.cli", "one", "--index", "$SLURM_ARRAY_TASK_ID", "--run", run["id"],
            "-o", os.path.abspath(out.root)]
    script = "#!/bin/bash\n# one student per array task: grade one, the same command any scheduler runs\nexec " + \
             " ".join(part if part.startswith("$") else shlex.quote(part) for part in task).replace(
                 "$SLURM_ARRAY_TASK_ID", '"$SLURM_ARRAY_TASK_ID"') + "\n"
    write_atomic(log_folder / "task.sh", script)
    return command + [str(log_folder / "task.sh")]


def submit_array(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SlurmError("sbatch is not installed here: --slurm needs a Slurm login node") from None
    except subprocess.TimeoutExpired:
        raise SlurmError("sbatch did not answer within 2 minutes") from None
    if done.returncode != 0:
        raise SlurmError(f"sbatch refused the job array: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def tasks_in_queue(job_id: str) -> set[int] | None:
    """The array's task indices that squeue still lists (pending, running, completing); None when squeue fails."""
    try:
        done = subprocess.run(["squeue", "--noheader", "--array", f"--jobs={job_id}", "--format=%i"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        # Slurm forgets a finished job after MinJobAge: then none of its tasks is left.
        return set() if "Invalid job id" in done.stderr else None
    indices = set()
    for line in done.stdout.split():
        match = re.fullmatch(rf"{re.escape(job_id)}_(\d+)", line.strip())
        if match:
            indices.add(int(match[1]))
        elif re.fullmatch(rf"{re.escape(job_id)}_\[.*\]", line.strip()):   # not yet split: every index
            return None
    return indices


def cancel_array(job_id: str) -> None:
    try:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass


def log_tail(path: Path) -> str:
    """The task log's last line, where Slurm writes why it killed a task (TIME LIMIT, ...)."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        return ""
    killed = [line for line in lines if "slurmstepd" in line or "CANCELLED" in line or "Killed" in line]
    return (killed or lines or [""])[-1][:300]


def lost_result(submission: Submission, job_id: str, index: int, log: Path) -> GradeResult:
    tail = log_tail(log)
    reason = (f"the Slurm task {job_id}_{index} ended without a result (killed: its time limit, memory, a node "
              f"failure or scancel); a rerun grades it" + (f". Its log ends: {tail}" if tail else ""))
    return GradeResult.for_submission(submission, status=GRADER_ERROR, reason=reason)


def set_aside(out: OutputFolder, pending: list[Submission]) -> Path:
    """Move the pending students' earlier results aside: a result file then means this run's task wrote it."""
    aside = out.private / "set-aside"
    aside.mkdir(parents=True, exist_ok=True)
    for submission in pending:
        path = out.result_path(submission.student_id)
        if path.exists():
            os.replace(path, aside / path.name)
    return aside


def restore(out: OutputFolder, aside: Path) -> None:
    for path in aside.glob("*.json"):
        os.replace(path, out.result_path(path.stem))


def cancel_earlier_array(out: OutputFolder) -> None:
    """The array of an earlier submitter that died (we hold the folder's lock, so it is gone) must not
    go on writing into the folder."""
    path = out.private / JOB_FILE
    if path.is_file():
        job_id = path.read_text(encoding="utf-8").strip()
        if job_id and tasks_in_queue(job_id):
            cancel_array(job_id)


def grade_on_slurm(folder: Path, pending: list[Submission], fingerprints: dict[str, str], settings: str,
                   hidden_file: Path | None, out: OutputFolder, options: GradingOptions, slurm: SlurmOptions,
                   cancellation: Cancellation, record: Callable[[GradeResult], None]) -> str | None:
    """Grade ``pending`` as a job array; ``record`` gets each result as it arrives, saved. Returns the job id."""
    cancel_earlier_array(out)
    run = write_run(out, folder, options, settings, hidden_file, pending, fingerprints)
    if not slurm.submit or not pending:
        return None
    log_folder = out.private / SLURM_FOLDER / run["id"]
    log_folder.mkdir(parents=True, exist_ok=True)
    job_id = submit_run(out, pending, sbatch_command(run, out, options, slurm, log_folder))
    watch = ArrayWatch(job_id, dict(enumerate(pending)), fingerprints, out, options.rubric, slurm, log_folder, record)
    try:
        while watch.outstanding and not cancellation.cancelled and watch.poll():
            pause(slurm.poll_s, cancellation)
    except BaseException:
        cancellation.cancel()
        raise
    finally:
        if cancellation.cancelled and watch.outstanding:
            watch.cancel()
    return job_id


def submit_run(out: OutputFolder, pending: list[Submission], command: list[str]) -> str:
    """Submit the array, the pending students' earlier results set aside meanwhile (put back if sbatch fails)."""
    aside = set_aside(out, pending)
    try:
        job_id = submit_array(command)
    except BaseException:
        restore(out, aside)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    write_atomic(out.private / JOB_FILE, job_id)
    return job_id


def pause(seconds: float, cancellation: Cancellation) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not cancellation.cancelled:
        time.sleep(0.1)


@dataclass
class ArrayWatch:
    """The submitter's view of a job array: the tasks without a result yet (by task index), and since when each
    has been gone from squeue. Each result it takes is recorded; those it makes itself are saved first."""

    job_id: str
    outstanding: dict[int, Submission]
    fingerprints: dict[str, str]
    out: OutputFolder
    rubric: Rubric
    slurm: SlurmOptions
    log_folder: Path
    record: Callable[[GradeResult], None]
    gone_since: dict[int, float] = field(default_factory=dict)
    squeue_failing_since: float | None = None

    def finish(self, index: int, result: GradeResult, save: bool) -> None:
        submission = self.outstanding.pop(index)
        if save:
            result.fingerprint = self.fingerprints[submission.student_id]
            self.out.save(result, None, self.rubric)
        self.record(result)

    def poll(self) -> bool:
        """Take the results the tasks wrote, then look at squeue; False once there is nothing left to watch."""
        for index, submission in list(self.outstanding.items()):
            result = current_result(self.out, submission, self.fingerprints[submission.student_id])
            if result is not None:
                self.finish(index, result, save=False)
        if not self.outstanding:
            return False
        queued, now = tasks_in_queue(self.job_id), time.monotonic()
        if queued is None:
            return self.squeue_failed(now)
        self.squeue_failing_since = None
        self.take_lost_tasks(queued, now)
        return True

    def squeue_failed(self, now: float) -> bool:
        """squeue failing this long in a row: the array is given up, its tasks' students grader errors."""
        self.squeue_failing_since = self.squeue_failing_since or now
        if now - self.squeue_failing_since <= self.slurm.squeue_patience_s:
            return True
        cancel_array(self.job_id)
        for index, submission in list(self.outstanding.items()):
            self.finish(index, GradeResult.for_submission(
                submission, status=GRADER_ERROR,
                reason=f"squeue failed for {self.slurm.squeue_patience_s:.0f} s: the grader lost sight of "
                       f"Slurm task {self.job_id}_{index}; a rerun grades it"), save=True)
        return False

    def take_lost_tasks(self, queued: set[int], now: float) -> None:
        """A task gone from squeue for the grace period without a result was killed: its student's grader error."""
        for index, submission in list(self.outstanding.items()):
            if index in queued:
                self.gone_since.pop(index, None)
            elif now - self.gone_since.setdefault(index, now) >= self.slurm.grace_s:
                self.finish(index, lost_result(submission, self.job_id, index, self.log_folder / f"{index}.log"),
                            save=True)

    def cancel(self) -> None:
        """Cancel the array and wait (a minute at most) for its tasks to end; their students are not graded: as in
        a local run, whatever a task wrote once the run was cancelled is not a grade (a kernel that scancel stopped
        reads as dead)."""
        cancel_array(self.job_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and tasks_in_queue(self.job_id) not in (set(), None):
            time.sleep(0.5)
        for index, submission in list(self.outstanding.items()):
            self.finish(index, GradeResult.for_submission(submission, status=INTERRUPTED, reason=INTERRUPTED_REASON),
                        save=True)
