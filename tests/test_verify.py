"""The out-of-kernel model check: what it refuses to load, and its statistics."""
import json
import os

import numpy as np
import pytest
from transformers import AutoModelForSequenceClassification

from grader.verify import (bootstrap_f1_interval, f1_score_binary, model_folder_problem, verify,
                           verify_in_subprocess, wilson_interval)


@pytest.fixture(scope="module")
def saved_classifier(tiny_model_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("student") / "model"
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


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


def test_verify_measures_the_model_and_checks_the_claimed_predictions(saved_classifier, tmp_path):
    hidden = [{"text": "great product", "label": 1}, {"text": "awful product", "label": 0}] * 5
    (tmp_path / "hidden.json").write_text(json.dumps(hidden))
    request = {"save_dir": str(saved_classifier), "allowed_root": str(saved_classifier.parent),
               "hidden_set": str(tmp_path / "hidden.json"), "max_length": 32,
               "predictions": [{"text": "great product", "label": "positive", "confidence": 0.5}]}
    result = verify(request)
    assert result.loaded and result.hidden_size == 10
    assert 0 <= result.accuracy <= 1 and result.accuracy_ci[0] <= result.accuracy <= result.accuracy_ci[1]
    # An untrained head cannot be exactly 0.5 confident and positive at once, except by chance:
    # the claim is checked against what the model really says.
    assert result.reproduced is (not result.mismatches)


def test_verify_in_subprocess_turns_a_crash_into_a_problem(tmp_path):
    result = verify_in_subprocess({"save_dir": 1}, tmp_path, timeout_s=120)
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
