"""Verify-mode submissions made in seconds: the answer key with the saved outputs a run of it would leave,
and the model zip its submit cell writes, for a tiny BERT trained here (or left untrained).

Verify mode reads only the notebook's saved outputs and the model (grader.verify_mode), so a notebook whose
code cells are marked as run in order, and whose submit cell displays predictions the model really makes
and the weights' sha256, is graded exactly as a real run of it would be (benchmarks/verify_mode.py makes
its submissions the same way). Executing the answer key instead costs a kernel and a training per student.
"""
from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import nbformat

from grader.build import ANSWER_KEY
from grader.hidden import review_text

MAX_LENGTH = 256   # the grader's: the predictions must be the ones it will make


def reviews(path: Path) -> tuple[list[str], list[int]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [review_text(row["title"], row["content"]) for row in rows], [int(row["label"]) for row in rows]


def trained_copy(model_dir: Path, data_dir: Path, target: Path, epochs: int = 4) -> Path:
    """``model_dir`` (a 2-label classifier) fine-tuned on ``data_dir``/train.csv, saved in ``target``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts, labels = reviews(data_dir / "train.csv")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    # 3e-4: it learns the tiny reviews and stays a fine-tune of its base (cosine similarity ~0.78 to it;
    # 3e-3 moves the tiny random weights to ~0.49, which verify mode takes for a model of another origin)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(texts), 16):
            batch = tokenizer(texts[start:start + 16], truncation=True, max_length=32, padding=True, return_tensors="pt")
            loss = model(**batch, labels=torch.tensor(labels[start:start + 16])).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
    model.eval()
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def course_reviews(nb) -> list[str]:
    source = next(cell.source for cell in nb.cells if cell.get("id") == "course-reviews")
    namespace: dict = {}
    exec(source.split("predictions =")[0], namespace)   # the answer key's own list of reviews, nothing else
    return namespace["course_reviews"]


def predictions_and_metrics(model_dir: Path, texts: list[str], test_csv: Path) -> tuple[list[dict], dict]:
    """The predictions the model makes on ``texts`` (as the notebook's section 12), and its test figures."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from grader.model_check.inference import predict_probabilities
    from grader.model_check.statistics import f1_score_binary

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    probabilities = predict_probabilities(model, tokenizer, texts, MAX_LENGTH)
    names = model.config.id2label
    predictions = [{"text": text, "label": names[int(row.argmax())].lower(), "confidence": float(row.max())}
                   for text, row in zip(texts, probabilities)]
    test_texts, test_labels = reviews(test_csv)
    predicted = predict_probabilities(model, tokenizer, test_texts, MAX_LENGTH).argmax(axis=-1)
    labels = np.array(test_labels)
    accuracy, f1 = float((predicted == labels).mean()), float(f1_score_binary(labels, predicted))
    return predictions, {"accuracy": accuracy, "precision": accuracy, "recall": accuracy, "f1": f1}


def executed_answer_key(model_dir: Path, test_csv: Path, reported: dict | None = None):
    """The answer key as a run of it with ``model_dir`` leaves it: every code cell run in order, and the submit
    cell's output (test figures, predictions, the weights' sha256). ``reported`` overrides its test figures."""
    nb = nbformat.read(ANSWER_KEY, as_version=4)
    predictions, metrics = predictions_and_metrics(model_dir, course_reviews(nb), test_csv)
    weights = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in model_dir.glob("*.safetensors")}
    payload = {"test_metrics": reported or metrics, "predictions": predictions,
               "model": {"zip": "sentiment-model.zip", "precision": "fp32", "weights_sha256": weights}}
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":   # each printing a line, as a run does (a self-check its "OK" line)
            count += 1
            cell.execution_count = count
            locked = cell.get("metadata", {}).get("nbgrader", {}).get("locked")
            line = "OK: (tests/verify_submissions.py)\n" if locked else "(run)\n"
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=line)]
            if cell.get("id") == "submit":
                cell.outputs.append(nbformat.v4.new_output("display_data", data={"application/json": payload}))
    return nb


def write_submission(folder: Path, model_dir: Path, test_csv: Path, reported: dict | None = None,
                     zipped_model: Path | None = None) -> Path:
    """A student's folder as they upload it: project.ipynb and sentiment-model.zip (``zipped_model``'s files,
    when given, in place of the model the notebook was run with)."""
    folder.mkdir(parents=True)
    nbformat.write(executed_answer_key(model_dir, test_csv, reported), folder / "project.ipynb")
    shutil.make_archive(str(folder / "sentiment-model"), "zip", zipped_model or model_dir)
    return folder
