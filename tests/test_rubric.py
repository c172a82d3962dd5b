import pytest

from grader.errors import ConfigError
from grader.rubric import CHECKS, disagrees, load_rubric


def test_the_course_rubric():
    rubric = load_rubric()
    assert (rubric.accuracy, rubric.f1, rubric.min_predictions) == (0.85, 0.85, 5)
    assert set(rubric.points) == set(CHECKS) and rubric.max_points == 100


def test_an_instructor_rubric(tmp_path):
    path = tmp_path / "rubric.toml"
    path.write_text("[thresholds]\naccuracy = 0.8\n[points]\naccuracy = 50\nreload = 50\n")
    rubric = load_rubric(path)
    assert rubric.accuracy == 0.8 and rubric.f1 == 0.85 and rubric.max_points == 100 and rubric.points["f1"] == 0


@pytest.mark.parametrize("text, message", [
    ("[points]\naccuracyy = 5\n", "unknown"),
    ("[thresholds]\naccuracy = 85\n", "[0, 1]"),
    ("[thresholds\n", "cannot read"),
    ("[thresholds]\nf1 = 'high'\n", "could not convert"),
])
def test_bad_rubrics_are_config_errors(tmp_path, text, message):
    path = tmp_path / "rubric.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_rubric(path)


def test_disagreement_is_beyond_sampling_noise_only():
    assert not disagrees(0.91, 0.90, 500)
    assert disagrees(0.99, 0.55, 500)
    assert not disagrees(None, 0.9, 500)


def test_only_the_answer_keys_own_self_checks_are_excused():
    import nbformat

    from grader.build import ANSWER_KEY
    from grader.execute import CellError
    from grader.rubric import notebook_errors

    key = nbformat.read(ANSWER_KEY, as_version=4)
    genuine = next(cell for cell in key.cells if cell.get("id") == "check-accuracy")
    failing_self_check = CellError(30, "check-accuracy", genuine.source + "\n", "AssertionError", "low", "")
    forged_id = CellError(12, "check-accuracy", "raise RuntimeError('broken')", "RuntimeError", "broken", "")
    renamed_self_check = CellError(30, "my-own-id", genuine.source, "AssertionError", "low", "")
    assert notebook_errors([failing_self_check, forged_id, renamed_self_check]) == [forged_id]


@pytest.mark.parametrize("cell_id", ["tfidf-self-check", "report-self-check"])
def test_a_failing_baseline_or_report_self_check_costs_the_ran_to_end_points(cell_id):
    """These self-checks mirror no rubric check, so their failure counts as an error of the notebook."""
    import nbformat

    from grader.build import ANSWER_KEY
    from grader.execute import CellError
    from grader.rubric import notebook_errors

    source = next(cell.source for cell in nbformat.read(ANSWER_KEY, as_version=4).cells if cell.get("id") == cell_id)
    failing = CellError(20, cell_id, source, "AssertionError", "wrong", "")
    assert notebook_errors([failing]) == [failing]


def test_predictions_earn_points_only_when_the_saved_model_makes_them():
    from grader.contract import Contract, Prediction
    from grader.rubric import predictions_check
    from grader.results import Verification

    rubric = load_rubric()
    typed = Contract(predictions=[Prediction(f"review {i}", ("negative", "positive")[i % 2], 0.99) for i in range(6)])
    no_model = predictions_check(rubric, typed, Verification(problem="SAVE_DIR is not defined"))
    other_model = predictions_check(rubric, typed, Verification(loaded=True, reproduced=False,
                                                                mismatches=["'review 0': notebook said negative"]))
    made_by_it = predictions_check(rubric, typed, Verification(loaded=True, reproduced=True))
    assert (no_model.passed, other_model.passed, made_by_it.passed) == (False, False, True)
    assert "SAVE_DIR is not defined" in no_model.message and "review 0" in other_model.message


