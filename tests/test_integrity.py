"""The class review (grader.integrity): every pair of students compared from their stored results.

Fast tests on results made here (no model runs): what is flagged, what is not (negative controls), the
schema of OUT/integrity.json, the gradebook's flags column, that a student's feedback names no classmate,
and that the review is recomputed from every result after each run (resume and `grade collect` included).
The end-to-end runs with real submissions are in tests/test_integrity_runs.py.
"""
import csv
import io
import json
import random

import nbformat
import pytest

from grader import GradingOptions, cli, grade_submissions
from grader import batch as batch_module
from grader.errors import UsageError
from grader.integrity import (HIDDEN_ACCURACY_IMPLAUSIBLE, IDENTICAL_NOTEBOOK, IDENTICAL_WEIGHTS,
                              NEAR_IDENTICAL_PREDICTIONS, SAME_HUB_REPOSITORY, IntegritySettings, course_sources,
                              notebook_seed, review_class, source_digest)
from grader.report import feedback_html, gradebook_csv
from grader.results import EXECUTE_MODE, VERIFY_MODE, GradeResult, Provenance, Verification
from grader.rubric import load_rubric

REVIEWS = 1000


def student(name, *, mode=VERIFY_MODE, notebook=None, source=None, weights=None, hub="", predictions=None,
            hidden="sample-1", accuracy=0.9, ci=(0.88, 0.92), seed=42, model_source="model.zip") -> GradeResult:
    verification = Verification(loaded=True, hidden_size=REVIEWS, accuracy=accuracy, accuracy_ci=ci, f1=accuracy,
                                model_source=model_source, hidden_predictions=list(predictions or []),
                                hidden_set_sha256=hidden)
    return GradeResult(name, f"{name}.ipynb", mode=mode, verification=verification, provenance=Provenance(
        notebook_sha256=notebook or f"bytes-{name}", source_sha256=source or f"source-{name}", seed=seed,
        hub_repository=hub, weights_sha256=weights if weights is not None else {"model.safetensors": f"w-{name}"}))


def kinds(review, *students) -> set[str]:
    return {flag.kind for flag in review.flags if set(students) <= set(flag.students)}


# What is flagged ----------------------------------------------------------------------------------
def test_identical_weights_and_notebooks_are_flagged_for_both_students_and_nobody_else():
    same = {"model.safetensors": "a" * 64}
    results = [student("alice", weights=same, notebook="n1", source="s1"),
               student("bob", weights=same, notebook="n1", source="s1"),
               student("carol", source="s1"),            # the same cells, other outputs and metadata
               student("dave")]                          # negative control: nothing shared
    review = review_class(results)
    assert kinds(review, "alice", "bob") == {IDENTICAL_WEIGHTS, IDENTICAL_NOTEBOOK}
    by_bytes = next(f for f in review.flags if f.kind == IDENTICAL_NOTEBOOK and f.evidence["same"] == "bytes")
    assert by_bytes.students == ["alice", "bob"]
    by_source = next(f for f in review.flags if f.kind == IDENTICAL_NOTEBOOK and f.evidence["same"] == "source")
    assert by_source.students == ["alice", "bob", "carol"]
    assert review.flags_of("dave") == []


def test_a_group_of_identical_notebooks_is_one_flag_naming_them_all():
    results = [student(name, notebook="n1", source="s1") for name in ("a", "b", "c", "d")]
    flags = [f for f in review_class(results).flags if f.kind == IDENTICAL_NOTEBOOK]
    assert len(flags) == 1 and flags[0].students == ["a", "b", "c", "d"]   # bytes; sources would say the same


def test_the_unchanged_template_is_nobodys_work_but_the_answer_key_is_flagged():
    template, answer_key = (next(digest for digest, what in course_sources().items() if kind in what)
                            for kind in ("template", "answer key"))
    untouched = [student(name, source=template, notebook="blank", weights={}) for name in ("a", "b")]
    leaked = [student(name, source=answer_key) for name in ("c", "d")]
    review = review_class(untouched + leaked)
    assert [f.students for f in review.flags] == [["c", "d"]]
    assert "answer key" in review.flags[0].message and review.flags[0].evidence["is_course_notebook"]


def test_two_students_naming_one_hub_repository_are_flagged_whatever_its_case():
    results = [student("alice", hub="Jane/Sentiment"), student("bob", hub="jane/sentiment"),
               student("carol", hub="carol/sentiment")]
    review = review_class(results)
    assert kinds(review, "alice", "bob") == {SAME_HUB_REPOSITORY}
    assert review.flags_of("carol") == []


