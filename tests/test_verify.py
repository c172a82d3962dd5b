"""The out-of-kernel model check: what it refuses to load, and its statistics."""
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForSequenceClassification

from grader.model_check.refusals import config_problem, model_folder_problem
from grader.model_check.statistics import bootstrap_f1_interval, f1_score_binary, wilson_interval
from grader.model_check.worker import check_model, check_model_in_subprocess


@pytest.fixture(scope="module")
def saved_classifier(saved_model_folder):
    return saved_model_folder


def test_a_safetensors_model_inside_the_submission_is_accepted(saved_classifier):
    assert model_folder_problem(saved_classifier, saved_classifier.parent) is None


def test_a_missing_folder(tmp_path):
    assert "does not exist" in model_folder_problem(tmp_path / "nope", tmp_path)


def test_a_folder_outside_the_submission_is_refused(saved_classifier, tmp_path):
    assert "outside" in model_folder_problem(saved_classifier, tmp_path)


def test_pickle_weights_are_refused_without_loading(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not loaded")
    assert "pickle" in model_folder_problem(folder, tmp_path)


def test_a_link_leaving_the_model_folder_is_refused(saved_classifier, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for item in saved_classifier.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    secret = tmp_path.parent / "hidden.csv"
    secret.write_text("label,title,content\n")
    os.symlink(secret, folder / "notes.txt")
    assert "link" in model_folder_problem(folder, tmp_path)


def verify_request(save_dir, tmp_path, **extra) -> dict:
    hidden = [{"text": "great product", "label": 1}, {"text": "awful product", "label": 0}] * 5
    (tmp_path / "hidden.json").write_text(json.dumps(hidden))
    return {"save_dir": str(save_dir), "allowed_root": str(save_dir.parent),
            "hidden_set": str(tmp_path / "hidden.json"), "max_length": 32, **extra}


def copy_with_config(saved_classifier, tmp_path, **settings):
    """A copy of the saved classifier whose config.json has ``settings`` written over it."""
    folder = shutil.copytree(saved_classifier, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **settings}))
    return folder


def test_verify_measures_the_model_and_checks_the_claimed_predictions(saved_classifier, tmp_path):
    import torch
    from transformers import AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(saved_classifier).eval()
    tokenizer = AutoTokenizer.from_pretrained(saved_classifier)
    with torch.no_grad():
        probabilities = torch.softmax(model(**tokenizer(["great product"], return_tensors="pt")).logits, -1)[0]
    truth = {"text": "great product", "label": ("negative", "positive")[int(probabilities.argmax())],
             "confidence": float(probabilities.max())}
    wrong_label = dict(truth, label="positive" if truth["label"] == "negative" else "negative")
    wrong_confidence = dict(truth, confidence=truth["confidence"] - 0.05)
    result = check_model(verify_request(saved_classifier, tmp_path, predictions=[truth]))
    assert result.loaded and result.hidden_size == 10
    assert 0 <= result.accuracy <= 1 and result.accuracy_ci[0] <= result.accuracy <= result.accuracy_ci[1]
    assert result.reproduced is True and result.mismatches == []
    # The claims are checked against what the model really says: a wrong label or confidence is caught.
    for claim in (wrong_label, wrong_confidence):
        result = check_model(verify_request(saved_classifier, tmp_path, predictions=[truth, claim]))
        assert result.reproduced is False and len(result.mismatches) == 1, claim


def test_a_genuine_classifier_matches_its_config(saved_classifier):
    assert config_problem(saved_classifier) is None


def test_a_sharded_classifier_matches_its_config(saved_classifier, tmp_path):
    folder = tmp_path / "model"
    AutoModelForSequenceClassification.from_pretrained(saved_classifier).save_pretrained(folder, max_shard_size="50KB")
    assert len(list(folder.glob("*.safetensors"))) > 1
    assert config_problem(folder) is None


def test_a_config_larger_than_the_stored_weights_is_not_built(saved_classifier, tmp_path):
    # 40 layers next to the weights of 2: without the check, from_pretrained builds 38 random layers.
    folder = copy_with_config(saved_classifier, tmp_path, num_hidden_layers=40)
    result = check_model(verify_request(folder, tmp_path))
    assert not result.loaded
    assert "config.json describes a model of" in result.problem and "not written by save_pretrained" in result.problem


def test_an_absurd_config_is_refused_by_the_setting_it_names(saved_classifier, tmp_path):
    folder = copy_with_config(saved_classifier, tmp_path, num_hidden_layers=2000)
    assert "num_hidden_layers to 2,000" in config_problem(folder)


