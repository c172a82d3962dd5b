"""Each student's own work: every pair of a class compared, and what an instructor should look at, flagged.

After a batch (a local run, a Slurm run, ``grade collect``) the class is reviewed from the results on
disk: identical weights (the sha256 of the staged safetensors), identical notebooks (their bytes, or
their sources once outputs, metadata and whitespace are set aside), two students naming one Hub
repository, near-identical models (the share of hidden-set reviews two models label alike, far above
what two honest fine-tunes reach), a hidden accuracy far above what the course's recipe reaches, and
the spot audits' verdicts (``grader.audit``). The review goes to OUT/integrity.json and
OUT/integrity.html, and each student's flags to the gradebook's ``flags`` column.

Flags depend on the whole class, so they are recomputed after every run and never stored in a
student's result (whose fingerprint says what their grade depends on). A flag never changes points:
the instructor decides. None of this reaches a student's feedback, which must not name a classmate.

Model-level comparisons apply to verify mode only: in execute mode the grader trains every model
itself, from the same seed and data, so two honest students whose code computes the same thing get
the very same weights, and only their notebooks are theirs.
"""
from __future__ import annotations

import functools
import hashlib
import html
import json
import re
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from .files import write_atomic
from .fingerprint import file_digest
from .results import GRADED, VERIFY_MODE, Flag, GradeResult, Provenance

INTEGRITY_JSON = "integrity.json"
INTEGRITY_HTML = "integrity.html"

IDENTICAL_WEIGHTS = "identical-weights"
IDENTICAL_NOTEBOOK = "identical-notebook"
SAME_HUB_REPOSITORY = "same-hub-repository"
NEAR_IDENTICAL_PREDICTIONS = "near-identical-predictions"
HIDDEN_ACCURACY_IMPLAUSIBLE = "hidden-accuracy-implausible"
AUDIT_DISAGREES = "audit-disagrees"

# benchmarks/integrity_agreement.py (docs/integrity.md): see IntegritySettings' defaults.
NEAR_IDENTICAL_AGREEMENT = 0.98
PLAUSIBLE_ACCURACY = 0.94
MIN_COMPARED_REVIEWS = 50   # below this, two models agreeing says little
HUB_REPOSITORY = re.compile(r"^([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)@[0-9a-f]+$")
SEED_LINE = re.compile(r"^SEED\s*=\s*(-?\d{1,12})\s*(?:#.*)?$", re.MULTILINE)


@dataclass
class IntegritySettings:
    """What the review flags. Neither setting changes a grade, so neither is in a result's fingerprint."""

    near_identical_agreement: float = NEAR_IDENTICAL_AGREEMENT   # share of hidden reviews labelled alike
    plausible_accuracy: float = PLAUSIBLE_ACCURACY   # the most hidden accuracy the course's recipe reaches


@dataclass
class ClassReview:
    flags: list[Flag] = field(default_factory=list)
    audit: dict | None = None
    computed_from: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        # integrity.json's agreed schema: every flag in it is the review's own, so its source goes unsaid
        data = {"flags": [{name: value for name, value in asdict(flag).items() if name != "source"}
                          for flag in self.flags], "computed_from": self.computed_from}
        if self.audit is not None:
            data["audit"] = self.audit
        return data

    def flags_of(self, student_id: str) -> list[Flag]:
        return [flag for flag in self.flags if student_id in flag.students]


# --- what identifies a student's work, recorded when they are graded ----------------------
def provenance(notebook: Path, nb) -> Provenance:
    """The notebook's digests and the seed its parameters cell sets (the model's are added in verify mode)."""
    return Provenance(notebook_sha256=file_digest(notebook), source_sha256=source_digest(nb), seed=notebook_seed(nb))


