"""The CLI maps its arguments onto the API's options, and errors onto exit codes."""
import json
from pathlib import Path

import pytest

from grader import cli
from grader.options import GradingOptions
from grader.results import Mode
from grader.sandbox import Limits


def parse(*argv):
    return cli.options_from_args(cli.grading_parser().parse_args(list(argv)))


def test_defaults_come_from_the_api():
    options, api = parse("subs"), GradingOptions()
    for name in ("output_dir", "hidden_set", "hidden_size", "hidden_seed", "time_limit_s", "jobs", "parameters",
                 "mode", "force", "keep_work", "rubric", "sandbox", "limits", "max_output_bytes"):
        assert getattr(options, name) == getattr(api, name), name


def test_every_option_reaches_the_api(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"NUM_EPOCHS": 1, "MAX_LENGTH": 64}))
    rubric = tmp_path / "rubric.toml"
    rubric.write_text("[thresholds]\naccuracy = 0.8\n")
    options = parse("subs", "-o", "out", "--hidden-set", "test.csv", "--hidden-size", "200", "--hidden-seed", "5",
                    "--timeout", "90",
                    "-j", "3", "--params-file", str(params), "-p", "MAX_LENGTH=128", "-p", "MODEL_NAME=/m",
                    "--rubric", str(rubric), "--no-execute", "--force", "--keep-work", "--sandbox", "require",
                    "--memory-limit", "3G", "--max-processes", "64", "--max-file-size", "500M",
                    "--disk-limit", "1.5GB", "--max-output", "2M")
    assert options.output_dir == Path("out") and options.hidden_set == Path("test.csv")
    assert (options.hidden_size, options.hidden_seed, options.time_limit_s, options.jobs) == (200, 5, 90, 3)
    assert options.parameters == {"NUM_EPOCHS": 1, "MAX_LENGTH": 128, "MODEL_NAME": "/m"}
    assert options.rubric.accuracy == 0.8
    assert options.mode is Mode.SAVED_OUTPUTS and options.force and options.keep_work
    assert options.sandbox == "require" and options.max_output_bytes == 2 * 2**20
    assert options.limits == Limits(memory_bytes=3 * 2**30, max_processes=64, max_file_bytes=500 * 2**20,
                                    disk_bytes=int(1.5 * 2**30))


@pytest.mark.parametrize("argv, message", [
    (["missing-folder"], "not a folder"),
    (["{folder}", "-j", "0"], "--jobs"),
    (["{folder}", "--hidden-set", "nope.csv"], "does not exist"),
    (["{folder}", "-p", "no-equals"], "NAME=VALUE"),
])
def test_usage_errors_exit_2_with_a_message(tmp_path, capsys, argv, message):
    argv = [arg.format(folder=tmp_path) for arg in argv]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bad_size_is_an_argparse_error_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([str(tmp_path), "--memory-limit", "lots"])
    assert stop.value.code == 2 and "not a size" in capsys.readouterr().err


def test_build_check_passes_on_the_committed_template(capsys):
    assert cli.main(["build", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_build_check_fails_on_a_stale_template(tmp_path, capsys):
    stale = tmp_path / "t.ipynb"
    stale.write_text("{}")
    assert cli.main(["build", "--check", "--template", str(stale)]) == 1
    assert "grade build" in capsys.readouterr().err


def test_the_summary_table_shows_scores_and_measured_figures():
    from grader.batch import BatchResult
    from grader.results import GradeResult, Verification
    from grader.rubric import CheckResult

    good = GradeResult("ann", "ann.ipynb", checks=[CheckResult("accuracy", True, 20, 20, "")],
                       verification=Verification(loaded=True, accuracy=0.912, f1=0.9))
    bad = GradeResult("bob", "bob.ipynb", status="not gradable", reason="not a valid Jupyter notebook")
    out = __import__("io").StringIO()
    cli.print_summary(BatchResult(results=[good, bad], skipped=[("x.txt", "not a notebook")]), out)
    text = out.getvalue()
    assert "ann" in text and "20/20" in text and "0.912" in text
    assert "not a valid Jupyter notebook" in text and "skipped x.txt: not a notebook" in text


def test_the_sandbox_warning_is_a_line_of_its_own(capsys):
    from grader.sandbox import SandboxUnavailableWarning

    cli.show_warning("student notebooks will run WITHOUT a sandbox", SandboxUnavailableWarning, "x.py", 1)
    assert capsys.readouterr().err == "grade: WARNING: student notebooks will run WITHOUT a sandbox\n"