def test_a_config_of_billions_of_parameters_is_counted_without_memory(saved_classifier, tmp_path):
    # Within every limit, yet about 40 billion parameters: 150 GB if anything were allocated.
    folder = copy_with_config(saved_classifier, tmp_path, num_hidden_layers=48, hidden_size=8192,
                              intermediate_size=32768, num_attention_heads=64)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    problem = config_problem(folder)
    assert "billion parameters" in problem
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 300_000


def test_stored_weights_that_are_not_the_models_are_refused(saved_classifier, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(saved_classifier, tmp_path / "model")
    tensors = load_file(folder / "model.safetensors")
    save_file({**tensors, "smuggled.weight": torch.zeros(300_000)}, folder / "model.safetensors",
              metadata={"format": "pt"})
    result = check_model(verify_request(folder, tmp_path))
    assert not result.loaded and "the weights are not the model's" in result.problem


def header_file(header: dict, data: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


@pytest.mark.parametrize("content", [
    b"garbage",
    b"\xff" * 64,  # a header length of 18 exabytes
    struct.pack("<Q", 9) + b"not json!",
    header_file(["a", "list"]),
    header_file({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 0]}}),
    # A header may not claim more numbers than the file holds, or a matching config would pass.
    header_file({"w": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4 * 10**9]}}, b"\0" * 16),
], ids=["short", "huge-length", "not-json", "not-a-dict", "bad-shape", "claims-missing-bytes"])
def test_a_malformed_safetensors_header_is_a_problem_not_a_crash(saved_classifier, tmp_path, content):
    folder = shutil.copytree(saved_classifier, tmp_path / "model")
    (folder / "model.safetensors").write_bytes(content)
    result = check_model(verify_request(folder, tmp_path))
    assert not result.loaded and "model.safetensors is not a valid safetensors file" in result.problem


def test_the_model_check_in_a_subprocess_turns_a_crash_into_a_problem(tmp_path):
    result = check_model_in_subprocess({"save_dir": 1}, timeout_s=120, watch_folder=tmp_path)
    assert result.problem and "failed" in result.problem and not result.loaded


def test_wilson_interval_brackets_the_rate():
    low, high = wilson_interval(450, 500)
    assert low < 0.9 < high and 0.86 < low and high < 0.93


def test_f1_and_its_bootstrap_interval():
    labels = np.array([1, 1, 0, 0, 1, 0, 1, 0] * 20)
    predicted = np.array([1, 0, 0, 0, 1, 1, 1, 0] * 20)
    assert f1_score_binary(labels, predicted) == pytest.approx(0.75)
    low, high = bootstrap_f1_interval(labels, predicted)
    assert low < 0.75 < high


def confined_check(saved_classifier, tmp_path, sandbox_flags, limits):
    from grader.sandbox import HIDDEN_SET_INSIDE, SandboxPlan, verifier_prefix
    hidden_file = tmp_path / "private" / "hidden-set.json"
    hidden_file.parent.mkdir()
    request = verify_request(saved_classifier, tmp_path)
    hidden_file.write_text(Path(request["hidden_set"]).read_text())
    workdir = saved_classifier.parent
    prefix = verifier_prefix(SandboxPlan(tuple(sandbox_flags)), workdir, hidden_file, limits)
    request.update(hidden_set=HIDDEN_SET_INSIDE, allowed_root=str(workdir))
    return check_model_in_subprocess(request, timeout_s=300, env={"HF_TOKEN": "hf_secret", **os.environ}, prefix=prefix,
                                limits=limits, watch_folder=workdir), prefix


def test_the_model_check_runs_confined_and_sees_only_its_inputs(saved_classifier, tmp_path, sandbox_flags):
    from grader.sandbox import HIDDEN_SET_INSIDE, SYSTEM_PATHS, Limits, kernel_environment, python_paths
    result, prefix = confined_check(saved_classifier, tmp_path, sandbox_flags, Limits())
    assert result.loaded and result.hidden_size == 10 and result.problem is None
    probe = ("import os, socket\n"
             f"print(sorted(os.listdir('/')), os.path.isfile({HIDDEN_SET_INSIDE!r}), os.environ.get('HF_TOKEN'))\n"
             f"try:\n    open({str(saved_classifier / 'x')!r}, 'w')\nexcept OSError as e:\n    print(e.strerror)\n"
             "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=2)\nexcept OSError as e:\n    print('no network')")
    env = kernel_environment({"HF_TOKEN": "hf_secret", **os.environ}, sandboxed=True)
    completed = subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                               timeout=60)
    listing, written, network = completed.stdout.splitlines()
    allowed = {"dev", "proc", "tmp", "run", *(name.strip("/") for name in SYSTEM_PATHS),
               *(path.parts[1] for path in map(Path, [*python_paths(), saved_classifier.parent]))}
    assert set(eval(listing.rsplit("]", 1)[0] + "]")) <= allowed, listing
    assert listing.endswith("True None") and written == "Read-only file system" and network == "no network"


