"""What the grader hands the instructor: the CSV files a spreadsheet opens, the summary a terminal prints."""
import csv
import io
from pathlib import Path

import pytest

from grader import cli
from grader.batch import BatchResult
from grader.report import canvas_csv, gradebook_csv
from grader.results import GradeResult, Verification
from grader.rubric import CheckResult

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HOSTILE_NAMES = ['=HYPERLINK("http://x","y")', "+cmd", "@SUM(A1)", "-2+3", "\t=1+1", "\r=1+1"]
# The figures the grader formats itself: a spreadsheet may read them as numbers.
NUMERIC_COLUMNS = {"total", "max_total", "hidden_accuracy", "hidden_f1", "reported_accuracy", "reported_f1",
                   "run_time_s", "Fine-Tuning Sentiment Project"}


def hostile_results() -> list[GradeResult]:
    results = [GradeResult(name, f"{name}.ipynb", display_name=name, canvas_user_id=name, reason="=1+1",
                           checks=[CheckResult("accuracy", True, 20, 20, "")],
                           verification=Verification(loaded=True, accuracy=0.9, f1=0.8),
                           disagreement=["-reported 0.99, measured 0.9"])
               for name in HOSTILE_NAMES]
    results.append(GradeResult("minus", "minus.ipynb", checks=[CheckResult("accuracy", False, -2, 20, "")]))
    return results


def cells_a_spreadsheet_would_run(text: str) -> list[tuple[str, str]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return [(column, cell) for row in rows[1:] for column, cell in zip(rows[0], row)
            if cell.startswith(FORMULA_STARTS) and column not in NUMERIC_COLUMNS]


def test_the_gradebook_runs_no_formula_from_a_student():
    text = gradebook_csv(hostile_results())
    assert cells_a_spreadsheet_would_run(text) == []
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    names = [row["name"] for row in rows if row["name"]]
    assert sorted(names) == sorted("'" + name for name in HOSTILE_NAMES)   # neutralised, not lost
    assert {row["reason"] for row in rows} == {"'=1+1", ""}
    assert rows[0]["total"] == "20" and rows[0]["hidden_accuracy"] == "0.9000"
    assert next(row for row in rows if row["student_id"] == "minus")["total"] == "-2"   # the grader's number


def test_the_canvas_import_runs_no_formula_from_a_student():
    text = canvas_csv(hostile_results())
    assert cells_a_spreadsheet_would_run(text) == []
    assert "'=HYPERLINK" in text


def test_the_summary_cannot_drive_the_terminal():
    hostile = GradeResult("\x1b[2J\x1b]0;owned\x07", "x.ipynb", status="not gradable",
                          reason="bad\x1b]0;title\x07\rline\u202eevil")
    batch = BatchResult(results=[hostile], skipped=[("sub/\x1b[31mred.ipynb", "a hidden file\r")])
    out = io.StringIO()
    cli.print_summary(batch, out)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[2J\\x1b]0;owned\\x07" in text and "bad\\x1b]0;title\\x07\\rline\\u202eevil" in text
    assert "skipped sub/\\x1b[31mred.ipynb: a hidden file\\r" in text


def test_the_canvas_import_leaves_students_who_were_not_graded_blank():
    from grader.report import canvas_csv
    from grader.results import GRADER_ERROR, INTERRUPTED, GradeResult

    results = [GradeResult("1", "a.ipynb", display_name="ann", canvas_user_id="1", status=INTERRUPTED),
               GradeResult("2", "b.ipynb", display_name="bob", canvas_user_id="2", status=GRADER_ERROR),
               GradeResult("3", "c.ipynb", display_name="cy", canvas_user_id="3", status="not gradable")]
    rows = list(csv.reader(io.StringIO(canvas_csv(results))))[1:]
    assert [row[-1] for row in rows] == ["", "", "0"]


def test_the_short_answers_are_listed_for_the_instructor_and_score_nothing():
    from grader.answers import ShortAnswer
    from grader.report import feedback_html
    from grader.rubric import load_rubric

    answers = [ShortAnswer("q-mcnemar", "What does the p-value say?", True, 3, "<b>p is small</b>"),
               ShortAnswer("q-validation-split", "Why a validation split?", False, 0, "")]
    result = GradeResult("ann", "ann.ipynb", answers=answers, checks=[CheckResult("accuracy", True, 20, 20, "")])
    page = feedback_html(result, load_rubric())
    assert "Short answers" in page and "no points" in page and "What does the p-value say?" in page
    assert "&lt;b&gt;p is small&lt;/b&gt;" in page and "not answered" in page   # escaped, never markup
    rows = list(csv.DictReader(io.StringIO(gradebook_csv([result]), newline="")))
    assert rows[0]["short_answers"] == "1/2 answered" and rows[0]["total"] == "20"
    assert GradeResult.from_dict(result.to_dict()).answers == answers   # through the result's JSON


