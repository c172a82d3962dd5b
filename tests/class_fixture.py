"""A fixture class for the class report: result files of 40 students, as `grade` writes them, and an
integrity.json as the integrity checks write it.

The students vary the way a real class does: most pass, some fall below the thresholds (a few with the
threshold inside their interval), some report figures far above the grader's, one is not gradable, one hit a
grader error, one was interrupted, one's output was cut off, and a few carry hostile text in their name and
reasons (markup, a script, a formula, right-to-left and control characters). Seeded: the same every time.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from grader.report import OutputFolder, write_atomic
from grader.results import (EXECUTE_MODE, GRADED, GRADER_ERROR, INTERRUPTED, NOT_GRADABLE, VERIFY_MODE, GradeResult,
                            Verification)
from grader.rubric import CheckResult, load_rubric
from grader.model_check.statistics import wilson_interval

HIDDEN_SIZE = 500
# Markup that must stay text: a script, an image whose error handler runs code, a closing tag, a formula.
HOSTILE_NAME = "<script>window.PWNED=1</script><img src=x onerror=\"window.PWNED=2\">"
HOSTILE_REASON = "</td></tr></table><h2 id='summary'>fake</h2>=HYPERLINK(\"http://x\") \u202egnp.exe \x1b[31m"


def _checks(rubric, accuracy: float | None, f1: float | None, *, ran=True, todo=False, predictions=True,
            reload=True, problem="no saved model") -> list[CheckResult]:
    def check(name, passed, message):
        points = rubric.points[name]
        return CheckResult(name, passed, points if passed else 0.0, points, message)

    def metric(name, value):
        threshold = getattr(rubric, name)
        if value is None:
            return check(name, False, f"not measured: {problem}")
        verdict = ">=" if value >= threshold else "<"
        return check(name, value >= threshold, f"hidden-set {name} {value:.3f} (95% CI {value - 0.03:.3f}-"
                                                f"{min(1, value + 0.03):.3f}) {verdict} {threshold:.2f}")

    return [check("ran_to_end", ran, "every cell ran without errors" if ran else
                  "cell 12 raised KeyError: 'label'"),
            check("no_todo_left", not todo, "TODO left: a `raise NotImplementedError` stub remains" if todo
                  else "no TODO stub left"),
            metric("accuracy", accuracy), metric("f1", f1),
            check("predictions", predictions, "5 predictions with confidences, both labels, made by the saved model"
                  if predictions else "3 valid predictions; at least 5 are needed"),
            check("reload", reload, "the saved model loads and reproduces every prediction" if reload else
                  "the saved model does not reproduce the predictions: 'great blender': notebook said positive "
                  "(0.910), the saved model says negative (0.620)")]


def _verification(rng, accuracy: float, f1: float) -> Verification:
    correct = round(accuracy * HIDDEN_SIZE)
    spread = rng.uniform(0.025, 0.04)
    return Verification(loaded=True, hidden_size=HIDDEN_SIZE, accuracy=correct / HIDDEN_SIZE,
                        accuracy_ci=wilson_interval(correct, HIDDEN_SIZE), f1=f1,
                        f1_ci=(max(0.0, f1 - spread), min(1.0, f1 + spread)), reproduced=True,
                        reviews_per_s=rng.uniform(20, 40), model_source="sentiment-model.zip")


def class_results(seed: int = 0) -> list[GradeResult]:
    rng = random.Random(seed)
    rubric = load_rubric()
    results = []
    for index in range(40):
        student = f"student-{index + 1:02d}"
        mode = VERIFY_MODE if index % 3 == 0 else EXECUTE_MODE
        accuracy = min(0.97, max(0.5, rng.gauss(0.89, 0.04)))
        if index in (5, 17, 29):            # trained too little: below the thresholds
            accuracy = rng.uniform(0.6, 0.8)
        if index in (8, 21):                # right at the threshold: it lies inside the interval
            accuracy = 0.852
        f1 = min(0.98, max(0.4, accuracy + rng.gauss(0, 0.01)))
        verification = _verification(rng, accuracy, f1)
        reported = {"accuracy": round(verification.accuracy + rng.gauss(0, 0.008), 4),
                    "f1": round(verification.f1 + rng.gauss(0, 0.008), 4)}
        result = GradeResult(student_id=student, notebook=f"submissions/{student}.ipynb", display_name=f"Student {index + 1}",
                             mode=mode, sandboxed=mode == EXECUTE_MODE, verification=verification,
                             reported_metrics=reported, run_time_s=round(rng.uniform(40, 90) if mode == VERIFY_MODE
                                                                         else rng.uniform(600, 1500), 1))
        result.checks = _checks(rubric, verification.accuracy, verification.f1, todo=index == 11,
                                predictions=index != 14, reload=index not in (14, 26))
        if index in (3, 26):                # claims far more than its model does
            result.reported_metrics = {"accuracy": 0.97, "f1": 0.97}
            result.disagreement = [f"the notebook reports test accuracy 0.970, the saved model measures "
                                   f"{verification.accuracy:.3f}",
                                   f"the notebook reports test f1 0.970, the saved model measures {verification.f1:.3f}"]
        if index == 19:
            result.output_truncated = True
        if index == 33:                     # no model at all
            result.verification = Verification(problem="no model was submitted: upload the zip")
            result.checks = _checks(rubric, None, None, predictions=False, reload=False,
                                    problem="no model was submitted: upload the zip")
        if index == 7:
            result.display_name = HOSTILE_NAME
            result.checks[0] = CheckResult("ran_to_end", False, 0.0, 10.0, HOSTILE_REASON)
        results.append(result)
    results.append(GradeResult(student_id="not-a-notebook", notebook="submissions/not-a-notebook.ipynb",
                               status=NOT_GRADABLE, reason="not a valid Jupyter notebook: Expecting value",
                               run_time_s=0.1))
    results.append(GradeResult(student_id="grader-bug", notebook="submissions/grader-bug.ipynb", status=GRADER_ERROR,
                               reason="internal grader error: RuntimeError: " + HOSTILE_REASON, run_time_s=3.2))
    results.append(GradeResult(student_id="interrupted", notebook="submissions/interrupted.ipynb", status=INTERRUPTED,
                               reason="the grading run was interrupted before this notebook was graded"))
    assert {r.status for r in results} == {GRADED, NOT_GRADABLE, GRADER_ERROR, INTERRUPTED}
    return results


INTEGRITY = {
    "flags": [
        {"kind": "identical-weights", "students": ["student-04", "student-10"],
         "message": "the two models' safetensors files are byte for byte the same",
         "evidence": {"sha256": "9f2c" * 16, "file": "model.safetensors"}},
        {"kind": "identical-notebook", "students": ["student-04", "student-10", "student-16"],
         "message": "the notebooks' code cells are the same, whitespace aside", "evidence": {"cells": 41}},
        {"kind": "same-hub-repository", "students": ["student-13", "student-25"],
         "message": "both submit jane/amazon-sentiment", "evidence": {"repository": "jane/amazon-sentiment",
                                                                     "revision": "0123456789abcdef" * 2 + "01234567"}},
        {"kind": "near-identical-predictions", "students": ["student-04", "someone-without-a-result"],
         "message": HOSTILE_NAME, "evidence": {"agreement": 0.998, "note": HOSTILE_REASON}},
        {"kind": "hidden-accuracy-implausible", "students": ["student-31"],
         "message": "0.97 on the hidden set after a run of 12 s", "evidence": {"accuracy": 0.97, "run_time_s": 12}},
        "not a flag",
    ],
    "audit": {"sampled": 4, "agreed": 3, "disagreed": ["student-31"]},
    "computed_from": {"results": 43, "models": 39},
}


def write_class(root: Path, results: list[GradeResult] | None = None, integrity: dict | None = INTEGRITY,
                feedback: bool = True) -> OutputFolder:
    """The results as `grade` leaves them in ROOT: results/, feedback/, gradebook.csv (and integrity.json)."""
    out = OutputFolder(root)
    results = class_results() if results is None else results
    rubric = load_rubric()
    for result in results:
        write_atomic(out.result_path(result.student_id), json.dumps(result.to_dict(), indent=1))
        if feedback:
            from grader.report import feedback_html

            write_atomic(out.feedback / f"{result.student_id}.html", feedback_html(result, rubric))
    out.write_gradebooks(results, rubric)
    if integrity is not None:
        write_atomic(root / "integrity.json", json.dumps(integrity))
    return out
