"""The optional going-further notebook (LoRA, a hyperparameter search, other datasets): its build, its rubric,
and its code path on every dataset of its registry, headless with the tiny model (seconds)."""
import json
import re
import tomllib

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from grader import build, cli
from grader.build import GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE, ROOT, STUB, build_template
from grader.contract import append_contract_cell
from grader.errors import TemplateOutOfDate
from grader.execute import CellError
from grader.parameters import inject_parameters
from grader.rubric import load_rubric, notebook_errors, self_check_digests, source_digest

GOING_FURTHER_RUBRIC = ROOT / "grader" / "rubrics" / "going_further.toml"


def key():
    return nbformat.read(GOING_FURTHER_ANSWER_KEY, as_version=4)


def cell(nb, cell_id):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def execute(nb, workdir, parameters):
    inject_parameters(nb, dict(parameters, OUTPUT_DIR=str(workdir / "outputs")))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


# --- build ----------------------------------------------------------------------------------
def test_the_committed_going_further_template_is_a_fresh_build():
    build.check_template(GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE)


def test_grade_build_check_covers_both_notebooks_by_default(capsys):
    assert (GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE) in build.NOTEBOOKS
    assert cli.main(["build", "--check"]) == 0
    out = capsys.readouterr().out
    assert "MLB_Project_FineTuning_Template.ipynb is up to date" in out
    assert "MLB_Project_GoingFurther_Template.ipynb is up to date" in out


