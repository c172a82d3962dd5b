"""Benchmark: the sandbox's entry points and verify mode per student, an earlier grader against this one.

Two programs start inside the sandbox for every student: the kernel wrapper (`python -P -m grader.confine`,
before each kernel) and the model check (`python -P -m grader.model_check`; `grader.verify` before the
renovation). Both import the package `grader` first. Measured side by side, rounds interleaved, for the grader of --before (a detached worktree of that
commit, made here under build/) and for this working tree's:

- kernel wrapper start: `python -P -m grader.confine --max-tasks 512 --max-file-bytes 1G -- true`, wall
  seconds from start to exit (Python's start-up, the imports, the exec of `true`);
- model check imports: `python -P -c "import <the model check's worker module>"`, wall seconds (what the
  model check's process imports before it reads its request);
- verify mode per student: `grade SUBMISSIONS --verify -j 1` on --students copies of one submission (each
  grader's own answer key with its saved outputs made here, and the zip of benchmarks/verify_throughput.py's
  cached MiniLM fine-tune), sandboxed where bubblewrap is here, --hidden-size reviews of the offline test split.

Each grader is imported from its own folder (PYTHONPATH, which the sandbox passes on to its programs).

    .venv/bin/python benchmarks/sandbox_entry.py [--before 94f59f4] [--rounds 5] [--students 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import verify_mode  # noqa: E402  (benchmarks/, put on the path above)
import verify_throughput as throughput  # noqa: E402

ANSWER_KEY = Path("answer_key") / "MLB_Project_FineTuning_AnswerKey.ipynb"


def worktree(revision: str) -> Path:
    """A detached checkout of ``revision`` under build/ (made once)."""
    commit = subprocess.run(["git", "rev-parse", "--short", revision], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    folder = ROOT / "build" / "sandbox-entry" / commit
    if not (folder / "grader").is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(folder), commit], cwd=ROOT, check=True,
                       capture_output=True)
    return folder


def environment(root: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def wrapper_start(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-P", "-m", "grader.confine", "--max-tasks", "512", "--max-file-bytes",
                    str(2**30), "--", "true"], env=environment(root), cwd=tempfile.gettempdir(), check=True)
    return time.perf_counter() - started


def model_check_import(root: Path) -> float:
    module = "grader.model_check.worker" if (root / "grader" / "model_check").is_dir() else "grader.verify"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-P", "-c", f"import {module}"], env=environment(root), cwd=tempfile.gettempdir(),
                   check=True)
    return time.perf_counter() - started


def submission(root: Path, model_dir: Path, folder: Path) -> None:
    """verify_mode.submission with ``root``'s answer key (an earlier grader recognises its own notebook)."""
    ours = ROOT / ANSWER_KEY
    theirs = root / ANSWER_KEY
    import grader.build

    grader.build.ANSWER_KEY = theirs
    try:
        verify_mode.submission(model_dir, folder)
    finally:
        grader.build.ANSWER_KEY = ours
    nbformat.validate(nbformat.read(folder / "project.ipynb", as_version=4))


def grade_verify(root: Path, submissions: Path, out: Path, hidden_set: Path, hidden_size: int) -> tuple[float, list]:
    """``root``'s grader through verify_mode.grade_verify, with --base-model where that grader has it."""
    grade = [sys.executable, "-m", "grader.cli"]
    help_text = subprocess.run([*grade, "--help"], env=environment(root), cwd=root, capture_output=True,
                               text=True).stdout
    shutil.rmtree(out, ignore_errors=True)
    return verify_mode.grade_verify(submissions, out, hidden_set, hidden_size, grade=grade, env=environment(root),
                                    cwd=root, base_model="--base-model" in help_text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="94f59f4", help="the earlier grader's commit (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=500)
    parser.add_argument("--data", type=Path, default=throughput.AMAZON_DATA)
    args = parser.parse_args()
    from grader.sandbox import bubblewrap_flags

    graders = {f"before ({args.before})": worktree(args.before), "after (this tree)": ROOT}
    starts: dict[str, list[float]] = {name: [] for name in graders}
    imports: dict[str, list[float]] = {name: [] for name in graders}
    for _ in range(args.rounds):
        for name, root in graders.items():
            starts[name].append(wrapper_start(root))
            imports[name].append(model_check_import(root))
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "sandboxed": bubblewrap_flags()[0] is not None, "students": args.students,
              "hidden_size": args.hidden_size, "graders": {}}
    model_dir = throughput.trained_minilm(args.data, steps=100)[0]
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for index, (name, root) in enumerate(graders.items()):
            one = work / str(index) / "one"
            submission(root, model_dir, one)
            submissions = work / str(index) / "submissions"
            for student in range(args.students):
                shutil.copytree(one, submissions / f"student-{student + 1}")
        walls: dict[str, list[float]] = {name: [] for name in graders}
        results: dict[str, list] = {}
        for _ in range(2):   # interleaved: each grader twice
            for index, (name, root) in enumerate(graders.items()):
                wall, results[name] = grade_verify(root, work / str(index) / "submissions", work / str(index) / "out",
                                                   args.data / "test.csv", args.hidden_size)
                walls[name].append(round(wall / args.students, 2))
        for name in graders:
            report["graders"][name] = {
                "kernel_wrapper_start_s": {"median": round(statistics.median(starts[name]), 3),
                                           "all": [round(s, 3) for s in starts[name]]},
                "model_check_import_s": {"median": round(statistics.median(imports[name]), 3),
                                         "all": [round(s, 3) for s in imports[name]]},
                "verify_seconds_per_student_wall": walls[name],
                "verify_seconds_per_student_recorded": [r["run_time_s"] for r in results[name]],
                "scores": [f"{r['total']:g}/{r['max_total']:g}" for r in results[name]],
            }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
