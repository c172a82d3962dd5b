"""The class report (OUT/report.html): what it counts, what it tolerates, and how it renders in a real browser.

The fixture class (tests/class_fixture.py) is 43 result files written as `grade` writes them, with an
integrity.json; a real `grade --verify` run of a few tiny-BERT submissions checks the path from grading to
the report. Headless Chromium (tests/headless_chromium.py) renders both and answers for the rendered page:
every section there, every image loaded, every link resolving, the table sorting, and no markup from a
student's name or reason turned into an element.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from class_fixture import HOSTILE_NAME, INTEGRITY, class_results, write_class
from grader import class_report
from grader.class_report import (REPORT_FILE, Page, check_summaries, flags_section, load_class, reason_pattern,
                                 summary_section, write_class_report)
from grader.results import GRADED
from headless_chromium import Chromium
from report_checks import PLOTS, assert_renders, rendered, require_chromium

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fixture_class(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("class") / "out"
    write_class(root)
    write_class_report(root)
    return root


# --- what it counts ----------------------------------------------------------------------------------
def test_the_checks_are_counted_with_their_reasons_grouped():
    results = class_results()
    summaries = {summary.name: summary for summary in check_summaries(results)}
    graded = [r for r in results if r.status == GRADED]
    for name, summary in summaries.items():
        failing = [r for r in graded if not r.check(name).passed]
        assert (summary.scored, summary.failed) == (len(graded), len(failing)), name
        assert sum(count for _, count in summary.reasons) <= summary.failed
    # each student's own figures differ; the reason is one, counted once per student
    below = [r for r in graded if r.verification.f1 is not None and r.verification.f1 < 0.85]
    assert summaries["f1"].reasons[0] == ("hidden-set f1 # (95% CI #-#) < 0.85", len(below))
    assert reason_pattern("cell 12 raised KeyError: 'label'") == "cell 12 raised KeyError: '…'"


def test_the_students_are_the_gradebooks(tmp_path):
    """A result file left from a student no longer submitted is not in the class; one the gradebook lists
    without a result file is said."""
    out = write_class(tmp_path / "out", results=class_results()[:4], integrity=None, feedback=False)
    stale = class_results()[0]
    stale.student_id = "left-the-course"
    out.result_path("left-the-course").write_text(json.dumps(stale.to_dict()))
    (out.results / "student-02.json").unlink()
    data = load_class(out.root)
    assert [r.student_id for r in data.results] == ["student-01", "student-03", "student-04"]
    assert data.missing == ["student-02"]
    page = Page(out.root, data)
    summary_section(page)
    assert "without a readable result file: student-02" in page.html()
    # no gradebook: every result file is the class
    (out.root / "gradebook.csv").unlink()
    assert "left-the-course" in {r.student_id for r in load_class(out.root).results}


@pytest.mark.parametrize("content,said", [(None, "integrity checks did not run"), ("{not json", "cannot be read"),
                                          ('["a list"]', "not a JSON object"),
                                          (json.dumps({"flags": [1, "x", {"kind": "k", "students": "bob"}]}),
                                           "2 entries of its flags are not flags")])
def test_a_missing_or_broken_integrity_file_is_said_not_fatal(tmp_path, content, said):
    results = class_results()[:4]
    results[3].disagreement = ["the notebook reports test accuracy 0.990, the saved model measures 0.700"]
    out = write_class(tmp_path / "out", results=results, integrity=None, feedback=False)
    if content is not None:
        (out.root / "integrity.json").write_text(content)
    page = Page(out.root, load_class(out.root))
    flags_section(page)
    assert said in page.html()
    assert "the saved model measures 0.700" in page.html()   # the results' own flags are still shown


def test_the_same_results_give_the_same_page(fixture_class, tmp_path):
    again = tmp_path / "out"   # the same name: the page is titled by its folder
    shutil.copytree(fixture_class, again)
    write_class_report(again)
    first, second = (fixture_class / REPORT_FILE).read_text(), (again / REPORT_FILE).read_text()
    assert first.replace(str(fixture_class), "") == second.replace(str(again), "")


def test_grade_report_rebuilds_it_and_refuses_a_folder_without_results(fixture_class, tmp_path, capsys):
    from grader.cli import main

    copy = tmp_path / "out"
    shutil.copytree(fixture_class, copy)
    (copy / REPORT_FILE).unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / REPORT_FILE).is_file() and str(copy / REPORT_FILE) in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "holds no results" in capsys.readouterr().err


def test_student_text_is_escaped_in_the_html(fixture_class):
    page = (fixture_class / REPORT_FILE).read_text(encoding="utf-8")
    assert HOSTILE_NAME not in page and "<script>window.PWNED" not in page
    assert page.count("<script>") == 1            # the report's own, sorting the table
    assert "\u202e" not in page and "\\u202e" in page   # a right-to-left override is shown, not obeyed
    assert "<h2 id='summary'>fake" not in page


# --- in a real browser -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with Chromium() as chromium:
        yield chromium


def column_values(tab, header: str) -> list[str]:
    return tab.evaluate(f"""(() => {{
      const headers = Array.from(document.querySelectorAll("#students-table th")).map(th => th.textContent);
      const column = headers.indexOf({json.dumps(header)});
      return Array.from(document.querySelectorAll("#students-table tbody tr")).map(row => row.cells[column].textContent);
    }})()""")


def click_header(tab, header: str) -> str:
    return tab.evaluate(f"""(() => {{
      const th = Array.from(document.querySelectorAll("#students-table th")).find(th => th.textContent === {json.dumps(header)});
      th.click();
      return th.getAttribute("aria-sort");
    }})()""")


def test_the_fixture_class_renders_in_chromium(fixture_class, browser, tmp_path):
    report = fixture_class / REPORT_FILE
    tab = browser.open(report.as_uri())
    page = assert_renders(tab, report, students=len(class_results()))
    assert len(page["images"]) == PLOTS
    # every flag of integrity.json that is a flag, and each result's own (4 disagreements, 1 cut output)
    assert page["flags"] == sum(isinstance(flag, dict) for flag in INTEGRITY["flags"]) + 5
    # the table sorts by a column of figures, blanks last, then the other way
    assert click_header(tab, "hidden accuracy") == "ascending"
    values = column_values(tab, "hidden accuracy")
    figures = [float(value) for value in values if value]
    assert figures == sorted(figures) and values[-len(values) + len(figures):] == [""] * (len(values) - len(figures))
    assert click_header(tab, "hidden accuracy") == "descending"
    assert [float(v) for v in column_values(tab, "hidden accuracy") if v] == sorted(figures, reverse=True)
    assert click_header(tab, "student") == "ascending"
    assert column_values(tab, "student") == sorted(column_values(tab, "student"))
    # what a hostile name and reason became: text, shown as written
    assert tab.evaluate("document.body.innerText.includes(%s)" % json.dumps(HOSTILE_NAME))
    assert tab.evaluate("document.body.innerText.includes('</td></tr></table>')")
    screenshot = tab.screenshot(tmp_path / "class-report.png", height=2040)
    assert screenshot.stat().st_size > 50_000
    if os.environ.get("KIT_SCREENSHOTS"):   # refresh the docs' picture: KIT_SCREENSHOTS=docs
        shutil.copy(screenshot, ROOT / os.environ["KIT_SCREENSHOTS"] / "class-report.png")


def unescaped_report(fixture_class: Path, target: Path, monkeypatch, policy: str | None = None) -> Path:
    """The fixture class's report written with the escaping switched off (and another policy, when given)."""
    shutil.copytree(fixture_class, target)
    with monkeypatch.context() as patch:
        patch.setattr(class_report, "esc", lambda text: str(text))
        if policy is not None:
            patch.setattr(class_report, "CONTENT_SECURITY_POLICY", policy)
        write_class_report(target)
    return target / REPORT_FILE