def test_grade_build_check_fails_on_a_stale_going_further_template(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "going-further.ipynb"
    build.write_template(GOING_FURTHER_ANSWER_KEY, stale)
    stale.write_text(stale.read_text(encoding="utf-8").replace("LoRA", "Lora", 1), encoding="utf-8")
    with pytest.raises(TemplateOutOfDate, match="grade build"):
        build.check_template(GOING_FURTHER_ANSWER_KEY, stale)
    monkeypatch.setattr(build, "NOTEBOOKS", ((build.ANSWER_KEY, build.TEMPLATE), (GOING_FURTHER_ANSWER_KEY, stale)))
    assert cli.main(["build", "--check"]) == 1
    assert "going-further.ipynb differs" in capsys.readouterr().err


def test_grade_build_writes_both_templates(tmp_path, monkeypatch, capsys):
    pairs = ((build.ANSWER_KEY, tmp_path / "main.ipynb"), (GOING_FURTHER_ANSWER_KEY, tmp_path / "gf.ipynb"))
    monkeypatch.setattr(build, "NOTEBOOKS", pairs)
    assert cli.main(["build"]) == 0
    for answer_key, template in pairs:
        build.check_template(answer_key, template)


def test_the_template_has_a_stub_under_each_todo_and_no_solution():
    template = build_template(GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE)
    solutions = [c.id for c in key().cells if "### BEGIN SOLUTION" in c.source]
    assert solutions == ["lora-config", "choose-best", "merge-save"]
    source = "\n".join(c.source for c in template.cells if c.cell_type == "code")
    for leaked in ["LoraConfig(task_type=TaskType.SEQ_CLS", 'search_table["validation F1"].idxmax()',
                   "merged_model.save_pretrained(SAVE_DIR)"]:
        assert leaked not in source
    for solution_id in solutions:
        stubbed = cell(template, solution_id).source
        assert STUB in stubbed and stubbed.index("# TODO") < stubbed.index(STUB)
    assert "notebooks/MLB_Project_GoingFurther_Template.ipynb" in template.cells[0].source


def test_its_checks_are_locked_and_only_the_rubric_mirrors_are_named_check():
    template = build_template(GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE)
    locked = [c.id for c in template.cells if c.metadata.get("editable") is False]
    assert locked == ["verify-lora-share", "verify-search", "verify-test-once",
                      "check-accuracy", "check-f1", "check-predictions", "check-reload", "submit"]


@pytest.mark.parametrize("path", [GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE], ids=["answer-key", "template"])
def test_it_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")


def test_its_parameters_default_to_the_course_and_amazon_polarity():
    tagged = [c for c in key().cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    namespace = {}
    exec(tagged[0].source, namespace)
    assert namespace["DATASET"] == "amazon_polarity" and namespace["LOCAL_DATA_DIR"] is None
    assert len(namespace["SEARCH_SETTINGS"]) == 3 and namespace["MODEL_NAME"] == "distilbert-base-uncased"
    registry = {}
    exec(cell(key(), "datasets-registry").source.split("if DATASET")[0], registry)
    assert {name: (spec["hub_id"], spec["hub_config"]) for name, spec in registry["DATASETS"].items()} == {
        "amazon_polarity": ("fancyzhx/amazon_polarity", None), "imdb": ("stanfordnlp/imdb", None),
        "sst2": ("glue", "sst2")}


def test_the_install_cell_installs_peft_when_it_is_missing():
    source = cell(key(), "install").source
    assert '"peft": "0.18.1"' in source and "pip" in source


# --- rubric ---------------------------------------------------------------------------------
def test_self_check_digests_cover_every_answer_key():
    main_checks = {source_digest(c.source) for c in nbformat.read(build.ANSWER_KEY, as_version=4).cells
                   if c.get("id", "").startswith("check-")}
    gf_checks = {source_digest(c.source) for c in key().cells if c.get("id", "").startswith("check-")}
    assert gf_checks - main_checks, "the going-further key must have a self-check of its own to make this test bite"
    assert main_checks | gf_checks <= self_check_digests()


def test_a_failing_going_further_self_check_is_scored_by_its_rubric_check_and_its_verify_cells_are_errors():
    gf = key()
    own_check = cell(gf, "check-accuracy")
    verify = [cell(gf, name) for name in ("verify-lora-share", "verify-search", "verify-test-once")]
    failing_check = CellError(40, "check-accuracy", own_check.source, "AssertionError", "low", "")
    failing_verify = [CellError(37, c.id, c.source, "AssertionError", "no", "") for c in verify]
    assert notebook_errors([failing_check, *failing_verify]) == failing_verify


def test_the_going_further_rubric_gives_bonus_points_and_is_package_data():
    rubric = load_rubric(GOING_FURTHER_RUBRIC)
    assert 0 < rubric.max_points <= 25 and all(rubric.points.values())
    assert "bonus" in GOING_FURTHER_RUBRIC.read_text(encoding="utf-8").lower()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    assert "rubrics/*.toml" in package_data["grader"]


def test_the_check_cells_use_the_rubric_thresholds():
    rubric = load_rubric(GOING_FURTHER_RUBRIC)
    for name in ("accuracy", "f1"):
        thresholds = re.findall(rf'test_metrics\["{name}"\]\s*>=\s*([0-9.]+)', cell(key(), f"check-{name}").source)
        assert thresholds and {float(t) for t in thresholds} == {getattr(rubric, name)}, (name, thresholds)


# --- running it -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_going_further(tiny_model_dir):
    return {"MODEL_NAME": str(tiny_model_dir), "SUBSET_SIZE": 200, "MAX_LENGTH": 32, "NUM_EPOCHS": 1,
            "SEARCH_SETTINGS": [[0.003, 1], [0.01, 1], [0.02, 1]]}


def test_the_template_stops_at_its_first_todo(tiny_going_further, shared_data, tmp_path):
    with pytest.raises(CellExecutionError) as raised:
        execute(build_template(GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE), tmp_path,
                dict(tiny_going_further, LOCAL_DATA_DIR=str(shared_data)))
    assert raised.value.ename == "NotImplementedError" and "TODO" in raised.value.evalue
    assert "make_lora_model" in str(raised.value)   # the LoraConfig, the first TODO


PROBE = """
import json
print(json.dumps({"labels": label_table.to_dict(orient="list"), "sizes": {n: len(p) for n, p in splits.items()},
                  "texts": splits["train"]["text"][:50], "features": str(data.features["label"]),
                  "lengths": max(len(ids) for ids in tokenized["train"]["input_ids"]),
                  "targets": TARGET_MODULES, "head": HEAD_MODULES}))
"""


@pytest.mark.parametrize("dataset", ["sst2", "imdb", "amazon_polarity"])
def test_each_dataset_goes_through_the_same_code_path(dataset, tiny_going_further, shared_data, tmp_path):
    nb = key()
    ids = [c.get("id") for c in nb.cells]
    nb.cells = nb.cells[:ids.index("lora-targets") + 1] + [nbformat.v4.new_code_cell(PROBE)]
    execute(nb, tmp_path, dict(tiny_going_further, DATASET=dataset, LOCAL_DATA_DIR=str(shared_data)))
    probe = json.loads(nb.cells[-1].outputs[0]["text"])
    assert probe["labels"]["name"] == ["negative", "positive"]
    assert all(count > 0 for count in probe["labels"]["examples"])
    assert "negative" in probe["features"] and "positive" in probe["features"]
    assert probe["sizes"] == {"train": 140, "validation": 30, "test": 30}
    assert all(text.strip() and "<br />" not in text for text in probe["texts"])
    assert probe["lengths"] <= 32
    assert probe["targets"] == ["query", "value"] and "classifier" in probe["head"]
    # the label mapping is shown in the notebook
    shown = cell(nb, "label-mapping").outputs
    assert any("negative" in o.get("data", {}).get("text/plain", "") for o in shown)


def test_an_unknown_dataset_is_refused_with_the_choices(tiny_going_further, shared_data, tmp_path):
    nb = key()
    ids = [c.get("id") for c in nb.cells]
    nb.cells = nb.cells[:ids.index("datasets-registry") + 1]
    with pytest.raises(CellExecutionError, match="choose one of"):
        execute(nb, tmp_path, dict(tiny_going_further, DATASET="yelp", LOCAL_DATA_DIR=str(shared_data)))


def test_lora_targets_are_found_in_distilbert_and_bert():
    import torch
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, \
        DistilBertForSequenceClassification

    namespace = {"MODEL_NAME": "test"}
    exec(cell(key(), "lora-targets").source.split("\n\n\nTARGET_MODULES")[0], namespace)
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32))
    distil = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2,
                                                                  hidden_dim=32))
    assert namespace["lora_module_names"](bert) == (
        ["query", "value"], ["query", "key", "value", "attention.output.dense"], ["pooler", "classifier"])
    assert namespace["lora_module_names"](distil) == (
        ["q_lin", "v_lin"], ["q_lin", "k_lin", "v_lin", "out_lin"], ["pre_classifier", "classifier"])


