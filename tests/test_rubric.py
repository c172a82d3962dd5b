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
