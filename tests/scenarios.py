"""Fixture submissions, each named after its scenario and built from the answer key by one edit.

Each edit names the cell it changes and the exact text it replaces, and fails loudly when the
answer key no longer contains that text, so the fixtures cannot drift from the key.
``EXPECTED`` is the golden verdict: the checks each scenario must fail and must pass.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.build import ANSWER_KEY, build_template
from grader.rubric import CHECKS


def _cell(nb, cell_id):
    return next(cell for cell in nb.cells if cell.get("id") == cell_id)


def _replace(nb, cell_id, old, new):
    cell = _cell(nb, cell_id)
    if old not in cell.source:
        raise AssertionError(f"scenario edit no longer applies: {old!r} not in cell {cell_id!r} of the answer key")
    cell.source = cell.source.replace(old, new)


def _insert_after(nb, cell_id, source):
    index = next(i for i, cell in enumerate(nb.cells) if cell.get("id") == cell_id)
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))


def passes(nb):
    return nb


def below_threshold(nb):
    _replace(nb, "training-args", "learning_rate=LEARNING_RATE", "learning_rate=1e-9")


def raises_midway(nb):
    _replace(nb, "examples", 'examples = splits["train"]', 'examples = split["train"]')


def too_few_predictions(nb):
    _insert_after(nb, "course-reviews", "predictions = predictions[:3]")


def one_label_only(nb):
    _insert_after(nb, "course-reviews", 'predictions = [p for p in predictions if p["label"] == "positive"] * 3')


def no_save(nb):
    _replace(nb, "save-reload", "trainer.model.save_pretrained(SAVE_DIR)", "pass  # forgot to save")


def reload_differs(nb):
    _insert_after(nb, "course-reviews", 'predictions = [dict(p, confidence=0.999) for p in predictions]')


def infinite_loop(nb):
    _insert_after(nb, "seed", "while True:\n    pass")


def prints_fake_metrics(nb):
    below_threshold(nb)
    _insert_after(nb, "test-eval", 'test_metrics = {"accuracy": 0.97, "precision": 0.96, "recall": 0.98, "f1": 0.97}\n'
                                   'print(test_metrics)')


def metadata_stripped(nb):
    for cell in nb.cells:
        cell.metadata = {}


@dataclass(frozen=True)
class Expected:
    fails: frozenset = frozenset()
    passes: frozenset = frozenset()
    status: str = "graded"


def _expect(fails=(), passes=None):
    passes = set(CHECKS) - set(fails) if passes is None else passes
    return Expected(frozenset(fails), frozenset(passes))


EDITS = {
    "passes": passes,
    "below-threshold": below_threshold,
    "raises-midway": raises_midway,
    "too-few-predictions": too_few_predictions,
    "one-label-only": one_label_only,
    "no-save": no_save,
    "reload-differs": reload_differs,
    "infinite-loop": infinite_loop,
    "prints-fake-metrics": prints_fake_metrics,
    "metadata-stripped": metadata_stripped,
}

EXPECTED = {
    "passes": _expect(),
    "metadata-stripped": _expect(),
    # An untrained classifier: its figures fail; whatever it predicts, it still reloads.
    "below-threshold": _expect(fails={"accuracy", "f1"}, passes={"ran_to_end", "no_todo_left", "reload"}),
    "raises-midway": _expect(fails={"ran_to_end"}),
    "too-few-predictions": _expect(fails={"predictions"}),
    "one-label-only": _expect(fails={"predictions"}),
    # Nothing saved: the reload cell raises, and there is no model to measure.
    "no-save": _expect(fails={"ran_to_end", "accuracy", "f1", "reload"}, passes={"no_todo_left", "predictions"}),
    "reload-differs": _expect(fails={"reload"}),
    "infinite-loop": _expect(fails=set(CHECKS) - {"no_todo_left"}, passes={"no_todo_left"}),
    "prints-fake-metrics": _expect(fails={"accuracy", "f1"}, passes={"ran_to_end", "no_todo_left", "reload"}),
    "todo-left": _expect(fails=set(CHECKS), passes=set()),
    "not-json": Expected(status="not gradable"),
}


def write_scenarios(folder: Path, names=None) -> Path:
    """Write ``<scenario>.ipynb`` for each scenario into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = nbformat.read(ANSWER_KEY, as_version=4)
    for name in names or EXPECTED:
        path = folder / f"{name}.ipynb"
        if name == "not-json":
            path.write_text("this is not a notebook {", encoding="utf-8")
        elif name == "todo-left":
            nbformat.write(build_template(), path)
        else:
            nb = copy.deepcopy(key)
            EDITS[name](nb)
            nbformat.write(nb, path)
    return folder
