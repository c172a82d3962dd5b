import re

import pytest

from grader.errors import ConfigError
from grader.hidden import load_hidden_set, review_text


def write_csv(path, rows, header="label,title,content"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_a_seeded_sample_with_title_and_content_joined(tmp_path):
    path = write_csv(tmp_path / "test.csv", [f'{i % 2},Title {i},"Body, {i}"' for i in range(50)])
    first = load_hidden_set(path, 10, seed=1)
    assert first == load_hidden_set(path, 10, seed=1) and first != load_hidden_set(path, 10, seed=2)
    assert len(first) == 10 and all(row["text"].startswith("Title ") and ". Body, " in row["text"] for row in first)
    assert {row["label"] for row in load_hidden_set(path, 50, seed=1)} == {0, 1}


def test_review_text_handles_empty_titles():
    assert review_text(None, " Fine. ") == "Fine." and review_text("Good", "ok") == "Good. ok"


@pytest.mark.parametrize("header, rows, message", [
    ("label,text", ["1,good"], "lacks the column"),
    ("label,title,content", ["2,a,b"], "0 (negative) or 1"),
    ("label,title,content", ["x,a,b"], "cannot read"),
    ("label,title,content", ["1,a,b"], "fewer than"),
])
def test_unusable_hidden_sets_are_config_errors(tmp_path, header, rows, message):
    path = write_csv(tmp_path / "test.csv", rows, header)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_hidden_set(path, 5, seed=0)