def source_digest(nb) -> str:
    """The notebook up to what running it or opening it changes: every non-empty cell's type and source,
    each run of whitespace made one space. Outputs, execution counts, metadata and cell ids are left out."""
    parts = []
    for cell in nb.cells:
        text = " ".join(cell_source(cell).split())
        if text:
            parts.append(f"{cell.get('cell_type', '')}\0{text}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def cell_source(cell) -> str:
    """A cell's source as text: nbformat.read joins it, the file format may hold it as a list of lines."""
    source = cell.get("source", "")
    return "".join(map(str, source)) if isinstance(source, list) else str(source)


def notebook_seed(nb) -> int | None:
    """The SEED the notebook's parameters cell (its tag, else the first cell setting SEED) assigns."""
    code = [cell for cell in nb.cells if cell.get("cell_type") == "code"]
    tagged = [cell for cell in code if "parameters" in (cell.get("metadata", {}).get("tags") or [])]
    for cell in tagged + code:
        found = SEED_LINE.search(cell_source(cell))
        if found:
            return int(found[1])
    return None


@functools.cache
def course_sources() -> dict[str, str]:
    """The source digest of each of the course's own notebooks: a template left as it is, or an answer key."""
    from types import SimpleNamespace

    from .course import NOTEBOOKS

    known = {}
    for answer_key, template in NOTEBOOKS:
        for path, what in ((template, "the unchanged student template"), (answer_key, "the answer key")):
            try:   # the kit's own files: read as JSON, without nbformat's validation (a second per notebook)
                cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            except (OSError, ValueError, KeyError):
                continue
            known[source_digest(SimpleNamespace(cells=cells))] = f"{what} ({path.name})"
    return known


def hub_repository(result: GradeResult) -> str:
    """The Hub repository a verify-mode student named (lower case: the Hub's ids are), or ""."""
    if result.provenance.hub_repository:
        return result.provenance.hub_repository.lower()
    found = HUB_REPOSITORY.match(result.verification.model_source if result.verification else "")
    return found[1].lower() if found else ""


# --- the review ---------------------------------------------------------------------------
def review_class(results: list[GradeResult], settings: IntegritySettings | None = None,
                 public_hidden_set: bool = True, audit: dict | None = None) -> ClassReview:
    """Every flag of a class, from its results (and the spot audits' findings, already compared)."""
    settings = settings or IntegritySettings()
    started = time.perf_counter()
    graded = sorted((r for r in results if r.status == GRADED), key=lambda r: r.student_id)
    submitted_models = [r for r in graded if r.mode == VERIFY_MODE]
    flags = identical_notebooks(graded)
    weight_groups = identical_weights(submitted_models)
    flags += weight_groups + same_hub_repository(submitted_models)
    same_weights = {frozenset(pair) for flag in weight_groups for pair in combinations(flag.students, 2)}
    flags += near_identical_predictions(submitted_models, settings.near_identical_agreement, same_weights)
    flags += implausible_accuracy(graded, settings.plausible_accuracy, public_hidden_set)
    if audit:
        flags += [Flag(AUDIT_DISAGREES, [student], finding["message"], finding["evidence"])
                  for student, finding in sorted(audit.get("results", {}).items()) if finding.get("disagrees")]
    return ClassReview(flags=flags, audit=audit, computed_from={
        "students": len(results), "graded": len(graded), "submitted_models": len(submitted_models),
        "settings": asdict(settings), "public_hidden_set": public_hidden_set,
        "seconds": round(time.perf_counter() - started, 3)})


def groups_by(results: list[GradeResult], key) -> list[list[GradeResult]]:
    """Results sharing a non-empty key, two or more to a group."""
    found: dict = {}
    for result in results:
        value = key(result)
        if value:
            found.setdefault(value, []).append(result)
    return [group for group in found.values() if len(group) > 1]


def ids(group: list[GradeResult]) -> list[str]:
    return [result.student_id for result in group]


def identical_notebooks(results: list[GradeResult]) -> list[Flag]:
    """Byte-identical notebooks, then notebooks identical but for outputs, metadata and whitespace.
    A template left as it is, handed in by several students, is no one's work: not flagged."""
    known = course_sources()
    course_notebook = lambda group: known.get(group[0].provenance.source_sha256, "")  # noqa: E731
    flags = []
    byte_groups = [group for group in groups_by(results, lambda r: r.provenance.notebook_sha256)
                   if "template" not in course_notebook(group)]
    for group in byte_groups:
        flags.append(Flag(IDENTICAL_NOTEBOOK, ids(group), (
            f"{len(group)} students handed in byte-identical notebooks, saved outputs included"
            + (f": it is {course_notebook(group)}" if course_notebook(group) else "")),
            {"same": "bytes", "notebook_sha256": group[0].provenance.notebook_sha256,
             "is_course_notebook": course_notebook(group)}))
    said = [set(ids(group)) for group in byte_groups]
    for group in groups_by(results, lambda r: r.provenance.source_sha256):
        if "template" in course_notebook(group) or any(set(ids(group)) <= seen for seen in said):
            continue   # no one's work, or said already, more strongly
        flags.append(Flag(IDENTICAL_NOTEBOOK, ids(group), (
            f"{len(group)} students handed in the same notebook: every cell's source is identical (outputs, "
            "metadata and whitespace aside)" + (f": it is {course_notebook(group)}" if course_notebook(group) else "")),
            {"same": "source", "source_sha256": group[0].provenance.source_sha256,
             "is_course_notebook": course_notebook(group), "seeds": {r.student_id: r.provenance.seed for r in group}}))
    return flags


def weights_key(result: GradeResult) -> str:
    weights = result.provenance.weights_sha256
    return "\n".join(sorted(weights.values())) if weights else ""


def identical_weights(results: list[GradeResult]) -> list[Flag]:
    return [Flag(IDENTICAL_WEIGHTS, ids(group), (
        f"{len(group)} students submitted byte-identical model weights"
        + (" (from one Hub repository)" if len({hub_repository(r) for r in group}) == 1 and hub_repository(group[0])
           else "")), {"weights_sha256": group[0].provenance.weights_sha256,
                       "model_sources": {r.student_id: r.verification.model_source if r.verification else ""
                                         for r in group}})
            for group in groups_by(results, weights_key)]


def same_hub_repository(results: list[GradeResult]) -> list[Flag]:
    return [Flag(SAME_HUB_REPOSITORY, ids(group), (
        f"{len(group)} students named the same Hub repository, {hub_repository(group[0])}, as their model"),
        {"repository": hub_repository(group[0]),
         "model_sources": {r.student_id: r.verification.model_source if r.verification else "" for r in group}})
            for group in groups_by(results, hub_repository)]


def near_identical_predictions(results: list[GradeResult], threshold: float,
                               already: set[frozenset[str]]) -> list[Flag]:
    """Pairs of models that label at least ``threshold`` of the hidden reviews alike: the share two honest
    fine-tunes reach is far lower (docs/integrity.md), so a copy with noise added to its weights is caught.
    Compared only on the same hidden sample; pairs with identical weights are flagged as such instead."""
    flags = []
    by_sample: dict[tuple[str, int], list[GradeResult]] = {}
    for result in results:
        verification = result.verification
        if verification and len(verification.hidden_predictions) >= MIN_COMPARED_REVIEWS:
            by_sample.setdefault((verification.hidden_set_sha256, len(verification.hidden_predictions)),
                                 []).append(result)
    for group in by_sample.values():
        if len(group) < 2:
            continue
        labels = np.array([r.verification.hidden_predictions for r in group], dtype=np.float32)
        reviews = labels.shape[1]
        agreement = (labels @ labels.T + (1 - labels) @ (1 - labels).T) / reviews
        for i, j in zip(*np.nonzero(np.triu(agreement >= threshold, k=1))):
            first, second = group[i], group[j]
            if frozenset((first.student_id, second.student_id)) in already:
                continue
            share = float(agreement[i, j])
            seeds = {first.provenance.seed, second.provenance.seed}
            same_seed = len(seeds) == 1 and None not in seeds
            flags.append(Flag(NEAR_IDENTICAL_PREDICTIONS, [first.student_id, second.student_id], (
                f"the two models label {share:.1%} of the {reviews} hidden reviews alike; honest fine-tunes of the "
                f"course's recipe with different seeds stay below {threshold:.0%}: one may be a copy of the other "
                "(with its weights changed)" + (
                    f". Both notebooks set SEED = {first.provenance.seed}, and one seed draws the same reviews in the "
                    "same order, so two honest runs of it can come this close: compare the notebooks" if same_seed
                    else "")), {
                "agreement": round(share, 4), "disagreements": int(round((1 - share) * reviews)), "reviews": reviews,
                "threshold": threshold, "hidden_accuracy": {r.student_id: r.verification.accuracy for r in (first, second)},
                "seeds": {r.student_id: r.provenance.seed for r in (first, second)}, "same_seed": same_seed}))
    return flags


def implausible_accuracy(results: list[GradeResult], plausible: float, public_hidden_set: bool) -> list[Flag]:
    """Students whose hidden accuracy lies, with 95 % confidence, above the most the course's recipe reaches."""
    flags = []
    for result in results:
        verification = result.verification
        if not verification or verification.accuracy is None or not verification.accuracy_ci:
            continue
        low = verification.accuracy_ci[0]
        if low > plausible:
            where = ("the default hidden set is a sample of Amazon Polarity's public test split, which a student "
                     "can train on" if public_hidden_set else "far more data, or other data, than the recipe uses")
            flags.append(Flag(HIDDEN_ACCURACY_IMPLAUSIBLE, [result.student_id], (
                f"hidden accuracy {verification.accuracy:.3f} (95% CI from {low:.3f}) lies above the {plausible:.2f} "
                f"the course's recipe reaches: {where}"), {
                "hidden_accuracy": verification.accuracy, "ci_low": low, "plausible_accuracy": plausible,
                "public_hidden_set": public_hidden_set, "hidden_size": verification.hidden_size}))
    return flags


# --- what the instructor reads ------------------------------------------------------------
def gradebook_flags(review: ClassReview | None, student_id: str) -> list[str]:
    """The student's flags as the gradebook shows them: the kind, and the other students it names."""
    if review is None:
        return []
    texts = []
    for flag in review.flags_of(student_id):
        others = [other for other in flag.students if other != student_id]
        texts.append(f"{flag.kind} with {', '.join(others)}" if others else flag.kind)
    return texts


def write_review(out, review: ClassReview) -> None:
    write_atomic(out.root / INTEGRITY_JSON, json.dumps(review.to_dict(), indent=1))
    write_atomic(out.root / INTEGRITY_HTML, review_html(review))


EXPLAINED = {
    IDENTICAL_WEIGHTS: "the staged safetensors files have the same sha256",
    IDENTICAL_NOTEBOOK: "the notebooks are the same file, or the same cells once outputs, metadata and whitespace "
                        "are set aside",
    SAME_HUB_REPOSITORY: "the submissions name one Hub repository (submission.json or the submit cell's output)",
    NEAR_IDENTICAL_PREDICTIONS: "the two models give the same label to nearly every hidden review, far more often "
                                "than two honest fine-tunes with different seeds do",
    HIDDEN_ACCURACY_IMPLAUSIBLE: "the hidden accuracy lies above what the course's recipe reaches",
    AUDIT_DISAGREES: "a spot audit re-ran the notebook here, and what it produced disagrees with what was submitted",
}


def review_html(review: ClassReview) -> str:
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Class integrity review</title>"
             "<style>body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}"
             "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4rem .6rem;"
             "text-align:left;vertical-align:top}code{font-size:.85rem}</style></head><body>",
             "<h1>Class integrity review</h1>",
             f"<p>{review.computed_from.get('students', 0)} students, {len(review.flags)} flag(s). For the instructor "
             "only: a flag is a reason to look, never a verdict, and changes no points. Recomputed from every "
             "result after each run.</p>"]
    if review.flags:
        parts.append("<table><tr><th>flag</th><th>students</th><th>why</th><th>evidence</th></tr>")
        for flag in review.flags:
            students = ", ".join(f"<a href='#{esc(s)}'>{esc(s)}</a>" for s in flag.students)
            parts.append(f"<tr><td>{esc(flag.kind)}</td><td>{students}</td><td>{esc(flag.message)}</td>"
                         f"<td><code>{esc(json.dumps(flag.evidence, sort_keys=True))[:2000]}</code></td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No flags.</p>")
    flagged = sorted({student for flag in review.flags for student in flag.students})
    if flagged:
        parts.append("<h2>Per student</h2>")
    for student in flagged:
        parts.append(f"<h3 id='{esc(student)}'>{esc(student)}</h3><ul>")
        for flag in review.flags_of(student):
            others = [other for other in flag.students if other != student]
            parts.append(f"<li><b>{esc(flag.kind)}</b>{' with ' + esc(', '.join(others)) if others else ''}: "
                         f"{esc(flag.message)}</li>")
        parts.append("</ul>")
    if review.audit:
        audit = review.audit
        parts.append(f"<h2>Spot audit</h2><p>Seed {esc(str(audit.get('seed')))}; sample: "
                     f"{esc(', '.join(audit.get('sample', [])))}.</p><table><tr><th>student</th><th>verdict</th>"
                     "<th>why</th></tr>")
        for student, finding in sorted(audit.get("results", {}).items()):
            verdict = "disagrees" if finding.get("disagrees") else finding.get("verdict", "agrees")
            parts.append(f"<tr><td>{esc(student)}</td><td>{esc(verdict)}</td><td>{esc(finding.get('message', ''))}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>What each flag means</h2><ul>" + "".join(
        f"<li><b>{esc(kind)}</b>: {esc(text)}</li>" for kind, text in EXPLAINED.items()) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