def test_the_model_check_is_held_to_the_memory_limit(saved_classifier, tmp_path, sandbox_flags):
    from grader.sandbox import MB, Limits
    result, _ = confined_check(saved_classifier, tmp_path, sandbox_flags, Limits(memory_bytes=60 * MB))
    assert not result.loaded and "used more than 60 MB of memory" in result.problem


# Issue 9: the fast path (token-sized batches, bf16 where it cannot change a label) keeps every verdict.

REVIEW_WORDS = ("great excellent love perfect recommend terrible awful broken waste disappointed useless the this "
                "product book arrived it was and a for my item price quality after week use really").split()


def varied_reviews(count: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choices(REVIEW_WORDS, k=rng.randint(1, 30))) for _ in range(count)]


def plain_fp32(model, tokenizer, texts) -> np.ndarray:
    """One review at a time, no padding, fp32: the reference the fast path must agree with."""
    import torch

    with torch.no_grad():
        return np.array([torch.softmax(model(**tokenizer([text], return_tensors="pt")).logits, -1)[0].numpy()
                         for text in texts])


@pytest.fixture
def confident_classifier(saved_classifier, tmp_path):
    """The saved classifier with a head along its features' main direction, scaled so the logit gaps spread
    like a trained model's (a few units either way): bf16 answers most reviews instead of handing them all
    back to fp32, as it does for the random head, whose logits hardly depend on the review."""
    import torch
    from transformers import AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(saved_classifier).eval()
    tokenizer = AutoTokenizer.from_pretrained(saved_classifier)
    with torch.no_grad():
        features = model.base_model(**tokenizer(varied_reviews(200, seed=99), padding=True,
                                                return_tensors="pt")).pooler_output
        centre = features.mean(0)
        direction = torch.linalg.svd(features - centre, full_matrices=False).Vh[0]
        scale = 4 / ((features - centre) @ direction).std()
        model.classifier.weight.copy_(torch.stack([-direction, direction]) * scale / 2)
        model.classifier.bias.copy_(torch.stack([centre @ direction, -(centre @ direction)]) * scale / 2)
    folder = tmp_path / "student" / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


@pytest.fixture
def bf16_everywhere(monkeypatch):
    """bf16 as on a CPU with native bf16, whatever this machine has (elsewhere it is emulated: slower, as good)."""
    import grader.model_check.inference as module
    monkeypatch.setattr(module, "bf16_is_native", lambda device: True)
    return module


def bf16_off_by(module, model, spread: float, monkeypatch):
    """Make the bf16 copy's logits fp32's plus noise of up to ``spread``, so that how far bf16 strays is set
    by the test. (The tiny model's features hardly differ between reviews, so its real bf16 error is of the
    order of its gaps, and the grader rightly answers it in fp32 throughout.)"""
    import torch

    exact_logits = module.batch_logits
    noise = np.random.default_rng(0)

    def logits(used, tokenizer, texts, batch, max_length):
        if next(used.parameters()).dtype != torch.bfloat16:
            return exact_logits(used, tokenizer, texts, batch, max_length)
        answer = exact_logits(model, tokenizer, texts, batch, max_length)
        answer[:, 0] += noise.uniform(-spread, spread, size=len(batch)).astype(np.float32)
        return answer

    monkeypatch.setattr(module, "batch_logits", logits)


def test_the_fast_path_gives_the_labels_of_a_plain_fp32_loop(confident_classifier, bf16_everywhere, monkeypatch):
    _, model, tokenizer = confident_classifier
    texts = varied_reviews(96)
    reference = plain_fp32(model, tokenizer, texts)
    assert len(set(reference.argmax(-1))) == 2       # both labels occur: agreement means something
    bf16_off_by(bf16_everywhere, model, 0.05, monkeypatch)
    stats = {}
    fast = bf16_everywhere.predict_probabilities(model, tokenizer, texts, 32, labels_only=True, stats=stats,
                                                 threads=1)
    # bf16 answered most reviews; fp32 the pilot and those near the boundary
    assert stats["precision"].startswith("bf16") and stats["pilot_reviews"] < stats["fp32_reviews"] < len(texts) / 2
    assert stats["gap_threshold"] == bf16_everywhere.BF16_MIN_GAP
    assert (fast.argmax(-1) == reference.argmax(-1)).all()


