"""The class report's plots: matplotlib figures as SVG data URIs, so that the page holds them itself.

Each function takes the results (or points made from them) and returns a data URI, or None when there is
nothing to draw. No text from a student is ever drawn (matplotlib would read a ``$`` in a name as maths),
and the same results give the same bytes: no date in the files, a fixed salt for their element ids.
"""
from __future__ import annotations

import base64
import io
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .results import GRADED
from .rubric import AGREEMENT_SLACK, STUDENT_TEST_SIZE

if TYPE_CHECKING:
    from .results import GradeResult

PASS, FAIL, NEUTRAL, WARN = "#2a7a3b", "#b3261e", "#3b6ea8", "#c77700"


@dataclass
class MetricPoint:
    """One student's hidden-set figure, as the class report's plots draw it (grader.class_report.metric_points)."""

    student_id: str
    measured: float
    interval: tuple[float, float] | None
    reported: float | None
    flagged: bool


def _figure(width: float = 7.5, height: float = 3.2):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure


def svg_data_uri(figure) -> str:
    """The figure as an SVG data URI; the same figure gives the same bytes (no date, a fixed id salt)."""
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "class-report", "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def totals_plot(results: list[GradeResult]) -> str | None:
    graded = [r for r in results if r.status == GRADED and r.checks]
    if not graded:
        return None
    maximum = Counter(r.max_total for r in graded).most_common(1)[0][0] or 1
    figure = _figure()
    axes = figure.subplots()
    bins = [maximum * step / 20 for step in range(21)]
    passed = [r.total for r in graded if r.passed]
    others = [r.total for r in graded if not r.passed]
    axes.hist([others, passed], bins=bins, stacked=True, color=[FAIL, PASS],
              label=["failed a check", "passed every check"], edgecolor="white")
    axes.set_xlabel(f"total (of {maximum:g})")
    axes.set_ylabel("students")
    axes.set_xlim(0, maximum * 1.02)
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.legend(loc="upper left")
    return svg_data_uri(figure)


def intervals_plot(points: list[MetricPoint], threshold: float, label: str) -> str | None:
    """Each student's figure (sorted) with its 95% interval, against the threshold."""
    if not points:
        return None
    figure = _figure(height=3.4)
    axes = figure.subplots()
    for index, point in enumerate(points):
        colour = PASS if point.measured >= threshold else FAIL
        if point.interval:
            axes.plot([index, index], point.interval, color=colour, alpha=0.45, linewidth=2)
        axes.plot(index, point.measured, "o", color=colour, markersize=4)
    axes.axhline(threshold, color="#222", linestyle="--", linewidth=1)
    axes.annotate(f"threshold {threshold:.2f}", (0, threshold), xytext=(2, 3), textcoords="offset points", fontsize=8)
    axes.set_xlabel("students, sorted by the grader's figure")
    axes.set_ylabel(f"hidden-set {label}")
    axes.set_xticks([])
    low = min([threshold] + [p.interval[0] if p.interval else p.measured for p in points])
    axes.set_ylim(max(0.0, low - 0.05), 1.0)
    axes.set_xlim(-1, len(points))
    return svg_data_uri(figure)


def agreement_band(measured: float, hidden_size: int) -> float:
    """How far a student's own figure may lie from the grader's before ``rubric.disagrees`` flags it."""
    variance = measured * (1 - measured)
    return 1.96 * math.sqrt(variance / max(hidden_size, 1) + variance / STUDENT_TEST_SIZE) + AGREEMENT_SLACK


def agreement_plot(panels: dict[str, list[MetricPoint]], hidden_size: int) -> str | None:
    """The notebook's reported test figure against the grader's hidden-set figure, a panel per metric (accuracy,
    F1), with the band within which ``rubric.disagrees`` does not flag them for ``hidden_size`` reviews."""
    panels = {name: [p for p in points if p.reported is not None] for name, points in panels.items()}
    if not any(panels.values()):
        return None
    figure = _figure(height=3.6)
    for axes, (name, points) in zip(figure.subplots(1, len(panels)), panels.items()):
        values = [v for p in points for v in (p.measured, p.reported)] or [0.5, 1.0]
        low = max(0.0, min(values) - 0.05)
        grid = [low + (1 - low) * step / 50 for step in range(51)]
        band = [agreement_band(x, hidden_size) for x in grid]
        axes.fill_between(grid, [x - b for x, b in zip(grid, band)], [x + b for x, b in zip(grid, band)],
                          color=NEUTRAL, alpha=0.12, label="within noise")
        axes.plot([low, 1], [low, 1], color="#555", linewidth=1)
        for flagged, colour, marker, label in ((False, NEUTRAL, "o", "agrees"), (True, WARN, "D", "flagged")):
            chosen = [p for p in points if p.flagged == flagged]
            if chosen:
                axes.plot([p.measured for p in chosen], [p.reported for p in chosen], marker, color=colour,
                          markersize=5, linestyle="none", label=f"{label} ({len(chosen)})")
        axes.set_xlim(low, 1.0)
        axes.set_ylim(low, 1.0)
        axes.set_xlabel(f"hidden-set {name} (the grader's)")
        axes.set_ylabel(f"test {name} (the notebook's)")
        axes.set_aspect("equal")
        axes.legend(loc="lower right", fontsize=8)
    return svg_data_uri(figure)


def run_time_plot(results: list[GradeResult]) -> str | None:
    timed = [r for r in results if r.run_time_s > 0]
    if not timed:
        return None
    figure = _figure(height=3.0)
    axes = figure.subplots()
    modes = sorted({r.mode for r in timed})
    top = max(r.run_time_s for r in timed)
    bins = [top * step / 24 for step in range(25)]
    colours = [NEUTRAL, WARN, PASS, FAIL]
    axes.hist([[r.run_time_s for r in timed if r.mode == mode] for mode in modes], bins=bins, stacked=True,
              color=colours[:len(modes)], label=[f"{mode} mode" for mode in modes], edgecolor="white")
    axes.set_xlabel("run time per student (s)")
    axes.set_ylabel("students")
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.legend()
    return svg_data_uri(figure)
