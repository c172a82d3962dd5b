"""The instructor's view of a class: ``OUT/report.html``, one page built from the results on disk.

``grade`` writes it beside the gradebook after every run, and ``grade report OUT`` rebuilds it. It shows
how the class did (counts by status, the totals), which check fails most and why, the hidden-set accuracy
and F1 of every student with their confidence intervals against the rubric's thresholds, the notebook's
own test figures against the grader's (misreporting and overfitting stand out), the run times, every
flag (``OUT/integrity.json`` when the integrity checks wrote one, and each result's own), and a table of
the students, sortable by any column, linking to their feedback pages.

The page is self-contained: the plots are SVG images made by matplotlib, inlined as data URIs, and a small
inline script sorts the table. It opens from disk with no network, and a Content-Security-Policy allows
nothing but its own style, its own script (by hash) and inline images. Everything that comes from a
student (names, reasons, messages, a flag's evidence) is escaped, and none of it is drawn in a plot.

The students are the gradebook's (the run's submissions); without a gradebook, every result file.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import html
import json
import math
import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from .class_plots import MetricPoint, agreement_plot, intervals_plot, run_time_plot, totals_plot
from .results import GRADED, GRADER_ERROR, INTERRUPTED, NOT_GRADABLE, Flag, GradeResult
from .rubric import CHECKS, DEFAULT_CANVAS_ASSIGNMENT, Rubric, load_rubric

REPORT_FILE = "report.html"
INTEGRITY_FILE = "integrity.json"
RUBRIC_FILE = "report-rubric.json"     # in OUT/.grader: the rubric the last run graded with
MAX_INTEGRITY_BYTES = 20_000_000
MAX_EVIDENCE_CHARS = 3000
STATUSES = (GRADED, NOT_GRADABLE, GRADER_ERROR, INTERRUPTED)
SECTIONS = (("summary", "Summary"), ("totals", "Totals"), ("checks", "Checks"),
            ("hidden-metrics", "Hidden-set accuracy and F1"), ("reported-vs-hidden", "Reported against measured"),
            ("run-time", "Run time"), ("flags", "Flags"), ("students", "Students"))


# --- what the report is made from ------------------------------------------------------------
@dataclass
class ClassData:
    results: list[GradeResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)       # in the gradebook, with no readable result file
    flags: list[Flag] = field(default_factory=list)
    integrity_found: bool = False
    integrity_problem: str = ""
    audit: dict | None = None
    computed_from: dict | None = None
    accuracy_threshold: float = 0.85
    f1_threshold: float = 0.85


def save_rubric(private: Path, rubric: Rubric) -> None:
    """Keep the run's rubric beside its results, so that ``grade report`` draws the thresholds it graded with."""
    from .files import write_atomic

    write_atomic(private / RUBRIC_FILE, json.dumps(asdict(rubric)))


