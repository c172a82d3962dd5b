"""The answer key and the template, executed headless with the tiny model (seconds, not minutes)."""
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from grader.build import ANSWER_KEY, build_template
from grader.contract import append_contract_cell, read_contract
from grader.parameters import inject_parameters


# Appended after the answer key's last cell: facts of the kernel the outputs do not show.
PROBE = """
import json as _json
print("PROBE " + _json.dumps({
    # the error analysis pairs each test review's text with its own label and prediction
    "texts_match_labels": list(test_frame["true"]) == [LABEL_NAMES[label] for label in splits["test"]["label"]],
    "table_accuracy": float(model_comparison.loc["fine-tuned", "accuracy"]),
    "test_accuracy": test_metrics["accuracy"],
    "table_rows": list(model_comparison.index),
    "table_columns": list(model_comparison.columns),
    "mcnemar_p_value": mcnemar_p_value,
}))
"""


def execute(nb, workdir, parameters, probe=False):
    inject_parameters(nb, dict(parameters, OUTPUT_DIR=str(workdir / "outputs")))
    if probe:
        nb.cells.append(nbformat.v4.new_code_cell(PROBE, id="probe"))
    append_contract_cell(nb)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


@pytest.fixture(scope="module")
def executed_answer_key(tiny_parameters, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("answer-key")
    return execute(nbformat.read(ANSWER_KEY, as_version=4), workdir, tiny_parameters, probe=True), workdir


def test_the_answer_key_runs_end_to_end_and_fills_the_contract(executed_answer_key):
    nb, tmp_path = executed_answer_key
    contract = read_contract(nb)
    assert contract.problems == []
    assert set(contract.test_metrics) == {"accuracy", "precision", "recall", "f1"}
    assert contract.test_metrics["accuracy"] >= 0.85 and contract.test_metrics["f1"] >= 0.85
    assert len(contract.predictions) >= 5 and {p.label for p in contract.predictions} == {"negative", "positive"}
    assert all(0.5 <= p.confidence <= 1 for p in contract.predictions)
    saved = tmp_path / contract.save_dir
    assert (saved / "model.safetensors").is_file() and (saved / "tokenizer_config.json").is_file()
    outputs = {cell.get("id"): cell.get("outputs", []) for cell in nb.cells}
    # the speed settings the notebook picks for this machine: length-grouped batches, whichever way this
    # transformers spells them; mixed precision where the machine has it, and the reload check still
    # passes, because the model predicts in fp32 after training
    assert "group_by_length" in "".join(o.get("text", "") for o in outputs["training-args"])
    assert any("OK:" in o.get("text", "") for o in outputs["check-reload"])
    assert any("image/png" in o.get("data", {}) for o in outputs["curves"])       # training curves
    assert any("image/png" in o.get("data", {}) for o in outputs["test-eval"])    # confusion matrix and ROC


def test_the_answer_key_compares_baselines_and_writes_the_report_files(executed_answer_key, tiny_parameters):
    nb, workdir = executed_answer_key
    outputs = {cell.get("id"): cell.get("outputs", []) for cell in nb.cells}
    text = {cell_id: "".join(o.get("text", "") for o in cell_outputs) for cell_id, cell_outputs in outputs.items()}
    probe = json.loads(text["probe"].split("PROBE ", 1)[1])
    assert probe["texts_match_labels"]
    assert probe["table_rows"] == ["majority class", "TF-IDF + logistic regression", "pre-trained, not fine-tuned",
                                   "fine-tuned"]
    assert probe["table_columns"] == ["accuracy", "F1", "macro F1", "ROC-AUC"]
    assert probe["table_accuracy"] == pytest.approx(probe["test_accuracy"])   # one set of predictions, two views
    assert 0 <= probe["mcnemar_p_value"] <= 1 and "McNemar's exact test: p =" in text["mcnemar"]
    assert any("text/html" in o.get("data", {}) for o in outputs["baselines-table"])
    assert text["tfidf-self-check"].startswith("OK:") and text["report-self-check"].startswith("OK:")
    for pattern in ["negation", "mixed verdict", "cut at MAX_LENGTH", "label noise?"]:
        assert pattern in text["error-analysis"]
    saved = workdir / read_contract(nb).save_dir
    results = json.loads((saved / "results.json").read_text(encoding="utf-8"))
    assert results["test_metrics"] == pytest.approx(read_contract(nb).test_metrics)
    assert len(results["validation_per_epoch"]) == tiny_parameters["NUM_EPOCHS"]
    assert results["baselines"]["fine-tuned"]["accuracy"] == pytest.approx(probe["test_accuracy"])
    card = (saved / "README.md").read_text(encoding="utf-8")
    assert "## Limitations" in card and f"| fine-tuned | {probe['test_accuracy']:.3f} |" in card


def test_the_template_stops_at_the_first_todo(tiny_parameters, tmp_path):
    with pytest.raises(CellExecutionError) as raised:
        execute(build_template(), tmp_path, tiny_parameters)
    assert raised.value.ename == "NotImplementedError"
    assert "TODO" in raised.value.evalue
    # the first TODO is the first solution region of the answer key
    assert "combine_title_and_content" in str(raised.value)


def self_check_source(cell_id):
    return next(cell.source for cell in nbformat.read(ANSWER_KEY, as_version=4).cells if cell.get("id") == cell_id)


@pytest.mark.parametrize("mistake, message", [
    ("negative column", "column 1"),     # predict_proba[:, 0]: P(negative)
    ("labels", "probability"),           # predict() instead of predict_proba
    ("too few", "one score per test review"),
])
def test_the_tfidf_self_check_catches_a_wrong_pipeline(mistake, message):
    import numpy as np
    from sklearn.metrics import accuracy_score

    test_labels = np.array([0, 1] * 50)
    good = np.where(test_labels == 1, 0.8, 0.2)
    scores = {"negative column": 1 - good, "labels": test_labels * 2, "too few": good[:10]}[mistake]
    namespace = {"np": np, "accuracy_score": accuracy_score, "test_labels": test_labels,
                 "baseline_scores": {"TF-IDF + logistic regression": scores}}
    with pytest.raises(AssertionError, match=message):
        exec(self_check_source("tfidf-self-check"), namespace)
    namespace["baseline_scores"]["TF-IDF + logistic regression"] = good
    exec(self_check_source("tfidf-self-check"), namespace)   # and a right one passes


def test_the_report_self_check_catches_a_missing_section(executed_answer_key):
    nb, workdir = executed_answer_key
    save_dir = workdir / read_contract(nb).save_dir
    results = json.loads((save_dir / "results.json").read_text(encoding="utf-8"))
    card = (save_dir / "README.md").read_text(encoding="utf-8")
    namespace = {"os": os, "json": json, "SAVE_DIR": str(save_dir), "test_metrics": results["test_metrics"]}
    exec(self_check_source("report-self-check"), namespace)   # the run's own files pass
    (save_dir / "README.md").write_text(card.replace("## Limitations", "## Notes"), encoding="utf-8")
    with pytest.raises(AssertionError, match="Limitations"):
        exec(self_check_source("report-self-check"), namespace)
    namespace["test_metrics"] = dict(results["test_metrics"], accuracy=results["test_metrics"]["accuracy"] - 0.25)
    (save_dir / "README.md").write_text(card, encoding="utf-8")
    with pytest.raises(AssertionError, match="not this run's"):
        exec(self_check_source("report-self-check"), namespace)
