"""Spot audits: ``grade SUBMISSIONS --verify --audit N`` re-runs N students of a verify-mode batch here.

Verify mode checks that the submitted model makes the notebook's predictions; it cannot see whether the
notebook, as handed in, trains that model (a cell deleted after training, a model made elsewhere). An audit
draws N students at random among those whose model was measured, re-executes each one's notebook in execute
mode, sandboxed, with the run's parameters (``-p``), and compares what the re-run made with what was
submitted: whether it ran to the end, its hidden-set accuracy and F1 against the submitted model's, its own
test-split metrics against the ones the notebook reported, how many hidden reviews the two models label alike,
and the labels of the notebook's own predictions. Beyond the noise of an honest re-run (AUDIT_METRIC_BAND,
AUDIT_AGREEMENT_FLOOR: measured in docs/integrity.md) it disagrees, and grader.integrity flags the student.

The sample is the N students ranked first by sha256(seed, student id): random, stable as students come and
go, and a larger N keeps the smaller N's students. The seed is drawn once per output folder and kept in its
private part (.grader/audit-seed), unless ``--audit-seed`` names one; .grader/audit.json records it with the
sample and each finding, .grader/audit/ the re-runs' results and executed notebooks. A re-run is kept for a
later ``--audit`` while the notebook and the settings are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import nbformat
from tqdm.auto import tqdm

from .cancel import Cancellation
from .contract import read_contract
from .course import ANSWER_KEY
from .files import kept_seed, write_atomic
from .fingerprint import file_digest, fingerprint
from .integrity import ClassReview, review_class, write_review
from .options import GradingOptions, graded_settings
from .pipeline import grade_submission
from .report import OutputFolder
from .results import GRADED, GRADER_ERROR, RETRIED, VERIFY_MODE, GradeResult, Mode
from .run_folder import job_environment, job_tokens
from .sandbox import plan_sandbox
from .submissions import Submission
from . import verify_mode

AUDIT_STATE = "audit.json"
AUDIT_SEED_FILE = "audit-seed"
AUDIT_FOLDER = "audit"
# How far an honest re-run may land from the submitted run: benchmarks/integrity_agreement.py measured the
# recipe's spread across seeds (docs/integrity.md); a re-run on other hardware differs like another seed at most.
AUDIT_METRIC_BAND = 0.05         # hidden accuracy / F1, and the notebook's own test metrics
AUDIT_AGREEMENT_FLOOR = 0.85     # share of hidden reviews the re-run's model and the submitted one label alike
CONFIDENT = 0.75                 # a prediction this sure that changes label in an honest re-run is not noise


def audit_seed(out: OutputFolder, chosen: int | None) -> int:
    """The audit's seed: ``chosen``, else the one this output folder drew on its first audit (kept private)."""
    return kept_seed(out.private / AUDIT_SEED_FILE, chosen)


def auditable(result: GradeResult) -> bool:
    """Graded in verify mode with a model measured: what an audit can confirm or refute."""
    return (result.status == GRADED and result.mode == VERIFY_MODE and result.verification is not None
            and result.verification.accuracy is not None)


def draw_sample(results: list[GradeResult], count: int, seed: int) -> list[str]:
    """The ``count`` auditable students ranked first by sha256(seed, id), in that order."""
    rank = lambda student: hashlib.sha256(f"{seed}\0{student}".encode("utf-8", "surrogatepass")).hexdigest()  # noqa: E731
    return sorted((r.student_id for r in results if auditable(r)), key=rank)[:count]