def test_model_comparisons_are_for_submitted_models_only():
    """In execute mode the grader trained both models from one seed: identical weights say nothing there."""
    same = {"model.safetensors": "a" * 64}
    labels = [0, 1] * (REVIEWS // 2)
    results = [student(name, mode=EXECUTE_MODE, weights=same, predictions=labels) for name in ("alice", "bob")]
    assert review_class(results).flags == []
    results = [student(name, weights=same, predictions=labels) for name in ("alice", "bob")]   # control
    assert kinds(review_class(results), "alice", "bob") == {IDENTICAL_WEIGHTS}


def honest_and_copied(rng: random.Random) -> dict[str, list[int]]:
    """Hidden-set labels of three honest models and a noisy copy, with the measured shape: honest fine-tunes
    err on a shared core of hard reviews plus some of their own (agreeing on about 93 % of the reviews,
    docs/integrity.md), a copy with noise added to its weights flips a few labels of its original."""
    truth = [rng.randint(0, 1) for _ in range(REVIEWS)]
    hard = set(rng.sample(range(REVIEWS), 120))

    def honest():
        return [1 - label if (i in hard and rng.random() < 0.6) or rng.random() < 0.03 else label
                for i, label in enumerate(truth)]

    models = {"alice": honest(), "bob": honest(), "carol": honest()}
    models["mallory"] = [1 - label if rng.random() < 0.006 else label for label in models["alice"]]
    return models


def agreement(a, b) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def test_a_near_identical_model_is_flagged_and_honest_pairs_are_not():
    models = honest_and_copied(random.Random(0))
    assert all(0.88 < agreement(models[a], models[b]) < 0.96 for a, b in (("alice", "bob"), ("bob", "carol")))
    review = review_class([student(name, predictions=labels) for name, labels in models.items()])
    assert [(f.kind, f.students) for f in review.flags] == [(NEAR_IDENTICAL_PREDICTIONS, ["alice", "mallory"])]
    evidence = review.flags[0].evidence
    assert evidence["agreement"] == pytest.approx(agreement(models["alice"], models["mallory"]), abs=1e-4)
    assert evidence["agreement"] >= IntegritySettings().near_identical_agreement and evidence["reviews"] == REVIEWS


def test_a_near_identical_pair_of_one_seed_says_that_the_seed_can_explain_it():
    models = honest_and_copied(random.Random(4))
    flags = review_class([student("alice", predictions=models["alice"], seed=42),
                          student("mallory", predictions=models["mallory"], seed=42)]).flags
    assert "Both notebooks set SEED = 42" in flags[0].message and flags[0].evidence["same_seed"]
    flags = review_class([student("alice", predictions=models["alice"], seed=42),
                          student("mallory", predictions=models["mallory"], seed=7)]).flags
    assert "SEED" not in flags[0].message and not flags[0].evidence["same_seed"]


def test_predictions_on_another_hidden_sample_are_not_compared():
    models = honest_and_copied(random.Random(1))
    results = [student("alice", predictions=models["alice"]),
               student("mallory", predictions=models["mallory"], hidden="sample-2")]
    assert review_class(results).flags == []


def test_a_pair_with_identical_weights_is_not_flagged_twice():
    models = honest_and_copied(random.Random(2))
    same = {"model.safetensors": "a" * 64}
    results = [student(name, predictions=models["alice"], weights=same) for name in ("alice", "bob")]
    assert [f.kind for f in review_class(results).flags] == [IDENTICAL_WEIGHTS]


def test_a_hidden_accuracy_far_above_the_recipe_is_flagged():
    plausible = IntegritySettings().plausible_accuracy
    results = [student("alice", accuracy=0.99, ci=(plausible + 0.01, 0.995)),
               student("bob", accuracy=plausible + 0.01, ci=(plausible - 0.02, plausible + 0.03))]   # within noise
    review = review_class(results, public_hidden_set=True)
    assert [(f.kind, f.students) for f in review.flags] == [(HIDDEN_ACCURACY_IMPLAUSIBLE, ["alice"])]
    assert "public test split" in review.flags[0].message
    private = review_class(results, public_hidden_set=False)
    assert "public" not in private.flags[0].message and not private.flags[0].evidence["public_hidden_set"]


def test_the_notebook_digest_ignores_outputs_metadata_ids_and_whitespace():
    cells = [nbformat.v4.new_markdown_cell("# Project"), nbformat.v4.new_code_cell("SEED = 7\nx = 1")]
    nb = nbformat.v4.new_notebook(cells=cells)
    run = nbformat.from_dict(json.loads(nbformat.writes(nb)))
    run.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    run.cells[1].execution_count, run.cells[1].id = 3, "renamed"
    run.metadata["colab"] = {"provenance": []}
    run.cells[1].source = "SEED = 7\n\n    x  =  1   "
    run.cells.append(nbformat.v4.new_code_cell(""))
    assert source_digest(run) == source_digest(nb)
    changed = nbformat.from_dict(json.loads(nbformat.writes(nb)))
    changed.cells[1].source = "SEED = 7\nx = 2"
    assert source_digest(changed) != source_digest(nb)   # negative control: a change of code counts
    assert notebook_seed(nb) == 7


# What the instructor reads, and what a student does not ------------------------------------------
def flagged_class() -> list[GradeResult]:
    same = {"model.safetensors": "a" * 64}
    return [student("alice", weights=same), student("bob", weights=same), student("carol")]


def test_the_gradebook_names_the_flag_and_the_other_student():
    review = review_class(flagged_class())
    rows = {row["student_id"]: row for row in csv.DictReader(io.StringIO(gradebook_csv(flagged_class(), review)))}
    assert rows["alice"]["flags"] == "identical-weights with bob"
    assert rows["bob"]["flags"] == "identical-weights with alice"
    assert rows["carol"]["flags"] == ""
    unflagged = {row["student_id"]: row for row in csv.DictReader(io.StringIO(gradebook_csv(flagged_class())))}
    assert unflagged["alice"]["flags"] == ""   # control: the column comes from the review


def test_a_students_feedback_never_names_a_classmate(tmp_path):
    """The feedback goes to the student; the flags (and the other student's id) stay on the instructor's side."""
    results = flagged_class()
    review = review_class(results)
    assert review.flags_of("alice")
    for result in results:
        page = feedback_html(result, load_rubric())
        assert all(other.student_id not in page for other in results if other is not result)
        assert "identical-weights" not in page


def test_the_instructors_page_shows_what_a_student_named_as_text():
    from grader.integrity import review_html

    same = {"model.safetensors": "a" * 64}
    hostile = "<img src=x onerror=alert(1)>.zip"   # a file name is the student's to choose
    results = [student("alice", weights=same, model_source=hostile), student("bob", weights=same)]
    page = review_html(review_class(results))
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;.zip" in page
    assert "id='alice'" in page and "identical-weights" in page


def test_the_class_review_keeps_the_agreed_schema(tmp_path):
    data = json.loads(json.dumps(review_class(flagged_class()).to_dict()))
    assert set(data) == {"flags", "computed_from"}   # "audit" only when there was one
    assert {"students", "seconds"} <= set(data["computed_from"]) and data["computed_from"]["students"] == 3
    for flag in data["flags"]:
        assert set(flag) == {"kind", "students", "message", "evidence"}
        assert isinstance(flag["students"], list) and isinstance(flag["evidence"], dict)


def test_hidden_predictions_are_stored_one_digit_a_review():
    labels = [random.Random(3).randint(0, 1) for _ in range(REVIEWS)]
    result = student("alice", predictions=labels)
    text = json.dumps(result.to_dict(), indent=1)
    assert json.loads(text)["verification"]["hidden_predictions"] == "".join(map(str, labels))
    assert GradeResult.from_dict(json.loads(text)).verification.hidden_predictions == labels
    # compact: the 1,000 labels cost about 1 kB, where a JSON list with indent=1 costs about 5
    plain = json.dumps({"labels": labels}, indent=1)
    assert len(text) - len(json.dumps(student("alice").to_dict(), indent=1)) < REVIEWS + 10 < len(plain) / 3


# Recomputed from every result after each run ------------------------------------------------------
def write_notebooks(folder, names):
    folder.mkdir(exist_ok=True)
    for name in names:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"x = '{name}'")]),
                       folder / f"{name}.ipynb")