def saved_rubric(private: Path) -> Rubric | None:
    try:
        data = json.loads((private / RUBRIC_FILE).read_text(encoding="utf-8"))
        return Rubric(accuracy=float(data["accuracy"]), f1=float(data["f1"]),
                      min_predictions=int(data["min_predictions"]), points=dict(data["points"]),
                      # a file kept before rubrics named their Canvas assignment has the course's
                      canvas_assignment=str(data.get("canvas_assignment", DEFAULT_CANVAS_ASSIGNMENT)),
                      canvas_assignment_id=str(data.get("canvas_assignment_id", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def roster(root: Path) -> list[str] | None:
    """The student ids of the gradebook, in its order, or None without a readable gradebook."""
    from .report import GRADEBOOK

    try:
        with open(root / GRADEBOOK, newline="", encoding="utf-8") as handle:
            # the gradebook guards a cell a spreadsheet would run with a leading ' (report.csv_text)
            return [row["student_id"].removeprefix("'") for row in csv.DictReader(handle) if row.get("student_id")]
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return None


def load_results(root: Path) -> tuple[list[GradeResult], list[str]]:
    """The class's results (the gradebook's students, else every result file) and the ids without one."""
    from .report import OutputFolder

    out = OutputFolder(root)
    students = roster(root)
    if students is None:
        students = sorted(path.stem for path in out.results.glob("*.json")) if out.results.is_dir() else []
    results, missing = [], []
    for student in dict.fromkeys(students):
        result = out.load_result(student)
        (missing.append(student) if result is None else results.append(result))
    return sorted(results, key=lambda r: r.student_id), missing


def _flag_from(entry) -> Flag | None:
    if not isinstance(entry, dict):
        return None
    students = entry.get("students")
    students = [str(s) for s in students] if isinstance(students, list) else []
    evidence = entry.get("evidence")
    return Flag(kind=str(entry.get("kind") or "unnamed"), students=students, message=str(entry.get("message") or ""),
                evidence=evidence if isinstance(evidence, dict) else {"value": evidence} if evidence else {})


def load_integrity(root: Path, data: ClassData) -> None:
    """Read OUT/integrity.json into ``data`` when it exists; a broken one is said, never fatal."""
    path = root / INTEGRITY_FILE
    if not path.is_file():
        return
    data.integrity_found = True
    try:
        if path.stat().st_size > MAX_INTEGRITY_BYTES:
            raise ValueError(f"it is over {MAX_INTEGRITY_BYTES // 1_000_000} MB")
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise ValueError("it is not a JSON object")
    except (OSError, ValueError, RecursionError) as error:
        data.integrity_problem = f"{INTEGRITY_FILE} cannot be read: {error}"[:500]
        return
    entries = document.get("flags") if isinstance(document.get("flags"), list) else []
    flags = [flag for entry in entries if (flag := _flag_from(entry))]
    if len(flags) < len(entries):
        data.integrity_problem = f"{len(entries) - len(flags)} entries of its flags are not flags and were left out"
    data.flags = flags + data.flags
    data.audit = document.get("audit") if isinstance(document.get("audit"), dict) else None
    data.computed_from = document.get("computed_from") if isinstance(document.get("computed_from"), dict) else None


def result_flags(results: list[GradeResult]) -> list[Flag]:
    """The flags each result carries itself: figures far from the grader's, output cut off, no sandbox."""
    flags = []
    for result in results:
        for note in result.disagreement:
            flags.append(Flag("disagreement", [result.student_id], note, source="result"))
        if result.output_truncated:
            flags.append(Flag("output-truncated", [result.student_id],
                              "the notebook printed more than the grader keeps; its output was cut off", source="result"))
    return flags


def load_class(root: Path, rubric: Rubric | None = None) -> ClassData:
    from .report import OutputFolder

    results, missing = load_results(root)
    rubric = rubric or saved_rubric(OutputFolder(root).private) or load_rubric()
    data = ClassData(results=results, missing=missing, flags=result_flags(results),
                     accuracy_threshold=rubric.accuracy, f1_threshold=rubric.f1)
    load_integrity(root, data)
    return data


# --- the figures ---------------------------------------------------------------------------
@dataclass
class CheckSummary:
    name: str
    scored: int                # students with this check
    failed: int
    reasons: list[tuple[str, int]]   # the most common reasons, as patterns, with their counts


# A measured figure (a decimal), unless it is a threshold, after a comparison: counts, cell numbers and limits
# (integers) stay, as they tell reasons apart.
NUMBER = re.compile(r"(?<![<=>] )(?<![\w.])-?\d+\.\d+(?:e-?\d+)?")
QUOTED = re.compile(r"'[^']{0,80}'|\"[^\"]{0,80}\"")


def reason_pattern(message: str) -> str:
    """A check's message without what differs from student to student (their figures, quoted texts), so that
    one reason counts once: "hidden-set accuracy 0.812 (95% CI 0.78-0.84) < 0.85" becomes
    "hidden-set accuracy # (95% CI #-#) < 0.85"."""
    return NUMBER.sub("#", QUOTED.sub("'…'", message)).strip()[:300]


def check_summaries(results: list[GradeResult], top: int = 3) -> list[CheckSummary]:
    graded = [r for r in results if r.status == GRADED]
    names = list(CHECKS) + sorted({c.name for r in graded for c in r.checks} - set(CHECKS))
    summaries = []
    for name in names:
        checks = [c for r in graded if (c := r.check(name)) is not None]
        if not checks:
            continue
        failed = [c for c in checks if not c.passed]
        reasons = Counter(reason_pattern(c.message) for c in failed).most_common(top)
        summaries.append(CheckSummary(name, len(checks), len(failed), reasons))
    return summaries


def metric_points(results: list[GradeResult], name: str) -> list[MetricPoint]:
    points = []
    for result in results:
        verification = result.verification
        measured = getattr(verification, name, None) if verification else None
        if measured is None or not math.isfinite(measured):
            continue
        reported = result.reported_metrics.get(name)
        reported = reported if isinstance(reported, (int, float)) and math.isfinite(reported) else None
        flagged = any(f"test {name} " in note for note in result.disagreement)
        points.append(MetricPoint(result.student_id, measured, getattr(verification, f"{name}_ci"), reported, flagged))
    return sorted(points, key=lambda p: (p.measured, p.student_id))


def uncertain(points: list[MetricPoint], threshold: float) -> list[MetricPoint]:
    """The students whose 95% interval holds the threshold: on another sample, they could fall on the other side."""
    return [p for p in points if p.interval and p.interval[0] < threshold <= p.interval[1]]


# --- the page ------------------------------------------------------------------------------
# Control and format characters (ESC, bidi overrides that show "gnp.exe" as "exe.png", zero-width ones) and lone
# surrogates: shown as their escapes, so that a name or a reason reads as what it is.
HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs"}


def visible(text: str) -> str:
    return "".join(char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) in HIDDEN_CATEGORIES
                   and char not in "\n\t" else char for char in text)


def esc(text) -> str:
    """Text from a result or a flag as HTML text: escaped, its hidden characters made visible."""
    return html.escape(visible(str(text)), quote=True)

STYLE = """
body{font-family:system-ui,sans-serif;max-width:84rem;margin:1.5rem auto;padding:0 1rem;color:#222}
nav a{margin-right:.9rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border:1px solid #ccc;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#17612b;font-weight:600}.fail{color:#a11;font-weight:600}.note{background:#fff6d6;padding:.5rem;
border-radius:4px}.cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{border:1px solid #ccc;border-radius:6px;
padding:.5rem .8rem;min-width:8rem}.card b{display:block;font-size:1.5rem}img.plot{max-width:100%;height:auto}
pre{background:#f5f5f5;padding:.5rem;font-size:.8rem;max-height:16rem;overflow:auto;margin:0;
white-space:pre-wrap;overflow-wrap:anywhere}.wide{overflow-x:auto}
#students th{cursor:pointer;user-select:none}#students th[aria-sort=ascending]::after{content:" \\25B2"}
#students th[aria-sort=descending]::after{content:" \\25BC"}tr:target{background:#fff6d6}
"""

# Sorts the students table by a header's column when it is clicked (again: the other way). A cell's
# data-sort holds its value when that is not its text (figures, blanks last); numbers sort as numbers.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headers, function (header, column) {
    header.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column], value = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort")
                                                                             : cell.textContent.trim();
        return value;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") { return x === y ? 0 : (x === "" ? 1 : -1); }
        var nx = Number(x), ny = Number(y), order;
        order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


CONTENT_SECURITY_POLICY = (f"default-src 'none'; img-src data:; style-src {_csp_hash(STYLE)}; "
                           f"script-src {_csp_hash(SCRIPT)}; base-uri 'none'; form-action 'none'")


def figure_text(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def feedback_href(student_id: str) -> str:
    return "feedback/" + quote(f"{student_id}.html")


def row_anchor(student_id: str) -> str:
    return "student-" + quote(student_id, safe="")


class Page:
    """The report's HTML, built section by section."""

    def __init__(self, root: Path, data: ClassData):
        self.root, self.data = root, data
        self.ids = {r.student_id for r in data.results}
        self.parts: list[str] = []

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)

    def has_feedback(self, student_id: str) -> bool:
        return (self.root / "feedback" / f"{student_id}.html").is_file()

    def student_link(self, student_id: str, feedback: bool = False) -> str:
        """A student as a link to their row in the table (and to their feedback page, with ``feedback``)."""
        if student_id not in self.ids:
            return f"<span>{esc(student_id)}</span>"
        link = f"<a href='#{esc(row_anchor(student_id))}'>{esc(student_id)}</a>"
        if feedback and self.has_feedback(student_id):
            link += f" (<a class='feedback' href='{esc(feedback_href(student_id))}'>feedback</a>)"
        return link

    def image(self, uri: str | None, alt: str, empty: str) -> None:
        self.add(f"<p><img class='plot' src='{uri}' alt='{esc(alt)}'></p>" if uri else f"<p class='note'>{esc(empty)}</p>")

    def html(self) -> str:
        head = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">"
                "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>Class report: {esc(self.root.name)}</title><style>{STYLE}</style></head><body>")
        return head + "\n".join(self.parts) + f"\n<script>{SCRIPT}</script></body></html>\n"