def test_a_model_that_bf16_disturbs_widely_is_checked_widely(confident_classifier, bf16_everywhere, monkeypatch):
    # bf16 made far worse than it is: logits off by up to 3, more than many reviews' gaps
    _, model, tokenizer = confident_classifier
    texts = varied_reviews(96, seed=1)
    reference = plain_fp32(model, tokenizer, texts)
    gaps = np.abs(np.log(reference[:, 1]) - np.log(reference[:, 0]))
    assert (gaps < 3).sum() > 10
    bf16_off_by(bf16_everywhere, model, 3.0, monkeypatch)
    stats = {}
    fast = bf16_everywhere.predict_probabilities(model, tokenizer, texts, 32, labels_only=True, stats=stats)
    assert stats["max_bf16_error"] > 1 and stats["gap_threshold"] > 8    # the measured error widened the check
    assert (fast.argmax(-1) == reference.argmax(-1)).all()


def test_an_untrained_head_is_answered_in_fp32(saved_classifier, bf16_everywhere):
    # a random head puts every review near the boundary: bf16 would save nothing
    from transformers import AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(saved_classifier).eval()
    tokenizer = AutoTokenizer.from_pretrained(saved_classifier)
    texts = varied_reviews(40, seed=2)
    stats = {}
    fast = bf16_everywhere.predict_probabilities(model, tokenizer, texts, 32, labels_only=True, stats=stats)
    assert stats["precision"].startswith("fp32")
    assert np.abs(fast - plain_fp32(model, tokenizer, texts)).max() < 1e-5


def test_the_confidences_of_the_students_predictions_stay_fp32_exact(saved_classifier, confident_classifier,
                                                                        bf16_everywhere, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    folder, model, tokenizer = confident_classifier
    texts = varied_reviews(24, seed=3)
    reference = plain_fp32(model, tokenizer, texts)
    calls = []
    fast_path = bf16_everywhere.predict_probabilities

    def recorded(model, tokenizer, texts, max_length, *args, **options):
        calls.append((len(texts), options.get("labels_only", False)))
        return fast_path(model, tokenizer, texts, max_length, *args, **options)

    import grader.model_check.worker as worker
    monkeypatch.setattr(worker, "predict_probabilities", recorded)   # the worker's own name for it
    claims = [{"text": text, "label": ("negative", "positive")[int(row.argmax())], "confidence": float(row.max())}
              for text, row in zip(texts, reference)]
    result = worker.check_model(verify_request(folder, tmp_path, predictions=claims, torch_threads=1))
    assert result.reproduced is True and result.mismatches == []
    # bf16 may answer the hidden set's labels, never the claims, whose confidences are compared (the claims
    # come first: a model without its tokenizer is measured only when they are reproduced)
    assert calls == [(len(texts), False), (10, True)]
    # and that fp32 path, in batches of any size, gives the plain loop's confidences
    model = AutoModelForSequenceClassification.from_pretrained(saved_classifier).eval()
    tokenizer = AutoTokenizer.from_pretrained(saved_classifier)
    reference = plain_fp32(model, tokenizer, texts)
    for batch_size in (None, 5):
        again = fast_path(model, tokenizer, texts, 32, batch_size)
        assert np.abs(again.max(-1) - reference.max(-1)).max() < 1e-5
        assert (again.argmax(-1) == reference.argmax(-1)).all()


def test_batches_keep_to_the_token_budget_and_pad_little():
    from grader.model_check.inference import BATCH_TOKENS, MAX_PADDING, token_batches

    lengths = [int(length) for length in np.random.default_rng(0).integers(5, 257, size=500)]
    for indices in (None, range(0, 500, 32)):     # the whole set; a pilot spread over all lengths
        batches = token_batches(lengths, indices=indices)
        assert sorted(index for batch in batches for index in batch) == sorted(indices or range(500))
        for batch in batches:
            padded = len(batch) * max(lengths[index] for index in batch)
            assert padded <= BATCH_TOKENS and sum(lengths[index] for index in batch) >= (1 - MAX_PADDING) * padded
    assert max(map(len, token_batches(lengths, batch_size=7))) == 7


# --- one mistake, one check: a model folder without its tokenizer; confidences given as P(positive) --------
def model_predictions(folder, texts, tokenizer_folder=None) -> list[dict]:
    """The predictions the saved model makes, in the notebook's form, with their P(positive)."""
    import torch
    from transformers import AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder or folder)
    with torch.no_grad():
        probabilities = torch.softmax(model(**tokenizer(texts, padding=True, return_tensors="pt")).logits, -1)
    return [{"text": text, "label": ("negative", "positive")[int(row.argmax())], "confidence": float(row.max()),
             "positive": float(row[1])} for text, row in zip(texts, probabilities)]