def load_state(out: OutputFolder) -> dict:
    path = out.private / AUDIT_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class AuditFolder:
    """.grader/audit/: the re-runs' results and executed notebooks, private like everything in .grader/."""

    def __init__(self, out: OutputFolder):
        self.root = out.private / AUDIT_FOLDER

    def result_path(self, student_id: str) -> Path:
        return self.root / "results" / f"{student_id}.json"

    def executed_path(self, student_id: str) -> Path:
        return self.root / "executed" / f"{student_id}.ipynb"

    def load(self, student_id: str) -> GradeResult | None:
        try:
            return GradeResult.from_dict(json.loads(self.result_path(student_id).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def save(self, result: GradeResult, executed) -> None:
        if executed is not None:
            write_atomic(self.executed_path(result.student_id), nbformat.writes(executed))
        write_atomic(self.result_path(result.student_id), json.dumps(result.to_dict(), indent=1))


def run_audit(folder: Path, submissions: list[Submission], results: list[GradeResult], options: GradingOptions,
              out: OutputFolder, hidden_file: Path, cancellation: Cancellation, progress: bool = True) -> dict:
    """Re-run the sample in execute mode and compare; returns the audit state written to .grader/audit.json."""
    seed = audit_seed(out, options.audit_seed)
    sample = draw_sample(results, options.audit, seed)
    by_id = {s.student_id: s for s in submissions}
    current = {r.student_id: r for r in results}
    rerun_options = replace(options, mode=Mode.EXECUTE)
    folder_ = AuditFolder(out)
    sandbox = plan_sandbox(options.sandbox, parameters=options.parameters,
                           hidden=[out.root, folder, ANSWER_KEY.parent, options.hidden_set])
    settings = graded_settings(rerun_options, file_digest(hidden_file), sandbox.flags is not None)
    earlier = load_state(out).get("results", {})
    state = {"seed": seed, "requested": options.audit, "sample": sample, "results": {}}
    pending = []
    for student in sample:
        rerun_fingerprint = fingerprint(by_id[student].notebook, settings)
        rerun = folder_.load(student)
        if rerun is not None and rerun.fingerprint == rerun_fingerprint and rerun.status not in RETRIED:
            state["results"][student] = finding(current[student], by_id[student], rerun, folder_.executed_path(student))
        else:
            pending.append((by_id[student], rerun_fingerprint))
    for student, old in earlier.items():   # audits of earlier samples stay on record
        state["results"].setdefault(student, old)
    tokens = job_tokens(options.jobs)

    def rerun_one(submission: Submission, rerun_fingerprint: str) -> tuple[str, GradeResult]:
        gpu = tokens.get()
        workdir = out.work / f"audit-{submission.student_id}"
        try:
            rerun, executed = grade_submission(submission, rerun_options, hidden_file, workdir,
                                               job_environment(gpu, options.jobs), sandbox, cancellation=cancellation)
        except Exception as error:  # a grader bug: that student's audit is retried next time, the rest go on
            rerun = GradeResult.for_submission(submission, status=GRADER_ERROR,
                                               reason=f"internal grader error: {type(error).__name__}: {error}")
            executed = None
        finally:
            tokens.put(gpu)
            if not options.keep_work:
                shutil.rmtree(workdir, ignore_errors=True)
        if cancellation.cancelled:
            return submission.student_id, None
        rerun.fingerprint = rerun_fingerprint
        folder_.save(rerun, executed)
        return submission.student_id, rerun

    with ThreadPoolExecutor(max_workers=options.jobs) as pool, \
            tqdm(total=len(pending), desc="Auditing (re-running)", unit="notebook", disable=not progress) as bar:
        futures = [pool.submit(rerun_one, submission, rerun_fingerprint) for submission, rerun_fingerprint in pending]
        try:
            for future in as_completed(futures):
                student, rerun = future.result()
                if rerun is not None:
                    state["results"][student] = finding(current[student], by_id[student], rerun,
                                                        folder_.executed_path(student))
                    bar.set_postfix_str(f"{student}: {state['results'][student]['verdict']}")
                bar.update()
        except BaseException:
            cancellation.cancel()
            raise
        finally:
            write_atomic(out.private / AUDIT_STATE, json.dumps(state, indent=1))
    return state


# --- the comparison -----------------------------------------------------------------------
def finding(submitted: GradeResult, submission: Submission, rerun: GradeResult, executed_path: Path) -> dict:
    """What the re-run says of the submission: a verdict, one sentence for the instructor, and the figures."""
    reasons, evidence = [], {"rerun_status": rerun.status, "rerun_total": rerun.total,
                             "submitted_total": submitted.total}
    run = rerun.check("ran_to_end")
    if rerun.status in RETRIED:   # the grader failed, not the student: retried by the next --audit
        return {"disagrees": False, "verdict": "not audited", "evidence": evidence,
                "message": f"the re-run did not finish ({rerun.reason}); the next --audit tries again",
                "verify_fingerprint": submitted.fingerprint}
    if rerun.status != GRADED:
        reasons.append(f"the re-run could not be graded: {rerun.reason}")
    elif run is not None and not run.passed:
        reasons.append(f"the re-run did not run to the end: {run.message}")
    elif rerun.verification is None or not rerun.verification.loaded:
        reasons.append("the re-run saved no model that loads")
    else:
        reasons += metric_differences(submitted, rerun, evidence)
        reasons += prediction_differences(submission, executed_path, evidence)
    return {"disagrees": bool(reasons), "verdict": "disagrees" if reasons else "agrees",
            "message": ("the re-run here disagrees with the submission: " + "; ".join(reasons)) if reasons else
                       "the re-run here agrees with the submission, within an honest re-run's noise",
            "evidence": evidence, "verify_fingerprint": submitted.fingerprint}


def metric_differences(submitted: GradeResult, rerun: GradeResult, evidence: dict) -> list[str]:
    reasons = []
    before, after = submitted.verification, rerun.verification
    for name in ("accuracy", "f1"):
        measured, again = getattr(before, name), getattr(after, name)
        evidence[f"hidden_{name}"] = {"submitted": measured, "rerun": again}
        if measured is not None and again is not None and abs(measured - again) > AUDIT_METRIC_BAND:
            reasons.append(f"hidden {name} {again:.3f} re-run against {measured:.3f} submitted")
        reported, rerun_reported = submitted.reported_metrics.get(name), rerun.reported_metrics.get(name)
        evidence[f"test_{name}"] = {"reported": reported, "rerun": rerun_reported}
        if reported is not None and rerun_reported is not None and abs(reported - rerun_reported) > AUDIT_METRIC_BAND:
            reasons.append(f"own test-split {name} {rerun_reported:.3f} re-run against {reported:.3f} reported")
    if (before.hidden_predictions and len(before.hidden_predictions) == len(after.hidden_predictions)
            and before.hidden_set_sha256 == after.hidden_set_sha256):
        same = sum(a == b for a, b in zip(before.hidden_predictions, after.hidden_predictions))
        share = same / len(before.hidden_predictions)
        evidence["hidden_agreement"] = round(share, 4)
        if share < AUDIT_AGREEMENT_FLOOR:
            reasons.append(f"the two models label only {share:.1%} of the hidden reviews alike")
    return reasons


def prediction_differences(submission: Submission, executed_path: Path, evidence: dict) -> list[str]:
    """The notebook's own predictions: labels the re-run changed where the submission was confident."""
    try:
        handed_in = verify_mode.saved_contract(nbformat.read(submission.notebook, as_version=4)).predictions
        again = {p.text: p for p in read_contract(nbformat.read(executed_path, as_version=4)).predictions}
    except (OSError, ValueError):
        return []
    changed = [p.text for p in handed_in if p.text in again and again[p.text].label != p.label
               and p.confidence >= CONFIDENT]
    evidence["predictions_compared"] = sum(p.text in again for p in handed_in)
    evidence["predictions_changed"] = len(changed)
    if changed:
        return [f"{len(changed)} of the notebook's confident predictions change label (first: {changed[0][:60]!r})"]
    return []


def current_findings(state: dict, results: list[GradeResult]) -> dict | None:
    """The audit section of the class review: each finding still about the submission graded now."""
    if not state:
        return None
    fingerprints = {r.student_id: r.fingerprint for r in results}
    findings = {}
    for student, found in (state.get("results") or {}).items():
        if not isinstance(found, dict) or student not in fingerprints:
            continue
        if found.get("verify_fingerprint") != fingerprints[student]:
            found = {"disagrees": False, "verdict": "stale", "evidence": {},
                     "message": "the submission changed after this audit: audit it again"}
        findings[student] = found
    return {"seed": state.get("seed"), "sample": state.get("sample", []), "results": findings}


# --- the class's review: the integrity flags, with the audits on record -------------------------
def write_class_review(out: OutputFolder, results: list[GradeResult], options: GradingOptions) -> ClassReview:
    """Review the class from ``results`` and the audits on record in ``out``; write integrity.json and .html."""
    review = review_class(results, options.integrity, public_hidden_set=options.hidden_set is None,
                          audit=current_findings(load_state(out), results))
    write_review(out, review)
    return review
