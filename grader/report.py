"""What a grading run writes: per-student results and feedback, the gradebook, the Canvas import.

Every file is written atomically (a temporary file renamed into place), so an interrupted run
never leaves a half-written gradebook or result behind.
"""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

import nbformat

from .files import output_fault, write_atomic  # noqa: F401: their home was here
from .integrity import gradebook_flags
from .results import VERIFY_MODE, RETRIED, GradeResult
from .rubric import CHECKS, DEFAULT_CANVAS_ASSIGNMENT, Rubric

GRADEBOOK = "gradebook.csv"
CANVAS_IMPORT = "canvas-import.csv"


class OutputFolder:
    """The layout of a grading run's output folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.results = self.root / "results"
        self.feedback = self.root / "feedback"
        self.executed = self.root / "executed"
        self.work = self.root / "work"
        self.private = self.root / ".grader"

    def result_path(self, student_id: str) -> Path:
        return self.results / f"{student_id}.json"

    def load_result(self, student_id: str) -> GradeResult | None:
        """The student's saved result, or None when there is none or it is unreadable (truncated, not a
        result, not even a JSON object): such a student is graded again."""
        path = self.result_path(student_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return GradeResult.from_dict(data) if isinstance(data, dict) else None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def save(self, result: GradeResult, executed: nbformat.NotebookNode | None, rubric: Rubric) -> None:
        if executed is not None:
            write_atomic(self.executed / f"{result.student_id}.ipynb", nbformat.writes(executed))
        write_atomic(self.feedback / f"{result.student_id}.html", feedback_html(result, rubric))
        # The result goes last: its presence is what marks the student as graded when resuming.
        write_atomic(self.result_path(result.student_id), json.dumps(result.to_dict(), indent=1))

    def write_gradebooks(self, results: list[GradeResult], rubric: Rubric, review=None) -> None:
        """``rubric`` heads the Canvas CSV's assignment column; ``review``: the class's integrity review
        (grader.integrity), whose flags go in the gradebook's flags column."""
        write_atomic(self.root / GRADEBOOK, gradebook_csv(results, review))
        write_atomic(self.root / CANVAS_IMPORT, canvas_csv(results, rubric.canvas_column))


def _figure(value) -> str:
    return "" if value is None else f"{value:.4f}"


