"""The answer key and the template, executed headless with the tiny model (seconds, not minutes)."""
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from grader.build import ANSWER_KEY, build_template
from grader.contract import append_contract_cell, read_contract
from grader.parameters import inject_parameters


def execute(nb, workdir, parameters):
    inject_parameters(nb, dict(parameters, OUTPUT_DIR=str(workdir / "outputs")))
    append_contract_cell(nb)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def test_the_answer_key_runs_end_to_end_and_fills_the_contract(tiny_parameters, tmp_path):
    nb = execute(nbformat.read(ANSWER_KEY, as_version=4), tmp_path, tiny_parameters)
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
    assert any("image/png" in o.get("data", {}) for o in outputs["test-eval"])    # confusion matrix


def test_the_template_stops_at_the_first_todo(tiny_parameters, tmp_path):
    with pytest.raises(CellExecutionError) as raised:
        execute(build_template(), tmp_path, tiny_parameters)
    assert raised.value.ename == "NotImplementedError"
    assert "TODO" in raised.value.evalue
    # the first TODO is the first solution region of the answer key
    assert "combine_title_and_content" in str(raised.value)