def summary_section(page: Page) -> None:
    data, results = page.data, page.data.results
    counts = Counter(r.status for r in results)
    graded = [r for r in results if r.status == GRADED]
    flagged = {s for flag in data.flags for s in flag.students}
    cards = [("students", len(results) + len(data.missing)), ("graded", counts[GRADED]),
             ("passed every check", sum(r.passed for r in results)), ("not gradable", counts[NOT_GRADABLE]),
             ("grader errors", counts[GRADER_ERROR]), ("not graded (interrupted)", counts[INTERRUPTED]),
             ("flagged", len(flagged))]
    page.add("<section id='summary'><h2>Summary</h2><div class='cards'>"
             + "".join(f"<div class='card'><b>{value}</b>{esc(label)}</div>" for label, value in cards) + "</div>")
    if graded:
        totals = [r.total for r in graded]
        modes = Counter(r.mode for r in graded)
        page.add(f"<p>Totals of the graded: median {statistics.median(totals):g}, mean {statistics.mean(totals):.1f}, "
                 f"out of {graded[0].max_total:g}. Graded in "
                 + ", ".join(f"{mode} mode: {count}" for mode, count in sorted(modes.items()))
                 + f". Thresholds: accuracy &ge; {data.accuracy_threshold:.2f}, F1 &ge; {data.f1_threshold:.2f}.</p>")
    unverified = [r for r in graded if not r.verified]
    unsandboxed = [r for r in graded if r.mode == "execute" and not r.sandboxed]
    if unverified:
        page.add(f"<p class='note'>{len(unverified)} graded from their saved outputs only (unverified).</p>")
    if unsandboxed:
        page.add(f"<p class='note'>{len(unsandboxed)} notebook(s) ran without the sandbox.</p>")
    if data.missing:
        page.add("<p class='note'>In the gradebook without a readable result file: "
                 + ", ".join(map(esc, data.missing)) + "</p>")
    not_graded = [r for r in results if r.status != GRADED]
    if not_graded:
        page.add("<h3>Not graded</h3><table><thead><tr><th>student</th><th>status</th><th>reason</th></tr></thead><tbody>"
                 + "".join(f"<tr><td>{page.student_link(r.student_id)}</td><td>{esc(r.status)}</td>"
                           f"<td>{esc(r.reason)}</td></tr>" for r in not_graded) + "</tbody></table>")
    page.add("</section>")


