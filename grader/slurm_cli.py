"""The scale-out part of the ``grade`` command: the --slurm options, ``grade one`` and ``grade collect``.

Kept apart from grader/cli.py, which only adds these options to its parser and dispatches the two
subcommands here.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .report import canvas_id_note
from .rubric import Rubric, load_rubric, with_canvas_assignment
from .slurm import SlurmOptions, collect, grade_one


def add_canvas_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Canvas", "the assignment column of canvas-import.csv (default: the "
                                      "rubric's [canvas] assignment); each rubric needs its own, or importing one "
                                      "gradebook overwrites the other's scores")
    group.add_argument("--canvas-assignment", metavar="NAME", help="the Canvas assignment's name")
    group.add_argument("--canvas-assignment-id", metavar="ID", help="the Canvas assignment's id, the number in "
                       "its address (.../assignments/ID): the column is then headed 'NAME (ID)', as in Canvas's own "
                       "export, and Canvas matches it by the id")


def canvas_rubric(args: argparse.Namespace, rubric: Rubric) -> Rubric:
    """``rubric`` with the command line's Canvas assignment, if any."""
    return with_canvas_assignment(rubric, args.canvas_assignment, args.canvas_assignment_id)


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Slurm", "grade on a Slurm cluster: one array task per pending student, each running `grade one`; "
        "the output folder and the Python environment must be on a file system the nodes share")
    group.add_argument("--slurm", action="store_true", help="submit a job array and wait for it, instead of "
                       "grading here")
    group.add_argument("--partition", help="the tasks' partition (sbatch --partition)")
    group.add_argument("--account", help="the account charged (sbatch --account)")
    group.add_argument("--gpus-per-task", type=int, default=0, metavar="N", help="GPUs for each task (default: 0)")
    group.add_argument("--cpus-per-task", type=int, default=SlurmOptions.cpus_per_task, metavar="N",
                       help="CPUs for each task (default: %(default)s)")
    group.add_argument("--slurm-time", type=int, metavar="MINUTES", help="each task's time limit (default: "
                       "--timeout plus the model check's limit, plus 10 minutes)")
    group.add_argument("--max-running", type=int, metavar="N", help="at most N tasks at once (--array=...%%N)")
    group.add_argument("--sbatch-args", default="", metavar="'ARGS'",
                       help="more sbatch arguments, as one shell-quoted string (e.g. '--mem=16G --qos=short')")
    group.add_argument("--prepare-tasks", action="store_true", help="submit nothing: draw the hidden set and "
                       "write the pending students as tasks into OUTPUT/.grader/run.json, for another scheduler "
                       "to run as `grade one --index I -o OUTPUT`, then `grade collect OUTPUT`")


def slurm_options_from_args(args: argparse.Namespace) -> SlurmOptions | None:
    if not (args.slurm or args.prepare_tasks):
        return None
    return SlurmOptions(partition=args.partition, account=args.account, gpus_per_task=args.gpus_per_task,
                        cpus_per_task=args.cpus_per_task, time_minutes=args.slurm_time,
                        max_running=args.max_running, extra_args=shlex.split(args.sbatch_args),
                        submit=not args.prepare_tasks)


def prepared_text(output: Path) -> str:
    """What --prepare-tasks leaves for another scheduler to run."""
    from .report import OutputFolder
    from .slurm import load_run

    count = len(load_run(OutputFolder(output))["tasks"])
    return (f"{count} task(s) prepared in {output / '.grader' / 'run.json'}: run `grade one --index I -o {output}` "
            f"for I = 0..{count - 1}, then `grade collect {output}`" if count else "no student is pending")


def one_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="grade one", description="Grade one student of the run prepared in OUTPUT (by `grade SUBMISSIONS "
        "-o OUTPUT --slurm` or `--prepare-tasks`) and save their result; the gradebooks are left to "
        "`grade collect OUTPUT` or the submitting run.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("notebook", nargs="?", type=Path, help="the student's notebook, in the run's submissions")
    which.add_argument("--index", type=int, help="the run's N-th task (a job array's task id)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the run's output folder")
    parser.add_argument("--run", help=argparse.SUPPRESS)   # the run a Slurm task belongs to
    args = parser.parse_args(argv)
    result = grade_one(args.output, notebook=args.notebook, index=args.index, run_id=args.run)
    print(f"{result.student_id}: {result.status}, {result.total:g}/{result.max_total:g}"
          + (f" ({result.reason})" if result.reason else ""), flush=True)
    return 0


def collect_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="grade collect", description="Rebuild the gradebook, the Canvas CSV and "
                                     "the class's integrity review from the result files in OUTPUT.")
    parser.add_argument("output", type=Path)
    parser.add_argument("--rubric", type=Path, help="the rubric whose Canvas assignment heads the Canvas CSV "
                        "(default: the prepared run's, else the course's)")
    add_canvas_arguments(parser)
    args = parser.parse_args(argv)
    rubric = canvas_rubric(args, load_rubric(args.rubric)) if (
        args.rubric or args.canvas_assignment is not None or args.canvas_assignment_id is not None) else None
    results = collect(args.output, rubric)
    print(f"{len(results)} student(s); gradebook: {args.output / 'gradebook.csv'}; integrity review: "
          f"{args.output / 'integrity.html'}", file=sys.stdout)
    note = canvas_id_note(results, args.output)
    if note:
        print(note, file=sys.stdout)
    return 0
