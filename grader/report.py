"""What a grading run writes: per-student results and feedback, the gradebook, the Canvas import.

Every file is written atomically (a temporary file renamed into place), so an interrupted run
never leaves a half-written gradebook or result behind.
"""
from __future__ import annotations

import csv
import html
import io
import json
import os
import tempfile
from pathlib import Path

import nbformat

from .results import VERIFY_MODE, RETRIED, GradeResult
from .rubric import CHECKS, DEFAULT_CANVAS_ASSIGNMENT, Rubric

GRADEBOOK = "gradebook.csv"
CANVAS_IMPORT = "canvas-import.csv"


def write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


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
        path = self.result_path(student_id)
        if not path.is_file():
            return None
        try:
            return GradeResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError, KeyError):
            return None  # unreadable: grade again

    def save(self, result: GradeResult, executed: nbformat.NotebookNode | None, rubric: Rubric) -> None:
        if executed is not None:
            write_atomic(self.executed / f"{result.student_id}.ipynb", nbformat.writes(executed))
        write_atomic(self.feedback / f"{result.student_id}.html", feedback_html(result, rubric))
        # The result goes last: its presence is what marks the student as graded when resuming.
        write_atomic(self.result_path(result.student_id), json.dumps(result.to_dict(), indent=1))

    def write_gradebooks(self, results: list[GradeResult], rubric: Rubric) -> None:
        write_atomic(self.root / GRADEBOOK, gradebook_csv(results))
        write_atomic(self.root / CANVAS_IMPORT, canvas_csv(results, rubric.canvas_column))


def _figure(value) -> str:
    return "" if value is None else f"{value:.4f}"


# A cell starting so is a formula to Excel, LibreOffice and Sheets (OWASP's "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value) -> str:
    """Text from a student or a notebook as a cell a spreadsheet shows, never runs: a leading ' (OWASP)."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def gradebook_csv(results: list[GradeResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student_id", "name", "status", "verified", "sandboxed", *CHECKS, "total", "max_total",
                     "hidden_accuracy", "hidden_f1", "reported_accuracy", "reported_f1", "flags", "run_time_s",
                     "reason"])
    for result in sorted(results, key=lambda r: r.student_id):
        verification = result.verification
        checks = [("pass" if c.passed else "fail") if (c := result.check(name)) else "" for name in CHECKS]
        flags = result.disagreement + (["output truncated"] if result.output_truncated else [])
        texts = [result.student_id, result.display_name, result.status, result.verified, result.sandboxed, *checks]
        writer.writerow([*map(csv_text, texts),
                         f"{result.total:g}", f"{result.max_total:g}",
                         _figure(verification.accuracy if verification else None),
                         _figure(verification.f1 if verification else None),
                         _figure(result.reported_metrics.get("accuracy")), _figure(result.reported_metrics.get("f1")),
                         csv_text("; ".join(flags)), result.run_time_s, csv_text(result.reason)])
    return buffer.getvalue()


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
        source = result.verification.model_source if result.verification else ""
        parts.append("<p class='note'>Your notebook was <b>not re-run</b>: the grader read its saved outputs, then "
                     "loaded the model you submitted" + (f" ({esc(source)})" if source else "") +
                     ", measured it on reviews you have never seen, and checked that it makes your notebook's "
                     "predictions.</p>")
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
    if result.errors:
        first = result.errors[0]
        parts.append(f"<h2>First error: cell {first.cell_number} ({esc(first.cell_id)})</h2>"
                     f"<pre>{esc(first.source)}</pre><p>{esc(first.ename)}: {esc(first.evalue)}</p>"
                     f"<pre>{esc(first.traceback[-6000:])}</pre>")
        if len(result.errors) > 1:
            parts.append(f"<p>{len(result.errors) - 1} more cell(s) failed after it.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