def totals_section(page: Page) -> None:
    page.add("<section id='totals'><h2>Totals</h2>")
    page.image(totals_plot(page.data.results), "histogram of the graded students' totals", "No student was graded.")
    page.add("</section>")


def checks_section(page: Page) -> None:
    summaries = check_summaries(page.data.results)
    page.add("<section id='checks'><h2>Checks</h2>")
    if not summaries:
        page.add("<p class='note'>No student was graded.</p></section>")
        return
    page.add("<p>How many graded students failed each check, and the most common reasons (figures and quoted "
             "texts left out, so that one reason counts once).</p><table><thead><tr><th>check</th>"
             "<th class='num'>failed</th><th class='num'>of</th><th class='num'>share</th>"
             "<th>most common reasons</th></tr></thead><tbody>")
    for summary in sorted(summaries, key=lambda s: -s.failed):
        reasons = "".join(f"<li>{count} &times; {esc(reason)}</li>" for reason, count in summary.reasons)
        share = summary.failed / summary.scored
        page.add(f"<tr><td>{esc(summary.name.replace('_', ' '))}</td><td class='num'>{summary.failed}</td>"
                 f"<td class='num'>{summary.scored}</td><td class='num'>{share:.0%}</td>"
                 f"<td>{'<ul>' + reasons + '</ul>' if reasons else 'none failed'}</td></tr>")
    page.add("</tbody></table></section>")


