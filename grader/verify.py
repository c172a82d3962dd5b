"""Judge the student's saved model itself, in a process of its own, after the kernel is gone.

The model is loaded from safetensors only, with no remote code and no network, so loading it
runs none of the student's code. It is then measured on the hidden evaluation set and asked to
re-predict the student's own ``predictions`` texts, which shows whether those came from it.

Run as ``python -m grader.verify REQUEST.json RESULT.json``; ``verify_in_subprocess`` does that.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .contract import LABELS

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_MODEL_BYTES = 2_000_000_000
CONFIDENCE_TOLERANCE = 0.01  # a GPU-trained model re-run on a CPU differs far less than this


@dataclass
class Verification:
    loaded: bool = False
    problem: str | None = None
    hidden_size: int = 0
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    f1: float | None = None
    f1_ci: tuple[float, float] | None = None
    reproduced: bool | None = None
    mismatches: list[str] = field(default_factory=list)
    reviews_per_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Verification":
        data = dict(data)
        for key in ("accuracy_ci", "f1_ci"):
            data[key] = tuple(data[key]) if data.get(key) else None
        return cls(**data)


def model_folder_problem(save_dir: Path, allowed_root: Path) -> str | None:
    """Why ``save_dir`` cannot be loaded safely, or None when it can."""
    if not save_dir.is_dir():
        return f"the saved model folder {save_dir.name!r} does not exist"
    resolved = save_dir.resolve()
    if not resolved.is_relative_to(allowed_root.resolve()):
        return "SAVE_DIR points outside the submission's own folder"
    files = [path for path in resolved.rglob("*") if path.is_file() or path.is_symlink()]
    for path in files:
        if not path.resolve().is_relative_to(resolved):
            return f"{path.name} is a link that leaves the model folder"
    names = {path.name for path in files}
    if "config.json" not in names:
        return "no config.json in the saved model folder (use save_pretrained)"
    if not any(name.endswith(".safetensors") for name in names):
        if any(name.endswith(PICKLE_SUFFIXES) for name in names):
            return "the weights are pickle files (.bin/.pt), which the grader does not load; save with safetensors"
        return "no model.safetensors in the saved model folder"
    if sum(path.stat().st_size for path in files) > MAX_MODEL_BYTES:
        return f"the saved model folder is over {MAX_MODEL_BYTES // 1_000_000:,} MB"
    return None


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def f1_score_binary(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 of the positive class; works on a batch of resamples along the last axis."""
    true_positive = ((predicted == 1) & (labels == 1)).sum(axis=-1)
    false_positive = ((predicted == 1) & (labels == 0)).sum(axis=-1)
    false_negative = ((predicted == 0) & (labels == 1)).sum(axis=-1)
    denominator = 2 * true_positive + false_positive + false_negative
    return np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)


def bootstrap_f1_interval(labels, predicted, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(labels), size=(resamples, len(labels)))
    scores = f1_score_binary(labels[picks], predicted[picks])
    return (float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5)))


def output_to_class(model) -> list[int]:
    """Map each output index of the model to 0 (negative) or 1 (positive) by its label name."""
    names = [str(model.config.id2label.get(index, "")).lower() for index in range(model.config.num_labels)]
    if sorted(names) == sorted(LABELS):
        return [LABELS.index(name) for name in names]
    return list(range(model.config.num_labels))  # LABEL_0 / LABEL_1: index = class, as the data's labels


def predict_probabilities(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    """Softmax probabilities, batched by similar length so padding costs little."""
    import torch

    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    probabilities = np.zeros((len(texts), model.config.num_labels), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            inputs = tokenizer([texts[index] for index in batch], truncation=True, max_length=max_length,
                               padding=True, return_tensors="pt").to(model.device)
            probabilities[batch] = torch.softmax(model(**inputs).logits.float(), dim=-1).cpu().numpy()
    return probabilities


def verify(request: dict) -> Verification:
    """Load the model and measure it; every failure becomes ``Verification.problem``."""
    result = Verification()
    save_dir = Path(request["save_dir"])
    result.problem = model_folder_problem(save_dir, Path(request["allowed_root"]))
    if result.problem:
        return result
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            save_dir, use_safetensors=True, trust_remote_code=False, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(save_dir, trust_remote_code=False, local_files_only=True)
    except Exception as error:  # any failure to load is the student's result, not a grader crash
        result.problem = f"the saved model does not load: {type(error).__name__}: {error}"[:500]
        return result
    if model.config.num_labels != 2:
        result.problem = f"the saved model has {model.config.num_labels} labels, not 2"
        return result
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    result.loaded = True
    to_class = np.array(output_to_class(model))

    hidden = json.loads(Path(request["hidden_set"]).read_text(encoding="utf-8"))
    labels = np.array([row["label"] for row in hidden])
    started = time.perf_counter()
    probabilities = predict_probabilities(model, tokenizer, [row["text"] for row in hidden], request["max_length"])
    result.reviews_per_s = len(hidden) / max(time.perf_counter() - started, 1e-9)
    predicted = to_class[probabilities.argmax(axis=-1)]
    result.hidden_size = len(hidden)
    result.accuracy = float((predicted == labels).mean())
    result.accuracy_ci = wilson_interval(int((predicted == labels).sum()), len(labels))
    result.f1 = float(f1_score_binary(labels, predicted))
    result.f1_ci = bootstrap_f1_interval(labels, predicted)

    claimed = request.get("predictions") or []
    if claimed:
        again = predict_probabilities(model, tokenizer, [p["text"] for p in claimed], request["max_length"])
        for prediction, row in zip(claimed, again):
            label = LABELS[to_class[row.argmax()]]
            confidence = float(row.max())
            if label != prediction["label"] or abs(confidence - prediction["confidence"]) > CONFIDENCE_TOLERANCE:
                result.mismatches.append(
                    f"{prediction['text'][:60]!r}: notebook said {prediction['label']} "
                    f"({prediction['confidence']:.3f}), the saved model says {label} ({confidence:.3f})")
        result.reproduced = not result.mismatches
    return result


def verify_in_subprocess(request: dict, workdir: Path, timeout_s: float, env: dict | None = None) -> Verification:
    """Run ``verify`` in a fresh Python process; a crash or timeout becomes the result's problem."""
    request_path, result_path = workdir / "verify-request.json", workdir / "verify-result.json"
    request_path.write_text(json.dumps(request), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    try:
        completed = subprocess.run([sys.executable, "-m", "grader.verify", str(request_path), str(result_path)],
                                   capture_output=True, text=True, timeout=timeout_s,
                                   env={**os.environ, **(env or {})}, cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        return Verification(problem=f"checking the saved model took over {timeout_s:.0f} s")
    if completed.returncode != 0 or not result_path.is_file():
        tail = completed.stderr.strip().splitlines()[-3:]
        return Verification(problem="checking the saved model failed: " + " | ".join(tail))
    return Verification.from_dict(json.loads(result_path.read_text(encoding="utf-8")))


def main(argv: list[str] | None = None) -> int:
    request_path, result_path = (argv or sys.argv[1:])[:2]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    if request.get("torch_threads"):
        import torch
        torch.set_num_threads(request["torch_threads"])
    result = verify(request)
    Path(result_path).write_text(json.dumps(result.to_dict()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
