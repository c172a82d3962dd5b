"""A class at scale: N fast-failing students with Canvas names, graded by one `grade` run under `ulimit -n`.

    .venv/bin/python benchmarks/class_scale.py [--students 300] [--jobs 2] [--fd-limit 1024]

The students are made from the answer key by named edits (tests/scenarios.py: a typo in the imports, so
each kernel starts, confined, runs every cell to a quick failure, and half of them have their model check
run), named as an unzipped Canvas download in several scripts, NFC and NFD. The grader runs as a child
process under the file-descriptor limit, sandboxed (--sandbox require), and is sampled every 0.2 s.

Prints the wall time, the time per student, the grader's overhead per student (job-slot time not spent
inside a student's own pipeline), the grader's peak RSS, and its open fds, threads, descendant processes
and zombies as the class goes by: all N graded, and those figures flat, is the verdict.
"""
from __future__ import annotations

import argparse
import csv
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))   # the fixtures' machinery: tests/scenarios.py

from scenarios import write_fast_class  # noqa: E402

POLL_S = 0.2
MIN_STUDENTS_TO_JUDGE = 20


def write_hidden_set(path: Path, count: int = 200) -> Path:
    """A small labelled CSV (label,title,content): the fast students never get as far as a model."""
    rng = random.Random(0)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "title", "content"])
        for index in range(count):
            word = rng.choice(["great", "excellent", "love"] if index % 2 else ["awful", "broken", "waste"])
            writer.writerow([index % 2, f"review {index}", f"this product is {word}"])
    return path


def limit_open_files(limit: int):
    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard if hard == resource.RLIM_INFINITY else max(limit, hard)))
    return apply


def sample(grader: psutil.Process) -> dict | None:
    try:
        with grader.oneshot():
            descendants = grader.children(recursive=True)
            zombies = 0
            for process in descendants:
                try:
                    zombies += process.status() == psutil.STATUS_ZOMBIE
                except psutil.Error:
                    pass
            return {"fds": grader.num_fds(), "threads": grader.num_threads(), "rss": grader.memory_info().rss,
                    "descendants": len(descendants), "zombies": zombies}
    except psutil.Error:
        return None


def results_count(out: Path) -> int:
    try:
        return sum(1 for _ in (out / "results").glob("*.json"))
    except OSError:
        return 0