def test_the_browser_check_sees_an_injected_script(fixture_class, browser, tmp_path, monkeypatch):
    """Negative controls: with the escaping switched off, the student's markup becomes elements and the
    rendered-page checks see them; the page's Content-Security-Policy still keeps their script from running
    (it is refused, and says so); without that policy too, it runs."""
    report = unescaped_report(fixture_class, tmp_path / "unescaped", monkeypatch)
    tab = browser.open(report.as_uri())
    page = rendered(tab)
    assert page["scripts"] > 1 and len(page["images"]) > PLOTS   # the name's <script> and <img> are elements now
    assert page["pwned"] is None
    assert any("Content Security Policy" in line for line in tab.console()), tab.console()
    report = unescaped_report(fixture_class, tmp_path / "open", monkeypatch,
                              policy="default-src *; script-src * 'unsafe-inline'")
    assert rendered(browser.open(report.as_uri()))["pwned"] in (1, 2)


# --- from grading to the report ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def graded_class(tmp_path_factory, saved_model_folder, tiny_data_dir, tiny_parameters):
    """A real `grade --verify` run of three submissions: an honest one (a tiny BERT trained here), an untrained
    one that reports figures its model does not reach, and a file that is no notebook."""
    from verify_submissions import trained_copy, write_submission

    from grader import GradingOptions, grade_submissions
    from grader.sandbox import GB, MB, Limits

    root = tmp_path_factory.mktemp("graded")
    trained = trained_copy(saved_model_folder, tiny_data_dir, root / "trained")
    test_csv = tiny_data_dir / "test.csv"
    submissions = root / "submissions"
    write_submission(submissions / "honest", trained, test_csv)
    write_submission(submissions / "claims-more", saved_model_folder, test_csv,   # untrained, and claims 0.99
                     reported={"accuracy": 0.99, "precision": 0.99, "recall": 0.99, "f1": 0.99})
    (submissions / "not-a-notebook.ipynb").write_text("{ this is not json")
    options = GradingOptions(output_dir=root / "out", hidden_set=test_csv, hidden_size=100, hidden_seed=7,
                             parameters=tiny_parameters, mode="verify", jobs=2,
                             limits=Limits(memory_bytes=3 * GB, max_processes=64, max_file_bytes=256 * MB,
                                           disk_bytes=1 * GB))
    batch = grade_submissions(submissions, options, progress=False)
    return root / "out", {r.student_id: r for r in batch.results}


def test_grade_writes_the_report_of_its_run(graded_class, browser):
    out, results = graded_class
    assert results["honest"].total == results["honest"].max_total, [c.message for c in results["honest"].checks]
    assert results["claims-more"].disagreement and results["not-a-notebook"].status == "not gradable"
    report = out / REPORT_FILE
    assert report.is_file()
    before = report.read_text(encoding="utf-8")
    assert all(f"id='student-{student}'" in before for student in results)
    tab = browser.open(report.as_uri())
    page = assert_renders(tab, report, students=len(results))
    assert len(page["images"]) == PLOTS
    # every flag shown: the class review's (integrity.json: the honest tiny model's hidden accuracy of 1.0 is
    # above what the course's recipe reaches, among them) and the results' own disagreements
    review = json.loads((out / "integrity.json").read_text(encoding="utf-8"))
    assert review["flags"], review
    assert page["flags"] == len(results["claims-more"].disagreement) + len(review["flags"])
    # `grade report` rebuilds the same page from the results on disk (the rubric kept by the run)
    (out / REPORT_FILE).unlink()
    write_class_report(out)
    assert report.read_text(encoding="utf-8") == before