def test_the_whole_notebook_runs_and_a_second_look_at_the_test_split_fails_it(tiny_going_further, shared_data,
                                                                              tmp_path):
    """The tiny model end to end (it learns little: only the checks of quality may fail), with one extra
    evaluation on the test split slipped in after the chosen model's: verify-test-once must catch it."""
    nb = key()
    ids = [c.get("id") for c in nb.cells]
    nb.cells.insert(ids.index("test-eval") + 1, nbformat.v4.new_code_cell("evaluate_on_test(best_trainer)"))
    inject_parameters(nb, dict(tiny_going_further, LOCAL_DATA_DIR=str(shared_data), DATASET="sst2",
                               OUTPUT_DIR=str(tmp_path / "outputs")))
    append_contract_cell(nb)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = {c.get("id"): o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"}
    assert "verify-test-once" in errors and "evaluated 2 times" in errors["verify-test-once"]["evalue"]
    assert set(errors) <= {"verify-test-once", "verify-lora-share", "check-accuracy", "check-f1", "check-predictions"}
    assert "no adapter file" in "".join(o.get("text", "") for o in cell(nb, "merge-save").outputs)
    assert any("image/png" in o.get("data", {}) for o in cell(nb, "search-plot").outputs)
    from grader.contract import read_contract
    contract = read_contract(nb)
    assert contract.problems == [] and len(contract.predictions) == 6