def run_class(args, work: Path) -> None:
    subs = write_fast_class(work / "submissions", args.students)
    hidden = write_hidden_set(work / "hidden.csv")
    data = work / "data"   # the notebooks' LOCAL_DATA_DIR: they fail before reading it
    data.mkdir()
    shutil.copy(hidden, data / "train.csv")
    out = work / "results"
    command = [sys.executable, "-m", "grader.cli", str(subs), "-o", str(out), "-j", str(args.jobs), "--sandbox", args.sandbox, "-q",
               "--hidden-set", str(hidden), "--hidden-size", "100", "--timeout", "300",
               "-p", f"LOCAL_DATA_DIR={data}", "-p", f"MODEL_NAME={data}"]
    print(f"grading {args.students} students, -j {args.jobs}, --sandbox {args.sandbox}, ulimit -n {args.fd_limit}")
    started = time.perf_counter()
    # Not run from the checkout: the grader is the installed one (or PYTHONPATH's, to measure another).
    # Output to files, not pipes: a kernel the grader left behind would hold a pipe open, and the wait with it.
    stdout_file, stderr_file = open(work / "grade.out", "w"), open(work / "grade.err", "w")
    process = subprocess.Popen(command, cwd=work, preexec_fn=limit_open_files(args.fd_limit),
                               stdout=stdout_file, stderr=stderr_file, text=True)
    grader = psutil.Process(process.pid)
    timeline, peaks, milestones = [], {}, sorted({max(1, args.students * k // 10) for k in range(1, 11)})
    while process.poll() is None:
        figures = sample(grader)
        if figures is not None:
            done = results_count(out)
            timeline.append((done, figures))
            for name, value in figures.items():
                peaks[name] = max(peaks.get(name, 0), value)
            while milestones and done >= milestones[0]:
                milestone = milestones.pop(0)
                print(f"  {milestone:4d} graded at {time.perf_counter() - started:7.1f} s: fds {figures['fds']:4d}, "
                      f"threads {figures['threads']:3d}, descendants {figures['descendants']:3d}, "
                      f"zombies {figures['zombies']:2d}, RSS {figures['rss'] / 2**20:6.0f} MB", flush=True)
        time.sleep(POLL_S)
    wall = time.perf_counter() - started
    stdout_file.close()
    stderr_file.close()
    stderr = (work / "grade.err").read_text(encoding="utf-8", errors="replace")
    report(args, out, process.returncode, stderr, wall, timeline, peaks)
    left = left_behind(work)
    print(f"processes left behind by the grader: {len(left)}" + (" (killed now)" if left else ""))
    for process in left:
        try:
            process.kill()
        except psutil.Error:
            pass


def left_behind(work: Path) -> list[psutil.Process]:
    """Processes still running in the benchmark's folder once the grader is gone: orphaned kernels."""
    found = []
    for process in psutil.process_iter():
        try:
            if str(work) in " ".join(process.cmdline()) or process.cwd().startswith(str(work)):
                found.append(process)
        except psutil.Error:
            pass
    return found


def report(args, out: Path, returncode: int, stderr: str, wall: float, timeline, peaks) -> None:
    try:
        with open(out / "gradebook.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        with open(out / "canvas-import.csv", newline="", encoding="utf-8") as handle:
            canvas_ids = [row["ID"] for row in csv.DictReader(handle) if row["ID"]]
    except OSError:
        rows, canvas_ids = [], []
    graded = [row for row in rows if row["status"] == "graded"]
    pipeline_s = sorted(float(row["run_time_s"]) for row in rows if row["run_time_s"])
    print(f"\nexit code {returncode}; {len(graded)}/{args.students} graded, {len(canvas_ids)} with a Canvas id")
    if returncode != 0:
        print("grader's stderr (tail):\n" + "\n".join(stderr.strip().splitlines()[-5:]))
    print(f"wall time {wall:.1f} s, {wall / args.students:.2f} s per student")
    if pipeline_s:
        overhead = (wall * args.jobs - sum(pipeline_s)) / args.students
        print(f"per-student pipeline (kernel start, sandbox, cells, model check): mean "
              f"{sum(pipeline_s) / len(pipeline_s):.2f} s, p95 {pipeline_s[int(0.95 * (len(pipeline_s) - 1))]:.2f} s")
        print(f"grader overhead per student (job-slot time outside the students' pipelines): {overhead:.2f} s")
    print(f"grader peak RSS {peaks.get('rss', 0) / 2**20:.0f} MB; peak open fds {peaks.get('fds', 0)} "
          f"(limit {args.fd_limit}); peak threads {peaks.get('threads', 0)}; peak descendants "
          f"{peaks.get('descendants', 0)}; peak zombies {peaks.get('zombies', 0)}")
    flat = flatness(args, timeline)
    print(f"verdict: {'all graded' if len(graded) == args.students else 'NOT all graded'}, "
          f"fds and processes {'flat' if flat else 'GROWING'}")


def flatness(args, timeline) -> bool:
    """Peaks in the first and the second half of the class (the first tenth left out: imports, caches). At
    any moment up to ``jobs`` students are in flight, each with fds and processes of its own, so single
    samples vary; a leak shows as the second half's peaks above the first's (by ~19 fds a student)."""
    if args.students < MIN_STUDENTS_TO_JUDGE:
        print(f"  too few students to judge flatness (fewer than {MIN_STUDENTS_TO_JUDGE})")
        return False
    start, middle = args.students // 10, args.students // 2
    halves = ([f for done, f in timeline if start <= done < middle], [f for done, f in timeline if done >= middle])
    flat = True
    # What one student in flight holds at most, per job: a leak of ~19 fds a student outgrows it in a few.
    for name, slack in (("fds", 25 * args.jobs), ("threads", 4 * args.jobs), ("descendants", 3 * args.jobs),
                        ("zombies", args.jobs)):
        first, second = (max(f[name] for f in half) for half in halves)
        grows = second > first + slack
        flat = flat and not grows
        print(f"  peak {name}: {first} in the first half of the class, {second} in the second"
              + ("  <- GROWING" if grows else ""))
    return flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fd-limit", type=int, default=1024, help="the grader's ulimit -n (default: %(default)s)")
    parser.add_argument("--sandbox", default="require", choices=("require", "auto", "off"))
    parser.add_argument("--keep", action="store_true", help="keep the class and its results (the path is printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="class-scale-"))
    try:
        run_class(args, work)
    finally:
        if args.keep:
            print(f"kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
