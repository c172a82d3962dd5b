"""The contract between a notebook and the grader: three variables left in the kernel.

The grader appends one cell of its own that serialises them to JSON and displays the result
under a MIME type of its own. The grader reads that cell's output only (never pickle, never the
student's check cells), then checks the shape of what came back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import nbformat

from .course import LABELS
from .lists import capped

CONTRACT_MIME = "application/vnd.finetune-grader.contract+json"
CONTRACT_CELL_ID = "grader-contract"
CONTRACT_TAG = "grader"
CONTRACT_NAMES = ("test_metrics", "predictions", "SAVE_DIR")
METRIC_NAMES = ("accuracy", "precision", "recall", "f1")
# A result must stay small whatever the notebook holds: a list of 200,000 zeros as ``predictions`` is one
# problem line and a count, not 200,000 lines. The course asks for 5 predictions; the model check re-predicts
# each one, so only the first MAX_PREDICTIONS are read.
MAX_PREDICTIONS = 100

# Runs in the student's kernel. Names start with an underscore to stay out of the student's way.
CONTRACT_CELL_SOURCE = f'''
def _grader_contract():
    import json as _json
    from IPython.display import display as _display

    def _plain(value):
        if hasattr(value, "item"):      # NumPy and PyTorch scalars
            return value.item()
        if hasattr(value, "tolist"):
            return value.tolist()
        return repr(value)

    _found = {{}}
    for _name in {CONTRACT_NAMES!r}:
        if _name in globals():
            try:
                _found[_name] = _json.loads(_json.dumps(globals()[_name], default=_plain))
            except (TypeError, ValueError) as _error:
                _found[_name] = {{"__unserialisable__": repr(_error)}}
    _display({{{CONTRACT_MIME!r}: _found}}, raw=True)


_grader_contract()
'''.strip()


@dataclass
class Prediction:
    text: str
    label: str
    confidence: float
    label_was_id: bool = False   # the notebook gave the label as its id (0/1), not its name


@dataclass
class Contract:
    """What the notebook reported, with the problems found in its shape."""

    test_metrics: dict[str, float] = field(default_factory=dict)
    predictions: list[Prediction] = field(default_factory=list)
    save_dir: str | None = None
    problems: list[str] = field(default_factory=list)


def append_contract_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(CONTRACT_CELL_SOURCE, id=CONTRACT_CELL_ID)
    cell.metadata["tags"] = [CONTRACT_TAG]
    nb.cells.append(cell)
    return nb


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_metrics(raw, problems: list[str]) -> dict[str, float]:
    if not isinstance(raw, dict):
        problems.append("test_metrics is not a dict")
        return {}
    metrics = {}
    for name in METRIC_NAMES:
        value = raw.get(name, raw.get(f"test_{name}", raw.get(f"eval_{name}")))
        if _is_number(value):
            metrics[name] = float(value)
        else:
            problems.append(f"test_metrics has no numeric {name!r}")
    return metrics


def normalise_label(label) -> str | None:
    if isinstance(label, str) and label.strip().lower() in LABELS:
        return label.strip().lower()
    if isinstance(label, int) and not isinstance(label, bool) and label in (0, 1):
        return LABELS[label]
    return None


def parse_predictions(raw, problems: list[str]) -> list[Prediction]:
    if not isinstance(raw, list):
        problems.append("predictions is not a list")
        return []
    if len(raw) > MAX_PREDICTIONS:
        problems.append(f"predictions holds {len(raw):,} items: only the first {MAX_PREDICTIONS} are read")
        raw = raw[:MAX_PREDICTIONS]
    predictions, found = [], []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            found.append(f"predictions[{position}] is not a dict")
            continue
        label, confidence, text = normalise_label(item.get("label")), item.get("confidence"), item.get("text")
        if not isinstance(text, str) or label is None or not _is_number(confidence):
            found.append(f"predictions[{position}] needs a text, a label (negative/positive) and a numeric confidence")
            continue
        predictions.append(Prediction(text, label, float(confidence),
                                      label_was_id=not isinstance(item.get("label"), str)))
    problems.extend(capped(found))
    return predictions


def read_contract(nb: nbformat.NotebookNode) -> Contract:
    """Parse the contract cell's output of an executed notebook."""
    contract = Contract()
    payload = None
    for cell in nb.cells:
        if cell.get("id") == CONTRACT_CELL_ID:
            payload = next((output["data"][CONTRACT_MIME] for output in cell.get("outputs", [])
                            if CONTRACT_MIME in output.get("data", {})), None)
    if not isinstance(payload, dict):
        contract.problems.append("the grader could not read the notebook's variables (did the kernel finish?)")
        return contract
    for name in CONTRACT_NAMES:
        if name not in payload:
            contract.problems.append(f"{name} is not defined")
    if "test_metrics" in payload:
        contract.test_metrics = parse_metrics(payload["test_metrics"], contract.problems)
    if "predictions" in payload:
        contract.predictions = parse_predictions(payload["predictions"], contract.problems)
    if "SAVE_DIR" in payload:
        if isinstance(payload["SAVE_DIR"], str) and payload["SAVE_DIR"]:
            contract.save_dir = payload["SAVE_DIR"]
        else:
            contract.problems.append("SAVE_DIR is not a folder path (a string)")
    return contract