def metrics_section(page: Page) -> None:
    data = page.data
    page.add("<section id='hidden-metrics'><h2>Hidden-set accuracy and F1</h2><p>Every student whose model the "
             "grader measured, sorted by the figure, with its 95% confidence interval (Wilson for accuracy, "
             "bootstrap for F1), against the rubric's threshold.</p>")
    for name, label, threshold in (("accuracy", "accuracy", data.accuracy_threshold), ("f1", "F1", data.f1_threshold)):
        points = metric_points(data.results, name)
        page.add(f"<h3>{label}</h3>")
        page.image(intervals_plot(points, threshold, label), f"hidden-set {label} of each student with its interval",
                   f"No model was measured, so there is no {label} to show.")
        if points:
            below = sum(p.measured < threshold for p in points)
            close = uncertain(points, threshold)
            page.add(f"<p>{below} of {len(points)} below {threshold:.2f}; median {statistics.median(p.measured for p in points):.3f}. "
                     f"{len(close)} student(s) have the threshold inside their interval, so another sample could "
                     "put them on its other side" + (": " + ", ".join(page.student_link(p.student_id) for p in close)
                                                    if close else "") + ".</p>")
    page.add("</section>")


def agreement_section(page: Page) -> None:
    results = page.data.results
    page.add("<section id='reported-vs-hidden'><h2>Reported against measured</h2><p>The test-split figure each "
             "notebook reports against the figure the grader measures on the hidden set. On the diagonal they agree; "
             "the band is sampling noise (as the grader's disagreement flag allows). Far above it: a notebook that "
             "claims more than its model does (misreported, or its test split leaked into training).</p>")
    panels = {name: metric_points(results, name) for name in ("accuracy", "f1")}
    sizes = [r.verification.hidden_size for r in results if r.verification and r.verification.hidden_size]
    page.image(agreement_plot(panels, int(statistics.median(sizes)) if sizes else 500),
               "the notebooks' reported figures against the grader's measured figures",
               "No student has both a reported and a measured figure.")
    flagged = sorted({r.student_id for r in results if r.disagreement})
    if flagged:
        page.add("<p>Flagged: " + ", ".join(page.student_link(s) for s in flagged) + "</p>")
    page.add("</section>")


def run_time_section(page: Page) -> None:
    results = [r for r in page.data.results if r.run_time_s > 0]
    page.add("<section id='run-time'><h2>Run time</h2>")
    page.image(run_time_plot(results), "histogram of the run time per student", "No run time was recorded.")
    if results:
        slowest = sorted(results, key=lambda r: -r.run_time_s)[:5]
        page.add(f"<p>Median {statistics.median(r.run_time_s for r in results):.0f} s, in all "
                 f"{sum(r.run_time_s for r in results) / 60:.1f} min. Slowest: "
                 + ", ".join(f"{page.student_link(r.student_id)} {r.run_time_s:.0f} s" for r in slowest) + ".</p>")
    page.add("</section>")