REVIEWS = varied_reviews(8, seed=5)


@pytest.fixture
def without_tokenizer(confident_classifier):
    """A classifier whose predictions vary by review, saved with its weights and config only, as a student who
    forgot the tokenizer saves it; and the complete folder it came from."""
    complete = confident_classifier[0]
    folder = complete.parent / "forgot-the-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(complete / name, folder / name)
    return folder, complete


def claims_of(folder) -> list[dict]:
    return [{key: p[key] for key in ("text", "label", "confidence")} for p in model_predictions(folder, REVIEWS)]


def test_a_model_without_its_tokenizer_is_never_measured_with_another(without_tokenizer, tmp_path):
    """transformers builds an EMPTY tokenizer for such a folder (every word [UNK]): the grader must not measure
    with it, nor say the model does not reproduce its predictions."""
    folder, complete = without_tokenizer
    result = check_model(verify_request(folder, tmp_path, predictions=claims_of(complete)))
    assert result.tokenizer_missing and not result.loaded and result.accuracy is None and result.mismatches == []
    assert "no tokenizer" in result.problem and "tokenizer.save_pretrained(SAVE_DIR)" in result.problem


def test_a_model_without_its_tokenizer_is_measured_with_the_course_tokenizer_that_reproduces_it(
        without_tokenizer, tmp_path):
    folder, complete = without_tokenizer
    claims = claims_of(complete)
    result = check_model(verify_request(folder, tmp_path, predictions=claims, course_tokenizer=str(complete)))
    assert result.loaded and result.reproduced and result.tokenizer_missing and result.hidden_size == 10
    assert result.accuracy == check_model(verify_request(complete, tmp_path, predictions=claims)).accuracy


def test_a_course_tokenizer_that_does_not_reproduce_the_predictions_measures_nothing(without_tokenizer, tmp_path):
    """Another vocabulary (the words' ids reversed) is not the tokenizer the student trained with."""
    from transformers import AutoTokenizer, BertTokenizerFast

    folder, complete = without_tokenizer
    vocab = AutoTokenizer.from_pretrained(complete).get_vocab()
    words = sorted((token for token in vocab if not token.startswith("[")), key=vocab.get)
    reversed_ids = {token: index for token, index in vocab.items() if token.startswith("[")}
    reversed_ids.update(zip(words, sorted((vocab[word] for word in words), reverse=True)))
    other = tmp_path / "other-tokenizer"
    BertTokenizerFast(vocab=reversed_ids, do_lower_case=True).save_pretrained(other)
    claims = claims_of(complete)
    control = model_predictions(folder, REVIEWS, tokenizer_folder=other)
    assert any(abs(a["confidence"] - b["confidence"]) > 0.01 or a["label"] != b["label"]
               for a, b in zip(claims, control)), "the control tokenizer must change the predictions"
    result = check_model(verify_request(folder, tmp_path, predictions=claims, course_tokenizer=str(other)))
    assert not result.loaded and result.accuracy is None and result.tokenizer_missing
    assert "does not reproduce" in result.problem


def test_confidences_given_as_p_positive_are_the_models_predictions_read_another_way(confident_classifier,
                                                                                      tmp_path):
    folder = confident_classifier[0]
    made = model_predictions(folder, REVIEWS)
    assert {p["label"] for p in made} == {"negative", "positive"}, "the control needs a negative prediction"
    as_positive = [{"text": p["text"], "label": p["label"], "confidence": p["positive"]} for p in made]
    result = check_model(verify_request(folder, tmp_path, predictions=as_positive))
    assert result.reproduced and result.confidence_is_positive_probability and result.mismatches == []
    result = check_model(verify_request(folder, tmp_path, predictions=claims_of(folder)))
    assert result.reproduced and not result.confidence_is_positive_probability
    # P(positive) with the labels swapped is no reading of this model's predictions
    swapped = [dict(p, label="positive" if p["label"] == "negative" else "negative") for p in as_positive]
    assert not check_model(verify_request(folder, tmp_path, predictions=swapped)).reproduced
