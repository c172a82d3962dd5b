"""Benchmark: what the class review costs at class scale (300 students by default), from results on disk.

A synthetic class of verify-mode results is written to a temporary output folder: each student's hidden-set
labels (--reviews of them) made as honest fine-tunes err (a shared core of hard reviews plus errors of their
own), with one copied pair, one noisy copy and one trio of identical weights planted, every notebook and
weights digest distinct otherwise. Then, timed on their own and in the real command:
- load: every result read back from results/*.json (what `grade collect` and a resumed run do);
- review: grader.integrity.review_class, every pair compared;
- write: integrity.json, integrity.html and the gradebook with its flags column;
- `grade collect OUT` end to end, in a subprocess (Python's start-up and imports included).

    .venv/bin/python benchmarks/integrity_scale.py [--students 300,1000] [--reviews 1000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synthetic_class(count: int, reviews: int, seed: int = 0) -> list:
    from grader.results import VERIFY_MODE, GradeResult, Provenance, Verification
    from grader.rubric import CheckResult

    rng = random.Random(seed)
    truth = [rng.randint(0, 1) for _ in range(reviews)]
    hard = set(rng.sample(range(reviews), reviews // 8))
    results = []
    for index in range(count):
        labels = [1 - label if (i in hard and rng.random() < 0.6) or rng.random() < 0.03 else label
                  for i, label in enumerate(truth)]
        name = f"student{index:04d}"
        weights = {"model.safetensors": f"{index:064x}"}
        if index == 1:      # a copy of student 0: same weights, same labels
            labels, weights = list(results[0].verification.hidden_predictions), results[0].provenance.weights_sha256
        if index == 2:      # a noisy copy of student 0
            labels = [1 - label if rng.random() < 0.005 else label for label in results[0].verification.hidden_predictions]
        if index in (4, 5):  # a trio with student 3
            labels, weights = list(results[3].verification.hidden_predictions), results[3].provenance.weights_sha256
        accuracy = sum(a == b for a, b in zip(labels, truth)) / reviews
        results.append(GradeResult(
            name, f"/submissions/{name}/project.ipynb", mode=VERIFY_MODE, fingerprint=f"{index:064x}",
            checks=[CheckResult("accuracy", True, 20, 20, "")],
            verification=Verification(loaded=True, hidden_size=reviews, accuracy=accuracy,
                                      accuracy_ci=(accuracy - 0.02, accuracy + 0.02), f1=accuracy,
                                      hidden_predictions=labels, hidden_set_sha256="h" * 64,
                                      model_source="sentiment-model.zip"),
            provenance=Provenance(notebook_sha256=f"n{index:063x}", source_sha256=f"s{index:063x}", seed=index,
                                  weights_sha256=weights)))
    return results


def timed(function, rounds: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return best, value


def measure(count: int, reviews: int, rounds: int) -> dict:
    from grader.integrity import review_class, write_review
    from grader.report import OutputFolder, write_atomic
    from grader.rubric import load_rubric

    with tempfile.TemporaryDirectory() as folder:
        out = OutputFolder(Path(folder) / "out")
        for result in synthetic_class(count, reviews):
            write_atomic(out.result_path(result.student_id), json.dumps(result.to_dict(), indent=1))
        result_bytes = sum(path.stat().st_size for path in out.results.glob("*.json"))
        load_s, results = timed(lambda: [out.load_result(path.stem) for path in sorted(out.results.glob("*.json"))],
                                rounds)
        review_s, review = timed(lambda: review_class(results), rounds)
        write_s, _ = timed(lambda: (write_review(out, review), out.write_gradebooks(results, load_rubric(), review)), rounds)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "grader.cli", "collect", str(out.root)], capture_output=True,
                              text=True, cwd=ROOT)
        collect_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        kinds = sorted(flag.kind for flag in review.flags)
    return {"students": count, "reviews": reviews, "pairs": count * (count - 1) // 2,
            "results_mb": round(result_bytes / 1e6, 1), "load_s": round(load_s, 3), "review_s": round(review_s, 3),
            "write_s": round(write_s, 3), "grade_collect_s": round(collect_s, 2), "flags": kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", default="300,1000")
    parser.add_argument("--reviews", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = [measure(int(count), args.reviews, args.rounds) for count in args.students.split(",")]
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (figures taken under load are not speeds)")
    print("| students | pairs | results on disk | load | review (every pair) | write | `grade collect` |\n"
          "|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['students']} | {row['pairs']:,} | {row['results_mb']} MB | {row['load_s']} s | "
              f"{row['review_s']} s | {row['write_s']} s | {row['grade_collect_s']} s |")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