def evidence_text(evidence: dict) -> str:
    text = json.dumps(evidence, indent=1, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= MAX_EVIDENCE_CHARS else text[:MAX_EVIDENCE_CHARS] + "\n… (cut)"


def flags_section(page: Page) -> None:
    data = page.data
    page.add("<section id='flags'><h2>Flags</h2>")
    if not data.integrity_found:
        page.add(f"<p class='note'>No {INTEGRITY_FILE} in this folder: the integrity checks did not run. "
                 "Below are the flags the results carry themselves.</p>")
    if data.integrity_problem:
        page.add(f"<p class='note'>{esc(data.integrity_problem)}</p>")
    if data.flags:
        counts = Counter(flag.kind for flag in data.flags)
        page.add("<p>" + ", ".join(f"{esc(kind)}: {count}" for kind, count in counts.most_common()) + "</p>"
                 "<table><thead><tr><th>kind</th><th>students</th><th>why</th><th>evidence</th></tr></thead><tbody>")
        for flag in data.flags:
            evidence = f"<pre>{esc(evidence_text(flag.evidence))}</pre>" if flag.evidence else ""
            page.add(f"<tr class='flag' data-kind='{esc(flag.kind)}'><td>{esc(flag.kind)}</td>"
                     f"<td>{', '.join(page.student_link(s, feedback=True) for s in flag.students)}</td>"
                     f"<td>{esc(flag.message)}</td><td>{evidence}</td></tr>")
        page.add("</tbody></table>")
    else:
        page.add("<p>No flag.</p>")
    if data.audit:
        page.add(f"<h3>Audit</h3><pre>{esc(evidence_text(data.audit))}</pre>")
    if data.computed_from:
        page.add(f"<p>The integrity checks were computed from:</p><pre>{esc(evidence_text(data.computed_from))}</pre>")
    page.add("</section>")


def _cell(text: str, sort: str | None = None, numeric: bool = False) -> str:
    attributes = (" class='num'" if numeric else "") + (f" data-sort='{esc(sort)}'" if sort is not None else "")
    return f"<td{attributes}>{text}</td>"


def finite(value) -> float | None:
    """A figure to show: a finite number, else None (a result's figures are the notebook's, whatever it printed)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def _figure_cell(value) -> str:
    value = finite(value)
    return _cell(figure_text(value), "" if value is None else repr(round(value, 6)), numeric=True)


def students_section(page: Page) -> None:
    data = page.data
    flag_counts = Counter(s for flag in data.flags for s in flag.students)
    headers = ["student", "name", "status", "mode", "total", *[name.replace("_", " ") for name in CHECKS],
               "hidden accuracy", "hidden F1", "reported accuracy", "reported F1", "run time (s)", "flags", "reason"]
    page.add("<section id='students'><h2>Students</h2><p>Click a column's header to sort by it (again: the other "
             "way).</p><div class='wide'><table id='students-table' class='sortable'><thead><tr>"
             + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>")
    for r in data.results:
        v = r.verification
        student = (f"<a class='feedback' href='{esc(feedback_href(r.student_id))}'>{esc(r.student_id)}</a>"
                   if page.has_feedback(r.student_id) else esc(r.student_id))
        checks = []
        for name in CHECKS:
            c = r.check(name)
            checks.append(_cell("" if c is None else ("<span class='pass'>pass</span>" if c.passed
                                                      else "<span class='fail'>fail</span>"),
                                "" if c is None else ("1" if c.passed else "0")))
        page.add(f"<tr id='{esc(row_anchor(r.student_id))}'>" + _cell(student, r.student_id) + _cell(esc(r.display_name))
                 + _cell(esc(r.status)) + _cell(esc(r.mode) if r.status == GRADED else "") + _cell(f"{r.total:g}", repr(r.total), numeric=True)
                 + "".join(checks) + _figure_cell(v.accuracy if v else None) + _figure_cell(v.f1 if v else None)
                 + _figure_cell(r.reported_metrics.get("accuracy")) + _figure_cell(r.reported_metrics.get("f1"))
                 + _cell(f"{r.run_time_s:.0f}", repr(r.run_time_s), numeric=True)
                 + _cell(str(flag_counts[r.student_id] or ""), str(flag_counts[r.student_id]), numeric=True)
                 + _cell(esc(r.reason[:300])) + "</tr>")
    page.add("</tbody></table></div></section>")


def class_report_html(root: Path, data: ClassData) -> str:
    page = Page(root, data)
    page.add(f"<h1>Class report: {esc(root.name)}</h1>"
             f"<p>{len(data.results)} result(s) in {esc(str(root))}. Each student's page is in feedback/; "
             "the gradebook is gradebook.csv.</p><nav>"
             + "".join(f"<a href='#{anchor}'>{esc(title)}</a>" for anchor, title in SECTIONS) + "</nav>")
    for section in (summary_section, totals_section, checks_section, metrics_section, agreement_section,
                    run_time_section, flags_section, students_section):
        section(page)
    return page.html()


def write_class_report(root: str | Path, rubric: Rubric | None = None) -> Path:
    """Write ROOT/report.html from the results on disk, drawing ``rubric``'s thresholds (default: those of the
    rubric the last run graded with); returns its path."""
    from .files import write_atomic

    root = Path(root)
    return write_atomic(root / REPORT_FILE, class_report_html(root, load_class(root, rubric)))


def write_class_report_after_grading(root: Path, rubric: Rubric | None) -> Path | None:
    """The report at the end of a grading run, whose rubric is kept for ``grade report`` (None: the one kept).
    A failure here is said, and never costs the run its grades: the results and the gradebook are written."""
    import warnings

    from .report import OutputFolder

    try:
        if rubric is not None:
            save_rubric(OutputFolder(root).private, rubric)
        return write_class_report(root, rubric)
    except Exception as error:  # a bug in the report must not turn a finished run into a crash
        warnings.warn(f"the class report {Path(root) / REPORT_FILE} could not be written: "
                      f"{type(error).__name__}: {error}", stacklevel=2)
        return None
