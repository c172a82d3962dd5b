import nbformat

from grader.contract import CONTRACT_CELL_ID, CONTRACT_MIME, read_contract


def executed_with(payload):
    cell = nbformat.v4.new_code_cell("", id=CONTRACT_CELL_ID)
    cell.outputs = [nbformat.v4.new_output("display_data", data={CONTRACT_MIME: payload})]
    return nbformat.v4.new_notebook(cells=[cell])


GOOD = {"test_metrics": {"accuracy": 0.9, "precision": 0.88, "recall": 0.93, "f1": 0.905},
        "predictions": [{"text": "great", "label": "positive", "confidence": 0.97},
                        {"text": "awful", "label": 0, "confidence": 0.91}],
        "SAVE_DIR": "outputs/sentiment-model"}


def test_a_well_formed_contract_is_read():
    contract = read_contract(executed_with(GOOD))
    assert contract.problems == []
    assert contract.test_metrics["f1"] == 0.905
    assert [p.label for p in contract.predictions] == ["positive", "negative"]
    assert contract.save_dir == "outputs/sentiment-model"


def test_trainer_style_metric_names_are_accepted():
    payload = dict(GOOD, test_metrics={"test_accuracy": 0.9, "test_precision": 0.9, "test_recall": 0.9, "test_f1": 0.9})
    assert read_contract(executed_with(payload)).test_metrics["accuracy"] == 0.9


def test_missing_and_malformed_values_are_problems_not_crashes():
    payload = {"test_metrics": {"accuracy": "high"}, "predictions": [{"text": "x", "label": "meh", "confidence": 2},
                                                                     "not a dict"], "SAVE_DIR": 3}
    contract = read_contract(executed_with(payload))
    assert contract.predictions == [] and contract.save_dir is None
    assert any("accuracy" in p for p in contract.problems)
    assert any("predictions[0]" in p for p in contract.problems)
    assert any("predictions[1]" in p for p in contract.problems)
    assert any("SAVE_DIR" in p for p in contract.problems)


def test_a_notebook_whose_kernel_never_reached_the_contract_cell():
    contract = read_contract(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")]))
    assert contract.problems and "could not read" in contract.problems[0]


def test_undefined_names_are_reported():
    contract = read_contract(executed_with({"test_metrics": GOOD["test_metrics"]}))
    assert "predictions is not defined" in contract.problems and "SAVE_DIR is not defined" in contract.problems
