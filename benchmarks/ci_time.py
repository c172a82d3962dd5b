"""Benchmark: what CI costs, as CI runs it: `.ci/run` on a clean clone of HEAD with ../shared beside it.

Prints one JSON object: the wall time, pytest's counts, the slowest tests (pytest's --durations, which
`.ci/run` asks for), the real run's own figures (training reviews/s in the kernel, as Trainer reports
them, and the summary line) and the machine's load before and after, since a busy machine makes every
figure an upper bound.

    .venv/bin/python benchmarks/ci_time.py [--keep]      # --keep: leave the clone for a look
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"=+ (.*?(?:passed|failed|error).*?) in ([\d.]+)s")
DURATION = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)$", re.MULTILINE)


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def real_run_training(clone: Path) -> dict:
    """Trainer's own train figures from the executed answer key of the real run, if it ran."""
    executed = clone / "build" / "answer-key-run" / "results" / "executed" / "answer-key.ipynb"
    if not executed.is_file():
        return {}
    text = executed.read_text(encoding="utf-8")
    found = {key: float(value) for key, value in
             re.findall(r"'(train_runtime|train_samples_per_second)': '([\d.]+)'", text)}
    speed = re.search(r"Speed settings: ([^\\\\]*)", text)
    return {**found, "speed_settings": speed[1] if speed else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ci-time-"))
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        shutil.copytree(shared, work / "shared", symlinks=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True).stdout
    report = {"commit": head.strip(), "cores": os.cpu_count(), "load_before": load()}
    started = time.perf_counter()
    run = subprocess.run(["bash", ".ci/run"], cwd=clone, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["load_after"] = load()
    report["exit_code"] = run.returncode
    summary = SUMMARY.findall(run.stdout)
    report["pytest_summary"] = summary[-1][0] if summary else None
    report["pytest_s"] = float(summary[-1][1]) if summary else None
    report["slowest"] = [{"s": float(seconds), "phase": phase, "test": test}
                         for seconds, phase, test in DURATION.findall(run.stdout)][:15]
    lines = run.stdout.splitlines()
    report["real_run"] = {"command": next((line.strip() for line in lines if line.startswith("[real run]")), None),
                          "summary": next((" ".join(line.split()) for line in lines
                                           if re.match(r"^answer-key\s+graded", line)), None),
                          **real_run_training(clone)}
    (work / "ci-output.txt").write_text(run.stdout + "\n--- stderr ---\n" + run.stderr, encoding="utf-8")
    report["log"] = str(work / "ci-output.txt")
    if not args.keep:
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(work / "shared", ignore_errors=True)
    print(json.dumps(report, indent=1))
    sys.exit(0 if run.returncode == 0 else 1)


if __name__ == "__main__":
    main()
