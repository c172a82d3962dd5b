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
# The same command grades the optional going-further answer key too, with its bonus rubric.
GOING_FURTHER_RESULTS = ROOT / "build" / "going-further-run" / "results"
GOING_FURTHER_RUBRIC = ROOT / "grader" / "rubrics" / "going_further.toml"


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


# --- the going-further answer key, graded by the same command with its own rubric ---------------
@pytest.fixture(scope="module")
def going_further_run(kit_run, request):
    completed, _ = kit_run
    result = json.loads((GOING_FURTHER_RESULTS / "results" / "going-further.json").read_text(encoding="utf-8"))
    executed = nbformat.read(GOING_FURTHER_RESULTS / "executed" / "going-further.ipynb", as_version=4)
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\n[real run] going-further notebook: {result['run_time_s']:.0f} s in its kernel")
    return completed, result, executed


def _outputs(executed, cell_id):
    cell = next(c for c in executed.cells if c.get("id") == cell_id)
    return cell.outputs


def _text(outputs):
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") + o.get("data", {}).get("text/html", "")
                   for o in outputs)


def test_the_readme_main_command_grades_the_going_further_key_with_full_bonus_points(going_further_run):
    from grader.rubric import load_rubric

    completed, result, _ = going_further_run
    rubric = load_rubric(GOING_FURTHER_RUBRIC)
    full = f"{rubric.max_points:g}/{rubric.max_points:g}"
    assert re.search(rf"^going-further\s+graded\s+{full}\s", completed.stdout, re.MULTILINE), completed.stdout
    assert result["passed"] and result["errors"] == []
    assert result["verification"]["accuracy"] >= rubric.accuracy and result["verification"]["f1"] >= rubric.f1
    assert result["sandboxed"] == (bubblewrap_flags()[0] is not None)


def test_the_going_further_notebook_compares_searches_and_touches_the_test_split_once(going_further_run):
    _, _, executed = going_further_run
    contract = read_contract(executed)
    assert contract.problems == [] and len(contract.predictions) >= 5
    # one table: full fine-tuning and LoRA side by side, with parameters, time, memory, accuracy and F1
    table = _text(_outputs(executed, "comparison"))
    for column in ("full fine-tuning", "LoRA", "trainable parameters", "training time (s)", "peak RSS growth (MB)",
                   "validation accuracy", "validation F1"):
        assert column in table, column
    # the search: 3 settings, a plot, the best chosen by validation F1
    assert any("image/png" in o.get("data", {}) for o in _outputs(executed, "search-plot"))
    assert _text(_outputs(executed, "verify-search")).startswith("OK: 3 settings tried")
    assert _text(_outputs(executed, "verify-lora-share")).startswith("OK: LoRA trains")
    # the test split: evaluated once, for the chosen model only
    assert "evaluated 1 time(s)" in _text(_outputs(executed, "test-eval"))
    assert _text(_outputs(executed, "verify-test-once")).startswith("OK")
    # saved as a plain, merged model that reloads without peft and reproduces the predictions
    assert "no adapter file" in _text(_outputs(executed, "merge-save"))
    assert _text(_outputs(executed, "check-reload")).startswith("OK:")


def test_the_class_reports_of_both_answer_keys_render(kit_run, going_further_run):
    """What `scripts/kit run` leaves beside each gradebook: a class report of one student, rendered in Chromium."""
    from report_checks import assert_report_renders

    for results in (RESULTS, GOING_FURTHER_RESULTS):
        page = assert_report_renders(results / "report.html", students=1)
        assert len(page["images"]) == 5, results
