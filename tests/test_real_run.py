"""The README's main command, verbatim, offline: `scripts/kit run --offline` fine-tunes the
pre-trained MiniLM stand-in on the shared copy of Amazon Polarity inside the answer key, and grades
it with `grade` in the sandbox, the hidden set drawn from the same folder's test.csv.
Takes minutes on a 2-core CPU; skipped where ../shared/data is absent.
"""
import json
import re
import subprocess
import time

import nbformat
import pytest

from grader.build import ROOT
from grader.contract import read_contract
from grader.sandbox import bubblewrap_flags

pytestmark = pytest.mark.slow
RESULTS = ROOT / "build" / "answer-key-run" / "results"


@pytest.fixture(scope="module")
def kit_run(minilm_dir, shared_amazon, request):
    started = time.monotonic()
    completed = subprocess.run(["scripts/kit", "run", "--offline"], cwd=ROOT, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=45 * 60)
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\n[real run] scripts/kit run --offline: exit {completed.returncode} in "
              f"{time.monotonic() - started:.0f} s\n{completed.stdout}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((RESULTS / "results" / "answer-key.json").read_text(encoding="utf-8"))
    return completed, result


def test_the_readme_main_command_grades_the_answer_key_100(kit_run):
    completed, result = kit_run
    assert re.search(r"^answer-key\s+graded\s+100/100\s", completed.stdout, re.MULTILINE), completed.stdout
    assert "Traceback" not in completed.stderr and "AssertionError" not in completed.stderr, completed.stderr[-3000:]
    assert result["passed"] and result["verification"]["accuracy"] >= 0.85 and result["verification"]["f1"] >= 0.85
    assert result["sandboxed"] == (bubblewrap_flags()[0] is not None)
    assert not result["disagreement"]


def test_the_answer_key_meets_the_course_thresholds_from_its_own_kernel(kit_run):
    executed = nbformat.read(RESULTS / "executed" / "answer-key.ipynb", as_version=4)
    contract = read_contract(executed)
    assert contract.problems == []
    assert contract.test_metrics["accuracy"] >= 0.85 and contract.test_metrics["f1"] >= 0.85
    assert len(contract.predictions) >= 5 and {p.label for p in contract.predictions} == {"negative", "positive"}
    assert all(0.5 <= p.confidence <= 1 for p in contract.predictions)
    # the kernel compared the reloaded model's predictions with the originals and printed OK
    reload_cell = next(c for c in executed.cells if c.get("id") == "check-reload")
    assert any(o.get("text", "").startswith("OK:") for o in reload_cell.outputs)


def test_the_executed_answer_key_holds_the_baselines_plots_and_report_files(kit_run):
    executed = nbformat.read(RESULTS / "executed" / "answer-key.ipynb", as_version=4)
    outputs = {cell.get("id"): cell.get("outputs", []) for cell in executed.cells}

    def text(cell_id):
        return "".join(output.get("text", "") for output in outputs[cell_id])

    def shows(cell_id, mime):
        return any(mime in output.get("data", {}) for output in outputs[cell_id])

    assert shows("baselines-table", "text/html") and shows("test-eval", "image/png") and shows("curves", "image/png")
    table = next(o["data"]["text/html"] for o in outputs["baselines-table"] if "text/html" in o.get("data", {}))
    for row in ["majority class", "TF-IDF + logistic regression", "pre-trained, not fine-tuned", "fine-tuned"]:
        assert row in table
    assert "McNemar's exact test: p =" in text("mcnemar")
    # the real TF-IDF baseline on the real data, and the report files checked in the kernel
    assert text("tfidf-self-check").startswith("OK:") and text("report-self-check").startswith("OK:")
    assert "cut at MAX_LENGTH" in text("error-analysis")