def test_each_way_of_writing_the_predictions_wrong_fails_the_predictions_check_alone_and_says_which():
    """Labels as ids, confidences as P(positive): the saved model makes those predictions, so the reload
    check passes and the predictions check names the mistake (not 'both sentiments', not 'reproduce')."""
    from grader.contract import Contract, Prediction
    from grader.rubric import predictions_check, reload_check
    from grader.results import Verification

    rubric = load_rubric()
    made = Verification(loaded=True, reproduced=True)
    as_positive = Verification(loaded=True, reproduced=True, confidence_is_positive_probability=True)
    ids = Contract(predictions=[Prediction(f"review {i}", ("negative", "positive")[i % 2], 0.9, label_was_id=True)
                                for i in range(6)])
    names = Contract(predictions=[Prediction(p.text, p.label, p.confidence) for p in ids.predictions])
    both = predictions_check(rubric, ids, as_positive)
    assert not both.passed and "ids (0/1)" in both.message and "P(positive)" in both.message
    only_ids = predictions_check(rubric, ids, made)
    assert not only_ids.passed and "ids (0/1)" in only_ids.message and "P(positive)," not in only_ids.message
    only_positive = predictions_check(rubric, names, as_positive)
    assert not only_positive.passed and "are P(positive)" in only_positive.message and "ids" not in only_positive.message
    assert predictions_check(rubric, names, made).passed   # the negative control
    assert reload_check(rubric, as_positive).passed and reload_check(rubric, made).passed


def test_a_model_without_its_tokenizer_fails_the_reload_check_alone():
    from grader.contract import Contract, Prediction
    from grader.rubric import metric_check, predictions_check, reload_check
    from grader.results import Verification

    rubric = load_rubric()
    measured = Verification(loaded=True, reproduced=True, tokenizer_missing=True, accuracy=0.9, f1=0.9)
    contract = Contract(predictions=[Prediction(f"review {i}", ("negative", "positive")[i % 2], 0.9) for i in range(6)])
    reload = reload_check(rubric, measured)
    assert not reload.passed and "no tokenizer" in reload.message and "tokenizer.save_pretrained" in reload.message
    assert predictions_check(rubric, contract, measured).passed
    assert metric_check(rubric, "accuracy", 0.9, None, None).passed


def test_every_check_is_scored_in_the_rubric_module():
    """The rubric's checks are scored in grader/rubric.py only: no other module of the grader makes a CheckResult
    (``check(...)`` or ``CheckResult(...)``). ``result.check(name)`` (reading one) is not a call to the name ``check``."""
    import ast

    from grader.course import ROOT

    def scores(path):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("check", "CheckResult"):
                yield f"{path.name}:{node.lineno}"

    found = [where for path in sorted((ROOT / "grader").rglob("*.py")) if path.name not in ("rubric.py", "results.py")
             for where in scores(path)]
    assert found == []
    assert list(scores(ROOT / "grader" / "rubric.py"))   # negative control: the scan sees the rubric's own calls


def test_each_mode_scores_the_six_checks_in_the_rubrics_order():
    import nbformat

    from grader.contract import Contract
    from grader.results import GradeResult, Verification
    from grader.rubric import SELF_CHECK_CELLS, score, score_saved_outputs

    rubric, nb = load_rubric(), nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    measured, saved = GradeResult("s", "s.ipynb"), GradeResult("s", "s.ipynb")
    score(measured, nb, (True, "every cell ran"), Contract(test_metrics={"accuracy": 0.99}),
          Verification(loaded=True, reproduced=True, hidden_size=500, accuracy=0.6, f1=0.9), rubric)
    score_saved_outputs(saved, nb, (True, "ran"), {SELF_CHECK_CELLS["f1"]: "OK: f1 0.9\n"}, rubric)
    assert [c.name for c in measured.checks] == [c.name for c in saved.checks] == list(CHECKS)
    assert [c.passed for c in measured.checks] == [True, True, False, True, False, True]
    assert [c.passed for c in saved.checks] == [True, True, False, True, False, False]
    assert measured.disagreement == ["the notebook reports test accuracy 0.990, the saved model measures 0.600"]