def graded_with_weights(weights: dict[str, str]):
    """A stand-in for grade_submission: a verify-mode result whose staged weights are ``weights[student]``."""
    def grade(submission, *args, **kwargs):
        result = student(submission.student_id, weights={"model.safetensors": weights[submission.student_id]})
        result.notebook = str(submission.notebook)
        return result, None
    return grade


def test_the_review_is_recomputed_after_every_run_resume_included(tmp_path, tiny_data_dir, monkeypatch):
    folder, out = tmp_path / "submissions", tmp_path / "out"
    write_notebooks(folder, ["alice", "bob", "carol"])
    weights = {"alice": "w1", "bob": "w1", "carol": "w2"}
    monkeypatch.setattr(batch_module, "grade_submission", graded_with_weights(weights))
    options = GradingOptions(output_dir=out, hidden_set=tiny_data_dir / "test.csv", hidden_size=20, sandbox="off")
    grade_submissions(folder, options, progress=False)
    flags = json.loads((out / "integrity.json").read_text())["flags"]
    assert [(f["kind"], f["students"]) for f in flags] == [(IDENTICAL_WEIGHTS, ["alice", "bob"])]
    assert "bob" in (out / "integrity.html").read_text()

    # carol resubmits bob's model: only she is graded again, yet the flag covers all three
    weights["carol"] = "w1"
    (folder / "carol.ipynb").write_text((folder / "carol.ipynb").read_text().replace("carol", "carol2"))
    batch = grade_submissions(folder, options, progress=False)
    assert sorted(batch.resumed) == ["alice", "bob"] and batch.graded_now == ["carol"]
    flags = json.loads((out / "integrity.json").read_text())["flags"]
    assert [(f["kind"], f["students"]) for f in flags] == [(IDENTICAL_WEIGHTS, ["alice", "bob", "carol"])]
    rows = {row["student_id"]: row["flags"] for row in csv.DictReader(open(out / "gradebook.csv"))}
    assert rows["alice"] == "identical-weights with bob, carol"
    # no student's result holds a flag: they depend on the class, and a result only on its student
    for name in ("alice", "bob", "carol"):
        assert "identical-weights" not in (out / "results" / f"{name}.json").read_text()

    # bob leaves the class: the review forgets him at the next run, though nobody is regraded
    (folder / "bob.ipynb").unlink()
    batch = grade_submissions(folder, options, progress=False)
    assert batch.graded_now == []
    flags = json.loads((out / "integrity.json").read_text())["flags"]
    assert [(f["kind"], f["students"]) for f in flags] == [(IDENTICAL_WEIGHTS, ["alice", "carol"])]


