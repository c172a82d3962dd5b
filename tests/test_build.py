"""The student template is a build product of the answer key."""
import nbformat
import pytest

from grader.build import ANSWER_KEY, STUB, TEMPLATE, build_template, check_template, write_template
from grader.errors import TemplateOutOfDate


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_committed_template_is_a_fresh_build():
    check_template()  # raises TemplateOutOfDate, naming the fix, when it differs by one byte


def test_check_template_fails_on_a_stale_template(tmp_path):
    stale = tmp_path / "template.ipynb"
    write_template(ANSWER_KEY, stale)
    stale.write_text(stale.read_text(encoding="utf-8").replace("Set-up", "Setup"), encoding="utf-8")
    with pytest.raises(TemplateOutOfDate, match="grade build"):
        check_template(ANSWER_KEY, stale)


def test_every_solution_region_becomes_a_stub_under_its_todo():
    key = nbformat.read(ANSWER_KEY, as_version=4)
    template = build_template()
    solution_ids = [c.id for c in code_cells(key) if "### BEGIN SOLUTION" in c.source]
    assert len(solution_ids) >= 8
    for cell in code_cells(template):
        assert "BEGIN SOLUTION" not in cell.source and "END SOLUTION" not in cell.source
        if cell.id in solution_ids:
            assert STUB in cell.source
            assert cell.source.index("# TODO") < cell.source.index(STUB), cell.id


def test_no_solution_code_leaks_into_the_template():
    template_source = "\n".join(c.source for c in code_cells(build_template()))
    for leaked in ["stratify_by_column=\"label\", seed=SEED)\nvalidation_test", "precision_recall_fscore_support(\n",
                   "trainer.model.save_pretrained(SAVE_DIR)", "torch.softmax(model(**inputs)"]:
        assert leaked not in template_source


def test_self_checks_are_locked_and_kept():
    checks = [c for c in code_cells(build_template()) if c.metadata.get("nbgrader", {}).get("grade")]
    assert [c.id for c in checks] == ["check-accuracy", "check-f1", "check-predictions", "check-reload"]
    assert all(c.metadata["deletable"] is False and c.metadata["editable"] is False for c in checks)


def test_the_short_questions_are_answer_cells_graded_by_hand_with_the_stub_in_the_template():
    """nbgrader's way: markdown cells that are solution and grade cells (manual grading), 0 points here."""
    key = {c.id: c for c in nbformat.read(ANSWER_KEY, as_version=4).cells}
    answers = [c for c in build_template().cells if c.cell_type == "markdown" and c.metadata.get("nbgrader")]
    assert [c.id for c in answers] == ["q-validation-split", "q-dynamic-padding", "q-mcnemar", "q-error-analysis"]
    for cell in answers:
        grading = cell.metadata["nbgrader"]
        assert grading["solution"] and grading["grade"] and not grading["locked"] and grading["points"] == 0
        assert cell.source == "YOUR ANSWER HERE" != key[cell.id].source   # the model answer stays in the key
        assert cell.metadata.get("editable", True) and key[f"{cell.id}-md"].source.startswith("**Question")


def test_the_template_opens_itself_in_colab():
    intro = build_template().cells[0].source
    assert "notebooks/MLB_Project_FineTuning_Template.ipynb" in intro and "answer_key/" not in intro


@pytest.mark.parametrize("path", [ANSWER_KEY, TEMPLATE], ids=["answer-key", "template"])
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert all(not c.outputs and c.execution_count is None for c in code_cells(nb))


def test_the_answer_key_has_one_tagged_parameters_cell_with_the_course_defaults():
    nb = nbformat.read(ANSWER_KEY, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    namespace = {}
    exec(tagged[0].source, namespace)
    assert namespace["MODEL_NAME"] == "distilbert-base-uncased"
    assert namespace["DATASET_ID"] == "fancyzhx/amazon_polarity"
    assert namespace["LOCAL_DATA_DIR"] is None and namespace["SUBSET_SIZE"] == 5000