# --- the Canvas import's assignment column: one per rubric, set by the instructor ------------------------
GOING_FURTHER_RUBRIC = Path(__file__).resolve().parent.parent / "grader" / "rubrics" / "going_further.toml"


def canvas_header_and_rows(output_dir: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO((output_dir / "canvas-import.csv").read_text(encoding="utf-8"))))
    return rows[0], rows[1:]


def test_the_course_rubrics_head_different_canvas_columns():
    """Canvas matches an imported column to an assignment by its header: the bonus gradebook imported under the
    main project's header would overwrite every student's main score with a 0-20 bonus score."""
    from grader.rubric import load_rubric

    main, bonus = load_rubric(), load_rubric(GOING_FURTHER_RUBRIC)
    assert main.canvas_column == "Fine-Tuning Sentiment Project"
    assert bonus.canvas_column != main.canvas_column and "Going Further" in bonus.canvas_column
    header = next(csv.reader(io.StringIO(canvas_csv([GradeResult("1", "a.ipynb")], bonus.canvas_column))))
    assert header == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", bonus.canvas_column]


def test_grading_with_the_bonus_rubric_writes_its_column_and_says_which_ids_are_blank(tmp_path, tiny_data_dir, capsys):
    """A real `grade` run (from saved outputs, nothing executed): one notebook from a Canvas download (its name
    carries the Canvas user id), one handed in otherwise."""
    import nbformat

    from grader.build import GOING_FURTHER_ANSWER_KEY

    submissions = tmp_path / "submissions"
    submissions.mkdir()
    notebook = nbformat.read(GOING_FURTHER_ANSWER_KEY, as_version=4)
    nbformat.write(notebook, submissions / "doejane_4242_9001_MLB_Project_GoingFurther.ipynb")
    nbformat.write(notebook, submissions / "alice.ipynb")
    out = tmp_path / "out"
    assert cli.main([str(submissions), "-o", str(out), "--no-execute", "-q", "--rubric", str(GOING_FURTHER_RUBRIC),
                     "--hidden-set", str(tiny_data_dir / "test.csv"), "--hidden-size", "20"]) == 0
    header, rows = canvas_header_and_rows(out)
    assert header[-1] == "Fine-Tuning Sentiment Project: Going Further (bonus)"
    assert sorted(row[1] for row in rows) == ["", "4242"]
    printed = capsys.readouterr().out
    assert "1 of 2 student(s) have no Canvas user ID" in printed and "Grades > Export" in printed
    # rebuilt later without naming a rubric, the gradebook keeps the one this run graded with (kept for the
    # class report), not the course's, whose column would overwrite the main project's scores
    assert cli.main(["collect", str(out)]) == 0
    assert canvas_header_and_rows(out)[0][-1] == "Fine-Tuning Sentiment Project: Going Further (bonus)"


def test_the_instructor_names_the_canvas_assignment_and_its_id(tmp_path, capsys):
    from grader.report import OutputFolder
    from grader.rubric import load_rubric

    out = OutputFolder(tmp_path / "out")
    for student, canvas_id in (("4242", "4242"), ("9999", "9999")):
        result = GradeResult(student, f"{student}.ipynb", display_name=student, canvas_user_id=canvas_id)
        out.results.mkdir(parents=True, exist_ok=True)
        out.result_path(student).write_text(__import__("json").dumps(result.to_dict()), encoding="utf-8")
    assert cli.main(["collect", str(out.root), "--canvas-assignment", "Project 2", "--canvas-assignment-id",
                     " 123456 "]) == 0
    assert canvas_header_and_rows(out.root)[0][-1] == "Project 2 (123456)"   # as Canvas's own export heads it
    assert "no Canvas user ID" not in capsys.readouterr().out                # every row has its id
    assert cli.main(["collect", str(out.root), "--rubric", str(GOING_FURTHER_RUBRIC)]) == 0
    assert canvas_header_and_rows(out.root)[0][-1] == load_rubric(GOING_FURTHER_RUBRIC).canvas_column

    rubric = tmp_path / "rubric.toml"
    rubric.write_text('[canvas]\nassignment = "Sentiment (section B)"\nassignment_id = 77\n', encoding="utf-8")
    assert load_rubric(rubric).canvas_column == "Sentiment (section B) (77)"
    assert cli.main(["collect", str(out.root), "--canvas-assignment-id", "12a"]) == 2
    assert "not a number" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ('[canvas]\nassignment = ""\n', "empty"),
    ('[canvas]\nassignment_id = "course-7"\n', "not a number"),
    ('[canvas]\nassignement = "x"\n', "unknown"),
    ('[canvass]\nassignment = "x"\n', "unknown"),
    ('[canvas]\nassignment = "a\\nb"\n', "control character"),
])
def test_a_bad_canvas_assignment_is_a_config_error(tmp_path, text, message):
    from grader.errors import ConfigError
    from grader.rubric import load_rubric

    path = tmp_path / "rubric.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_rubric(path)
