"""The model check's process: load the saved model (safetensors only, no remote code, no network), then
measure it on the hidden set and ask it to re-predict the notebook's own ``predictions``.

``python -m grader.model_check`` reads the request on stdin and prints the result on stdout, confined like
the kernel; ``check_model_in_subprocess`` starts it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..cancel import Cancellation
from ..course import LABELS
from ..lists import capped
from ..results import Verification
from ..sandbox import Limits, Watchdog, kernel_environment
from .base_model import base_model_check
from .inference import output_to_class, predict_probabilities
from .refusals import NO_TOKENIZER, config_problem, has_tokenizer, model_folder_problem
from .statistics import binary_metrics, bootstrap_f1_interval, f1_score_binary, wilson_interval

CONFIDENCE_TOLERANCE = 0.01  # a GPU-trained model re-run on a CPU differs far less than this


def check_model(request: dict) -> Verification:
    """Load the model and measure it; every failure becomes ``Verification.problem``.

    A folder without a tokenizer is measured with ``request["course_tokenizer"]`` (the course's, which the
    template's tokenize cell loads) only when that tokenizer reproduces the notebook's predictions."""
    result = Verification()
    save_dir = Path(request["save_dir"])
    result.problem = model_folder_problem(save_dir, Path(request["allowed_root"])) or config_problem(save_dir)
    if result.problem:
        return result
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result.tokenizer_missing = not has_tokenizer(save_dir)
    tokenizer_dir = Path(request["course_tokenizer"]) if result.tokenizer_missing and request.get(
        "course_tokenizer") else save_dir
    if result.tokenizer_missing and tokenizer_dir == save_dir:
        result.problem = NO_TOKENIZER
        return result
    try:
        # fp32 whatever the file holds: a model submitted in half precision is measured as the notebook used it
        model = AutoModelForSequenceClassification.from_pretrained(
            save_dir, use_safetensors=True, trust_remote_code=False, local_files_only=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False, local_files_only=True)
    except Exception as error:  # any failure to load is the student's result, not a grader crash
        result.problem = f"the saved model does not load: {type(error).__name__}: {error}"[:500]
        return result
    if model.config.num_labels != 2:
        result.problem = f"the saved model has {model.config.num_labels} labels, not 2"
        return result
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    to_class = np.array(output_to_class(model))

    claimed = request.get("predictions") or []
    if claimed:
        check_predictions(result, model, tokenizer, to_class, claimed, request)
    if result.tokenizer_missing and not result.reproduced:
        return Verification(tokenizer_missing=True, problem=NO_TOKENIZER + (
            "; the course's tokenizer does not reproduce the notebook's predictions either, so the model cannot "
            "be measured with the tokenizer it was trained with"))
    result.loaded = True
    if request.get("base_model"):
        result.base_model_problem, result.base_similarity = base_model_check(
            save_dir, Path(request["base_model"]), tokenizer, request.get("base_model_name") or "")
        result.base_model_checked = True
    measure_hidden_set(result, model, tokenizer, to_class, request)
    if request.get("test_split"):
        measure_test_split(result, model, tokenizer, to_class, request)
    return result


def check_predictions(result: Verification, model, tokenizer, to_class, claimed: list[dict], request: dict) -> None:
    """Whether the model makes the notebook's predictions. The confidences are compared too (fp32 throughout),
    read as the notebook meant them: the probability of the label, or, where the notebook gave P(positive)
    instead (a mistake the predictions check names), that."""
    again = predict_probabilities(model, tokenizer, [p["text"] for p in claimed], request["max_length"],
                                  threads=request.get("torch_threads"))
    positive = int(np.flatnonzero(to_class == LABELS.index("positive"))[0]) if 1 in to_class else 1
    as_positive = 0
    for prediction, row in zip(claimed, again):
        label = LABELS[to_class[row.argmax()]]
        confidence = float(row.max())
        if label == prediction["label"] and abs(confidence - prediction["confidence"]) <= CONFIDENCE_TOLERANCE:
            continue
        if label == prediction["label"] and abs(float(row[positive]) - prediction["confidence"]) <= CONFIDENCE_TOLERANCE:
            as_positive += 1
            continue
        result.mismatches.append(
            f"{prediction['text'][:60]!r}: notebook said {prediction['label']} "
            f"({prediction['confidence']:.3f}), the saved model says {label} ({confidence:.3f})")
    result.reproduced = not result.mismatches
    result.mismatches = capped(result.mismatches, what="mismatch")
    result.confidence_is_positive_probability = result.reproduced and as_positive > 0


def measure_hidden_set(result: Verification, model, tokenizer, to_class, request: dict) -> None:
    hidden = json.loads(Path(request["hidden_set"]).read_text(encoding="utf-8"))
    labels = np.array([row["label"] for row in hidden])
    started = time.perf_counter()
    # Only the labels of the hidden set count, so bf16 may answer where it cannot change one.
    probabilities = predict_probabilities(model, tokenizer, [row["text"] for row in hidden], request["max_length"],
                                          labels_only=True, threads=request.get("torch_threads"))
    result.reviews_per_s = len(hidden) / max(time.perf_counter() - started, 1e-9)
    predicted = to_class[probabilities.argmax(axis=-1)]
    result.hidden_size = len(hidden)
    result.hidden_predictions = [int(label) for label in predicted]
    result.accuracy = float((predicted == labels).mean())
    result.accuracy_ci = wilson_interval(int((predicted == labels).sum()), len(labels))
    result.f1 = float(f1_score_binary(labels, predicted))
    result.f1_ci = bootstrap_f1_interval(labels, predicted)

def measure_test_split(result: Verification, model, tokenizer, to_class, request: dict) -> None:
    """The model's metrics on the student's own test split, re-derived by the grader (verify mode's --rederive)."""
    rows = json.loads(Path(request["test_split"]).read_text(encoding="utf-8"))
    split_labels = np.array([row["label"] for row in rows])
    split_probabilities = predict_probabilities(model, tokenizer, [row["text"] for row in rows],
                                                request.get("test_max_length") or request["max_length"],
                                                labels_only=True, threads=request.get("torch_threads"))
    result.test_split_metrics = binary_metrics(split_labels, to_class[split_probabilities.argmax(axis=-1)])


RESULT_LINE = "grader-verification: "   # marks the result among whatever else the process prints


def check_model_in_subprocess(request: dict, timeout_s: float, env: dict | None = None, *, prefix=(),
                         limits: Limits = Limits(), watch_folder: Path = Path("."),
                         cancellation: Cancellation | None = None) -> Verification:
    """Run ``check_model`` in a fresh Python process; a crash, a timeout or an exceeded limit becomes the problem.

    ``prefix`` confines it (``sandbox.verifier_prefix``). The request goes in on stdin and the result
    comes back on stdout: the grader writes and reads no file in the student's folder, where a link
    planted by the notebook could send it anywhere. The environment is the kernel's allow-list (no
    tokens), the watchdog holds it to the memory limit, and it has a session of its own, so a Ctrl-C
    in the grader's terminal reaches the grader alone, which stops it through ``cancellation``.
    """
    command = [*prefix, sys.executable, "-P", "-m", "grader.model_check"]
    watchdog = Watchdog(limits, watch_folder)
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, env=kernel_environment(env, sandboxed=bool(prefix)),
                          cwd="/") as process, \
            (cancellation or Cancellation()).register(process.kill):
        watchdog.watch(process.pid)
        try:
            stdout, stderr = process.communicate(json.dumps(request), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return Verification(problem=f"checking the saved model took over {timeout_s:.0f} s")
        finally:
            watchdog.finish()
    if watchdog.exceeded:
        return Verification(problem=f"checking the saved model was stopped: it {watchdog.exceeded}")
    found = [line[len(RESULT_LINE):] for line in stdout.splitlines() if line.startswith(RESULT_LINE)]
    if process.returncode != 0 or not found:
        tail = stderr.strip().splitlines()[-3:]
        return Verification(problem="checking the saved model failed: " + " | ".join(tail))
    return Verification.from_dict(json.loads(found[-1]))


def main(argv: list[str] | None = None) -> int:
    """``python -m grader.model_check``: a request (JSON) on stdin, the result on stdout."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    request = json.loads(sys.stdin.read())
    if request.get("torch_threads"):
        import torch
        torch.set_num_threads(request["torch_threads"])
    result = check_model(request)
    print(RESULT_LINE + json.dumps(result.to_dict()), flush=True)
    return 0