def test_grade_collect_writes_the_review_too(tmp_path, tiny_data_dir, monkeypatch):
    from grader.slurm import collect

    folder, out = tmp_path / "submissions", tmp_path / "out"
    write_notebooks(folder, ["alice", "bob"])
    monkeypatch.setattr(batch_module, "grade_submission", graded_with_weights({"alice": "w1", "bob": "w1"}))
    grade_submissions(folder, GradingOptions(output_dir=out, hidden_set=tiny_data_dir / "test.csv", hidden_size=20,
                                             sandbox="off"), progress=False)
    (out / "integrity.json").unlink()
    (out / "gradebook.csv").unlink()
    collect(out)
    flags = json.loads((out / "integrity.json").read_text())["flags"]
    assert [(f["kind"], f["students"]) for f in flags] == [(IDENTICAL_WEIGHTS, ["alice", "bob"])]
    rows = {row["student_id"]: row["flags"] for row in csv.DictReader(open(out / "gradebook.csv"))}
    assert rows == {"alice": "identical-weights with bob", "bob": "identical-weights with alice"}


# The command line -----------------------------------------------------------------------------------
def test_audit_needs_verify_mode_local_copies_and_this_machine(tmp_path):
    write_notebooks(tmp_path / "submissions", ["alice"])
    local = {"MODEL_NAME": str(tmp_path), "LOCAL_DATA_DIR": str(tmp_path)}

    def grade(**settings):
        grade_submissions(tmp_path / "submissions", GradingOptions(output_dir=tmp_path / "out", **settings))

    with pytest.raises(UsageError, match="add --verify"):
        grade(audit=2, parameters=local)
    with pytest.raises(UsageError, match="no network"):   # every re-run would fail on the download
        grade(audit=2, mode="verify")
    from grader.slurm import SlurmOptions
    with pytest.raises(UsageError, match="without --slurm"):
        grade_submissions(tmp_path / "submissions", GradingOptions(output_dir=tmp_path / "out", audit=2, parameters=local,
                                                                   mode="verify"), slurm=SlurmOptions())


def test_the_command_line_warns_that_the_default_hidden_set_is_public(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "grade_submissions", lambda *args, **kwargs: (_ for _ in ()).throw(UsageError("stop")))
    cli.main([str(tmp_path), "--verify", "-q"])
    assert "public test split" in capsys.readouterr().err
    cli.main([str(tmp_path), "--verify", "-q", "--hidden-set", str(tmp_path / "private.csv")])
    assert "public test split" not in capsys.readouterr().err   # control: a private set is not warned about
    assert "public" in cli.grading_parser().format_help() and "private CSV" in cli.grading_parser().format_help()