# A cell starting so is a formula to Excel, LibreOffice and Sheets (OWASP's "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value) -> str:
    """Text from a student or a notebook as a cell a spreadsheet shows, never runs: a leading ' (OWASP)."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def gradebook_csv(results: list[GradeResult], review=None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student_id", "name", "status", "verified", "sandboxed", *CHECKS, "total", "max_total",
                     "hidden_accuracy", "hidden_f1", "reported_accuracy", "reported_f1", "flags", "run_time_s",
                     "reason", "short_answers"])
    for result in sorted(results, key=lambda r: r.student_id):
        verification = result.verification
        checks = [("pass" if c.passed else "fail") if (c := result.check(name)) else "" for name in CHECKS]
        flags = result.disagreement + (["output truncated"] if result.output_truncated else []) \
            + gradebook_flags(review, result.student_id)
        texts = [result.student_id, result.display_name, result.status, result.verified, result.sandboxed, *checks]
        writer.writerow([*map(csv_text, texts),
                         f"{result.total:g}", f"{result.max_total:g}",
                         _figure(verification.accuracy if verification else None),
                         _figure(verification.f1 if verification else None),
                         _figure(result.reported_metrics.get("accuracy")), _figure(result.reported_metrics.get("f1")),
                         csv_text("; ".join(flags)), result.run_time_s, csv_text(result.reason),
                         answered_text(result)])
    return buffer.getvalue()


def answered_text(result: GradeResult) -> str:
    """``3/4 answered``: the short questions, graded by hand (nbgrader's formgrader, or the feedback pages)."""
    if not result.answers:
        return ""
    return f"{sum(answer.answered for answer in result.answers)}/{len(result.answers)} answered"


def canvas_csv(results: list[GradeResult], assignment: str = DEFAULT_CANVAS_ASSIGNMENT) -> str:
    """Canvas's gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, then the assignment's column
    (``Rubric.canvas_column``). Canvas matches each row to a student by ID, the Canvas user id that a Canvas
    submissions download carries in its file names; it is blank for other submissions (see ``canvas_id_note``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment])
    for result in sorted(results, key=lambda r: r.student_id):
        # A student the grader could not grade (interrupted, grader error) gets no score, not a 0.
        score = "" if result.status in RETRIED else f"{result.total:g}"
        writer.writerow([csv_text(result.display_name), csv_text(result.canvas_user_id), "", "", "", score])
    return buffer.getvalue()


def canvas_id_note(results: list[GradeResult], output_dir: Path) -> str | None:
    """What the instructor must do before importing the Canvas CSV when some rows have no Canvas user id."""
    missing = [result for result in results if not result.canvas_user_id]
    if not missing:
        return None
    return (f"Canvas import: {len(missing)} of {len(results)} student(s) have no Canvas user ID (their notebooks were "
            f"not in a Canvas submissions download), so their ID cell in {Path(output_dir) / CANVAS_IMPORT} is blank "
            "and Canvas cannot match their rows. Fill in each ID from the ID column of your Canvas gradebook export "
            "(Grades > Export > CSV), or grade the unzipped Canvas download, whose file names carry the IDs.")


STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4rem .6rem;text-align:left;vertical-align:top}
.pass{color:#17612b;font-weight:600}.fail{color:#a11;font-weight:600}.note{background:#fff6d6;padding:.6rem;border-radius:4px}
pre{background:#f5f5f5;padding:.7rem;overflow-x:auto;font-size:.85rem}
"""


def feedback_html(result: GradeResult, rubric: Rubric) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Feedback: {esc(result.student_id)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Fine-tuning project: feedback for {esc(result.display_name or result.student_id)}</h1>",
             f"<p><b>Score: {result.total:g} / {result.max_total:g}</b> &middot; {esc(result.status)}"
             f" &middot; run time {result.run_time_s:.0f} s</p>"]
    if result.reason:
        parts.append(f"<p class='note'>{esc(result.reason)}</p>")
    if not result.verified:
        parts.append("<p class='note'>Graded from the outputs saved in your notebook, without running it: "
                     "these results are unverified.</p>")
    if result.mode == VERIFY_MODE:
        parts.append(verify_mode_note(result))
    if result.checks:
        parts.append("<h2>Checks</h2><table><tr><th>check</th><th>result</th><th>points</th><th>why</th></tr>")
        for c in result.checks:
            verdict = "<span class='pass'>passed</span>" if c.passed else "<span class='fail'>failed</span>"
            parts.append(f"<tr><td>{esc(c.name.replace('_', ' '))}</td><td>{verdict}</td>"
                         f"<td>{c.points:g} / {c.max_points:g}</td><td>{esc(c.message)}</td></tr>")
        parts.append("</table>")
    parts.append(_metrics_table(result, rubric))
    if result.disagreement or result.contract_problems:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(item)}</li>" for item in
                                                  result.disagreement + result.contract_problems) + "</ul>")
    parts.append(_answers_section(result))
    if result.errors:
        first = result.errors[0]
        parts.append(f"<h2>First error: {esc(first.where)}</h2>"
                     "<p>In Colab, the cell's id is in its link (<i>Copy link to cell</i>: <code>#scrollTo=id</code>); "
                     "the traceback below names it <code>Cell In[N]</code>, N being the number left of the cell.</p>"
                     f"<pre>{esc(first.source)}</pre><p>{esc(first.ename)}: {esc(first.evalue)}</p>"
                     f"<pre>{esc(first.traceback[-6000:])}</pre>")
        if len(result.errors) > 1:
            parts.append(f"<p>{len(result.errors) - 1} more cell(s) failed after it.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def verify_mode_note(result: GradeResult) -> str:
    """What verify mode checked, what it re-derived, and what only an audit (a re-run) can show."""
    esc = html.escape
    verification = result.verification
    source = verification.model_source if verification else ""
    base = ("checked that it is a fine-tune of the course's model (its architecture, vocabulary and weights), "
            if verification and verification.base_model_checked else "")
    items = [
        "<li><b>Checked:</b> your notebook is the course's notebook (every cell the template gives you is there, "
        "unchanged and in order, with the outputs it prints) and its saved outputs show every cell run in order "
        "without errors; the grader loaded the model you submitted" + (f" ({esc(source)})" if source else "")
        + " in a sandbox, " + base + "measured it on reviews you have never seen, and checked that it makes "
        "your notebook's predictions and is the very file your submit cell recorded (sha256).</li>",
        f"<li><b>Your test metrics:</b> {esc(result.rederivation or 'not re-derived')}.</li>",
        "<li><b>Not checked without a re-run:</b> that the outputs were made by running this notebook, rather "
        "than copied into it. An instructor may re-run any notebook (an audit) to confirm it.</li>",
    ]
    return ("<div class='note'><p>Your notebook was <b>not re-run</b>: the grader read its saved outputs.</p><ul>"
            + "".join(items) + "</ul></div>")


def _answers_section(result: GradeResult) -> str:
    """The short questions and the student's answers, for the instructor to grade by hand."""
    if not result.answers:
        return ""
    esc = html.escape
    rows = ["<h2>Short answers</h2><p>Read and graded by your instructor; the autograder gives them no points.</p>"
            "<table><tr><th>question</th><th>your answer</th></tr>"]
    for answer in result.answers:
        text = (f"<div style='white-space:pre-wrap'>{esc(answer.text)}</div>" if answer.answered
                else "<span class='fail'>not answered</span>")
        rows.append(f"<tr><td><b>{esc(answer.question_id)}</b><br>{esc(answer.question)}</td><td>{text}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _metrics_table(result: GradeResult, rubric: Rubric) -> str:
    verification = result.verification
    if not (verification or result.reported_metrics):
        return ""
    rows = ["<h2>Your metrics</h2><table><tr><th>metric</th><th>your test split</th>"
            "<th>hidden set (measured by the grader)</th><th>needed</th></tr>"]
    for name, threshold in (("accuracy", rubric.accuracy), ("f1", rubric.f1)):
        reported = result.reported_metrics.get(name)
        measured = getattr(verification, name) if verification else None
        interval = getattr(verification, f"{name}_ci") if verification else None
        measured_text = "not measured" if measured is None else f"{measured:.3f}" + (
            f" (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else "")
        rows.append(f"<tr><td>{name}</td><td>{'' if reported is None else f'{reported:.3f}'}</td>"
                    f"<td>{measured_text}</td><td>&ge; {threshold:.2f}</td></tr>")
    rows.append("</table>")
    return "".join(rows)
