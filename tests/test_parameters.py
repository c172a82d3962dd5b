import nbformat
import pytest

from grader.errors import ConfigError, ParametersCellNotFound
from grader.parameters import find_parameters_cell, inject_parameters, parse_override


def notebook(*sources, tag_index=None):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    if tag_index is not None:
        nb.cells[tag_index].metadata["tags"] = ["parameters"]
    return nb


def run(nb):
    namespace = {}
    for cell in nb.cells:
        exec(cell.source, namespace)
    return namespace


def test_overrides_go_right_after_the_tagged_cell_and_win():
    nb = notebook("import os", "EPOCHS = 3\nMODEL = 'a'", "RESULT = (EPOCHS, MODEL)", tag_index=1)
    inject_parameters(nb, {"EPOCHS": 1, "MODEL": "/models/mini"})
    assert nb.cells[2].metadata["tags"] == ["injected-parameters"]
    assert run(nb)["RESULT"] == (1, "/models/mini")


def test_without_the_tag_the_cell_is_found_by_the_names_it_assigns():
    nb = notebook("import os", "EPOCHS = 3\nMODEL = 'a'", "RESULT = EPOCHS")
    assert find_parameters_cell(nb, {"EPOCHS", "MODEL"}) == 1
    inject_parameters(nb, {"EPOCHS": 2})
    assert run(nb)["RESULT"] == 2


def test_no_parameters_cell_is_a_typed_error():
    with pytest.raises(ParametersCellNotFound, match="EPOCHS"):
        inject_parameters(notebook("x = 1"), {"EPOCHS": 2})


def test_no_overrides_leaves_the_notebook_alone():
    nb = notebook("x = 1")
    assert len(inject_parameters(nb, {}).cells) == 1


@pytest.mark.parametrize("text, expected", [
    ("NUM_EPOCHS=2", ("NUM_EPOCHS", 2)),
    ("LEARNING_RATE=2e-5", ("LEARNING_RATE", 2e-5)),
    ("LOCAL_DATA_DIR=null", ("LOCAL_DATA_DIR", None)),
    ("MODEL_NAME=/opt/models/minilm", ("MODEL_NAME", "/opt/models/minilm")),
    ("NAME=a=b", ("NAME", "a=b")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["EPOCHS", "=3", "1X=2"])
def test_parse_override_rejects_malformed(text):
    with pytest.raises(ConfigError):
        parse_override(text)
