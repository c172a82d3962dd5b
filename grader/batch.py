"""Grade a folder of submissions: the grader's Python API.

    from grader import GradingOptions, grade_submissions
    batch = grade_submissions("submissions/", GradingOptions(hidden_set="test.csv"))

Each student's result is written as soon as they are graded; a rerun skips the students that
already have a result (resume), unless ``force``. Parallel jobs run one kernel each; with
several GPUs, each job is given one of them.
"""
from __future__ import annotations

import os
import queue
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .build import ANSWER_KEY
from .errors import UsageError
from .hidden import load_hidden_set, write_hidden_set
from .pipeline import GradingOptions, grade_submission
from .report import OutputFolder
from .results import GRADER_ERROR, GradeResult
from .sandbox import SandboxPlan, plan_sandbox
from .submissions import Submission, discover


@dataclass
class BatchResult:
    results: list[GradeResult] = field(default_factory=list)
    graded_now: list[str] = field(default_factory=list)     # student ids graded in this run
    resumed: list[str] = field(default_factory=list)        # student ids kept from an earlier run
    skipped: list[tuple[str, str]] = field(default_factory=list)
    output_dir: Path = Path()
    sandbox: SandboxPlan = SandboxPlan(flags=None)

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
    if options.hidden_set is not None and not Path(options.hidden_set).is_file():
        raise UsageError(f"the hidden evaluation set {options.hidden_set} does not exist")


def grade_submissions(folder: str | Path, options: GradingOptions | None = None,
                      progress: bool = True) -> BatchResult:
    options = options or GradingOptions()
    validate_options(options)
    discovery = discover(Path(folder))
    out = OutputFolder(options.output_dir)
    batch = BatchResult(skipped=discovery.skipped, output_dir=out.root)

    pending: list[Submission] = []
    for submission in discovery.submissions:
        earlier = None if options.force else out.load_result(submission.student_id)
        if earlier is not None and earlier.status != GRADER_ERROR:
            batch.results.append(earlier)
            batch.resumed.append(submission.student_id)
        else:
            pending.append(submission)

    hidden_file = out.private / "hidden-set.json"
    if pending and options.execute:
        hidden = load_hidden_set(options.hidden_set, options.hidden_size, options.hidden_seed)
        write_hidden_set(hidden, hidden_file)
        # Invisible to every kernel: other students' work and results, their notebooks, the answer
        # key and the hidden set (its file, and the grader's copy under the output folder).
        batch.sandbox = plan_sandbox(options.sandbox, parameters=options.parameters,
                                     hidden=[out.root, Path(folder), ANSWER_KEY.parent, options.hidden_set])

    gpus: queue.Queue[str | None] = queue.Queue()
    for gpu in (visible_gpus() if options.jobs > 1 else []) or [None]:
        gpus.put(gpu)

    def run_one(submission: Submission):
        gpu = gpus.get()
        try:
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else None
            workdir = out.work / submission.student_id
            try:
                result, executed = grade_submission(submission, options, hidden_file, workdir, env, batch.sandbox)
            except Exception as error:  # a bug in the grader must not lose the rest of the class
                result, executed = GradeResult.for_submission(
                    submission, status=GRADER_ERROR, reason=f"internal grader error: {type(error).__name__}: {error}"), None
            out.save(result, executed, options.rubric)
            if not options.keep_work:
                shutil.rmtree(workdir, ignore_errors=True)
            return result
        finally:
            gpus.put(gpu)

    with ThreadPoolExecutor(max_workers=options.jobs) as pool, \
            tqdm(total=len(pending), desc="Grading", unit="notebook", disable=not progress) as bar:
        futures = {pool.submit(run_one, submission): submission for submission in pending}
        for future in as_completed(futures):
            result = future.result()
            batch.results.append(result)
            batch.graded_now.append(result.student_id)
            out.write_gradebooks(batch.results)
            bar.set_postfix_str(f"{result.student_id}: {result.total:g}/{result.max_total:g}")
            bar.update()
    out.write_gradebooks(batch.results)
    batch.results.sort(key=lambda r: r.student_id)
    return batch
