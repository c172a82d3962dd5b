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
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from class_fixture import HOSTILE_NAME, INTEGRITY, class_results, write_class
from grader import class_report
from grader.class_report import (REPORT_FILE, SECTIONS, check_summaries, load_class, reason_pattern,
                                 write_class_report)
from grader.results import GRADED
from headless_chromium import Chromium, chromium_path

ROOT = Path(__file__).resolve().parent.parent
PLOTS = 5   # totals, accuracy, F1, reported against measured, run time


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
    out = write_class(tmp_path / "out", integrity=None)
    stale = class_results()[0]
    stale.student_id = "left-the-course"
    out.result_path("left-the-course").write_text(json.dumps(stale.to_dict()))
    (out.results / "student-02.json").unlink()
    data = load_class(out.root)
    ids = {r.student_id for r in data.results}
    assert "left-the-course" not in ids and "student-02" not in ids and "student-01" in ids
    assert data.missing == ["student-02"]
    write_class_report(out.root)
    assert "without a readable result file: student-02" in (out.root / REPORT_FILE).read_text()
    # no gradebook: every result file is the class
    (out.root / "gradebook.csv").unlink()
    assert "left-the-course" in {r.student_id for r in load_class(out.root).results}


@pytest.mark.parametrize("content,said", [(None, "integrity checks did not run"), ("{not json", "cannot be read"),
                                          ('["a list"]', "not a JSON object"),
                                          (json.dumps({"flags": [1, "x", {"kind": "k", "students": "bob"}]}),
                                           "2 entries of its flags are not flags")])
def test_a_missing_or_broken_integrity_file_is_said_not_fatal(tmp_path, content, said):
    out = write_class(tmp_path / "out", results=class_results()[:5], integrity=None)
    if content is not None:
        (out.root / "integrity.json").write_text(content)
    page = write_class_report(out.root).read_text(encoding="utf-8")
    assert said in page
    assert "id='students'" in page


def test_the_same_results_give_the_same_page(fixture_class, tmp_path):
    again = tmp_path / "out"   # the same name: the page is titled by its folder
    shutil.copytree(fixture_class, again)
    write_class_report(again)
    first, second = (fixture_class / REPORT_FILE).read_text(), (again / REPORT_FILE).read_text()
    assert first.replace(str(fixture_class), "") == second.replace(str(again), "")


def test_grade_report_rebuilds_it_and_refuses_a_folder_without_results(fixture_class, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(fixture_class, copy)
    (copy / REPORT_FILE).unlink()
    done = subprocess.run([sys.executable, "-m", "grader.cli", "report", str(copy)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (copy / REPORT_FILE).is_file() and str(copy / REPORT_FILE) in done.stdout
    refused = subprocess.run([sys.executable, "-m", "grader.cli", "report", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "holds no results" in refused.stderr


def test_student_text_is_escaped_in_the_html(fixture_class):
    page = (fixture_class / REPORT_FILE).read_text(encoding="utf-8")
    assert HOSTILE_NAME not in page and "<script>window.PWNED" not in page
    assert page.count("<script>") == 1            # the report's own, sorting the table
    assert "\u202e" not in page and "\\u202e" in page   # a right-to-left override is shown, not obeyed
    assert "<h2 id='summary'>fake" not in page


# --- in a real browser -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        if os.environ.get("KIT_REQUIRE_BROWSER"):
            pytest.fail("chromium is missing, and CI requires the browser tests (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with Chromium() as chromium:
        yield chromium


RENDERED = """(() => {
  const sections = %s.map(id => [id, !!document.getElementById(id) && !!document.getElementById(id).querySelector("h2")]);
  const images = Array.from(document.images).map(img => ({ok: img.complete && img.naturalWidth > 0,
                                                            width: img.naturalWidth, src: img.src.slice(0, 30)}));
  const links = Array.from(document.querySelectorAll("a[href]")).map(a => a.getAttribute("href"));
  const anchors = links.filter(h => h.startsWith("#")).map(h => [h, !!document.getElementById(decodeURIComponent(h.slice(1))) || !!document.getElementById(h.slice(1))]);
  return {sections, images, links, anchors, title: document.title, pwned: window.PWNED === undefined ? null : window.PWNED,
          scripts: document.scripts.length, summaries: document.querySelectorAll("h2").length,
          rows: document.querySelectorAll("#students-table tbody tr").length,
          flags: document.querySelectorAll("#flags tr.flag").length,
          width: document.documentElement.scrollWidth};
})()"""


def rendered(tab) -> dict:
    return tab.evaluate(RENDERED % json.dumps([anchor for anchor, _ in SECTIONS]))


def assert_renders(tab, report: Path, students: int) -> dict:
    page = rendered(tab)
    assert all(present for _, present in page["sections"]), page["sections"]
    assert page["summaries"] == len(SECTIONS)
    assert page["images"] and all(image["ok"] for image in page["images"]), page["images"]
    assert all(found for _, found in page["anchors"]), [a for a in page["anchors"] if not a[1]]
    feedback = [href for href in page["links"] if not href.startswith("#")]
    assert feedback, "no link to a feedback page"
    for href in feedback:   # relative links, each to a page that is there
        assert not urlparse(href).scheme and not href.startswith("/"), href
        assert (report.parent / unquote(href)).is_file(), href
    assert page["rows"] == students
    assert page["pwned"] is None and page["scripts"] == 1
    assert not [line for line in tab.console() if line.startswith(("error", "warning", "exception"))], tab.console()
    return page


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
    """A real `grade --verify` run of four tiny-BERT submissions: an honest one, an untrained one, one that
    reports figures its model does not reach, and a file that is no notebook."""
    from verify_submissions import trained_copy, write_submission

    from grader import GradingOptions, grade_submissions
    from grader.sandbox import GB, MB, Limits

    root = tmp_path_factory.mktemp("graded")
    trained = trained_copy(saved_model_folder, tiny_data_dir, root / "trained")
    test_csv = tiny_data_dir / "test.csv"
    submissions = root / "submissions"
    write_submission(submissions / "honest", trained, test_csv)
    write_submission(submissions / "untrained", saved_model_folder, test_csv)
    write_submission(submissions / "claims-more", saved_model_folder, test_csv,
                     reported={"accuracy": 0.99, "precision": 0.99, "recall": 0.99, "f1": 0.99})
    (submissions / "not-a-notebook.ipynb").write_text("{ this is not json")
    options = GradingOptions(output_dir=root / "out", hidden_set=test_csv, hidden_size=100, hidden_seed=7,
                             parameters=tiny_parameters, verify_submitted=True, jobs=2,
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
    assert page["flags"] == len(results["claims-more"].disagreement)
    # `grade report` rebuilds the same page from the results on disk (the rubric kept by the run)
    (out / REPORT_FILE).unlink()
    write_class_report(out)
    assert report.read_text(encoding="utf-8") == before
