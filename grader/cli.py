"""The ``grade`` command: a thin layer over ``grader.grade_submissions``.

    grade SUBMISSIONS [options]     grade every notebook in a folder
    grade build [--check]           build the student template from the answer key
    grade one NOTEBOOK -o OUT       grade one student of a prepared run (grader.slurm_cli)
    grade collect OUT               rebuild the gradebooks from OUT's results
    grade report OUT                rebuild OUT/report.html, the class report, from OUT's results
    grade gradescope build          write the Gradescope autograder zip (grader.gradescope)

Exit codes: 0 done; 1 a grader error; 2 the command cannot run as given (a bad option, no notebook
found, no hidden set); 74 the output folder cannot be written (a full disk, read-only); 130 Ctrl-C;
143 SIGTERM, which is handled as Ctrl-C is. See docs/batch.md.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import unicodedata
import warnings
from pathlib import Path

from . import build, class_report, slurm_cli
from .batch import BatchResult, grade_submissions
from .cancel import GradingInterrupted, exit_code, raise_terminated
from .errors import GraderError, UsageError
from .integrity import INTEGRITY_HTML, IntegritySettings
from .parameters import parse_override
from .options import GradingOptions, mode_from_flags
from .report import canvas_id_note
from .rubric import load_rubric
from .sandbox import (SANDBOX_MODES, Limits, SandboxUnavailableWarning, SandboxWithoutNetworkWarning, size,
                      size_text)

DEFAULTS = GradingOptions.__dataclass_fields__
LIMITS = Limits()
INTEGRITY = IntegritySettings()


def _default(name):
    field = DEFAULTS[name]
    return field.default


def grading_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grade", description="Grade a folder of fine-tuning notebooks: run each headless, "
        "check the saved model on a hidden set, write a gradebook and feedback.",
        epilog="`grade build [--check]` builds the student template from the answer key instead, "
               "`grade report OUT` rebuilds the class report, `grade gradescope build` writes a Gradescope "
               "autograder (to grade a folder of one of those names, write ./build, ./report or ./gradescope).")
    parser.add_argument("submissions", type=Path, help="folder of notebooks, of student folders, "
                        "or an unzipped Canvas submissions download")
    parser.add_argument("-o", "--output", type=Path, default=_default("output_dir"),
                        help="where results go (default: %(default)s)")
    parser.add_argument("--hidden-set", type=Path, default=None, help="CSV with label,title,content to "
                        "measure each model on (default: a sample of the Hub's Amazon Polarity test split, which is "
                        "public: a student who trains in Colab can train on it. In verify mode, where students train "
                        "their own models, give a private CSV)")
    parser.add_argument("--hidden-size", type=int, default=_default("hidden_size"),
                        help="reviews drawn from the hidden set (default: %(default)s)")
    parser.add_argument("--hidden-seed", type=int, default=None, metavar="N",
                        help="seed of the hidden sample (default: drawn at random on an output folder's first run "
                             "and kept there, private, for later runs)")
    parser.add_argument("--timeout", type=float, default=_default("time_limit_s"),
                        help="seconds a notebook may run in all (default: %(default)s)")
    limits = parser.add_argument_group("sandbox and limits", "each notebook runs confined by bubblewrap, "
                                       "with no network and no view of the hidden set or other students' work")
    limits.add_argument("--sandbox", choices=SANDBOX_MODES, default=_default("sandbox"),
                        help="auto: confine when bubblewrap works here, else warn loudly; require: refuse to "
                             "grade without it; off: no sandbox (default: %(default)s)")
    limits.add_argument("--memory-limit", type=size, default=LIMITS.memory_bytes, metavar="SIZE",
                        help=f"memory of a notebook's processes together (default: {size_text(LIMITS.memory_bytes)})")
    limits.add_argument("--max-processes", type=int, default=LIMITS.max_processes, metavar="N",
                        help="processes a notebook may run at once (default: %(default)s)")
    limits.add_argument("--max-file-size", type=size, default=LIMITS.max_file_bytes, metavar="SIZE",
                        help=f"any one file a notebook writes (default: {size_text(LIMITS.max_file_bytes)})")
    limits.add_argument("--disk-limit", type=size, default=LIMITS.disk_bytes, metavar="SIZE",
                        help=f"all a notebook writes to disk (default: {size_text(LIMITS.disk_bytes)})")
    limits.add_argument("--max-output", type=size, default=_default("max_output_bytes"), metavar="SIZE",
                        help=f"output a notebook may print (default: {size_text(_default('max_output_bytes'))})")
    parser.add_argument("-j", "--jobs", type=int, default=_default("jobs"),
                        help="notebooks run at once; one GPU each when there are several (default: %(default)s)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a variable of the notebook's parameters cell (repeatable)")
    parser.add_argument("--params-file", type=Path, help="JSON object of parameter overrides")
    parser.add_argument("--rubric", type=Path, help="rubric TOML (default: the course's, grader/rubric.toml)")
    slurm_cli.add_canvas_arguments(parser)
    parser.add_argument("--verify", action="store_true",
                        help="grade the model each student submitted with their executed notebook (a model folder, "
                             "a zip, or a Hub commit) without re-running the notebook: its saved outputs are read, "
                             "the model is loaded confined, measured on the hidden set and must reproduce the "
                             "notebook's predictions")
    integrity = parser.add_argument_group(
        "each student's own work", "after every run the class is compared pair by pair (identical weights or "
        "notebooks, one Hub repository, near-identical models, an implausible hidden accuracy): OUT/integrity.html "
        "and the gradebook's flags column. Flags change no points")
    integrity.add_argument("--audit", type=int, default=0, metavar="N",
                           help="with --verify: re-run N students, drawn at random, here in execute mode (sandboxed, "
                                "with the -p parameters) and flag any whose re-run disagrees with what they submitted")
    integrity.add_argument("--audit-seed", type=int, default=None, metavar="S",
                           help="seed of the audit's sample (default: drawn on an output folder's first audit and kept "
                                "there, private, in .grader/)")
    integrity.add_argument("--near-identical", type=float, default=INTEGRITY.near_identical_agreement,
                           metavar="SHARE", help="flag two submitted models that label at least this share of the "
                                                 "hidden reviews alike (default: %(default)s; docs/integrity.md)")
    integrity.add_argument("--plausible-accuracy", type=float, default=INTEGRITY.plausible_accuracy, metavar="ACC",
                           help="flag a hidden accuracy whose 95%% CI lies wholly above this, the most the course's "
                                "recipe reaches (default: %(default)s; docs/integrity.md)")
    verify = parser.add_argument_group("verify mode", "what --verify checks beyond the hidden set")
    verify.add_argument("--base-model", metavar="MODEL",
                        help="the course's base model, a folder or a Hub id: each submitted model must be a fine-tune "
                             "of it (its architecture, vocabulary, weights near its own); 'none' turns the check off "
                             "(default: the MODEL_NAME parameter, else the rubric's [model] base)")
    verify.add_argument("--rederive", action="store_true",
                        help="re-derive each student's test split (the course's recipe, their SEED and SUBSET_SIZE) "
                             "and re-measure their model on it: the notebook's test metrics must be the model's. "
                             "Costs one more pass of the model, over their 750 test reviews")
    verify.add_argument("--course-data", metavar="FOLDER",
                        help="the folder whose train.csv the students' splits are drawn from (default: the "
                             "LOCAL_DATA_DIR parameter, else the course's dataset from the Hub)")
    verify.add_argument("--max-model-size", type=size, default=_default("max_model_bytes"), metavar="SIZE",
                        help=f"a submitted model's files in all (default: {size_text(_default('max_model_bytes'))}; "
                             "DistilBERT's are 268 MB)")
    parser.add_argument("--course-tokenizer", metavar="FOLDER_OR_HUB_ID",
                        help="the tokenizer the template loads, used to measure a saved model whose folder lacks its "
                             "own when it reproduces the notebook's predictions (the reload check fails either way; "
                             "default: the MODEL_NAME parameter, else distilbert-base-uncased)")
    parser.add_argument("--no-execute", action="store_true",
                        help="grade from the outputs saved in each notebook, without running it (unverified)")
    parser.add_argument("--force", action="store_true", help="regrade students who already have a result")
    parser.add_argument("--keep-work", action="store_true", help="keep each student's working folder and model")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    slurm_cli.add_slurm_arguments(parser)
    return parser


def options_from_args(args: argparse.Namespace) -> GradingOptions:
    parameters = {}
    if args.params_file:
        try:
            parameters.update(json.loads(args.params_file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot read {args.params_file}: {error}") from error
    parameters.update(dict(parse_override(text) for text in args.param))
    return GradingOptions(output_dir=args.output, hidden_set=args.hidden_set, hidden_size=args.hidden_size,
                          hidden_seed=args.hidden_seed,
                          time_limit_s=args.timeout, jobs=args.jobs, parameters=parameters,
                          mode=mode_from_flags(args.verify, args.no_execute), force=args.force, keep_work=args.keep_work,
                          rubric=slurm_cli.canvas_rubric(args, load_rubric(args.rubric)), sandbox=args.sandbox,
                          max_output_bytes=args.max_output,
                          audit=args.audit, audit_seed=args.audit_seed,
                          integrity=IntegritySettings(near_identical_agreement=args.near_identical,
                                                      plausible_accuracy=args.plausible_accuracy),
                          base_model=args.base_model, rederive=args.rederive, course_data=args.course_data,
                          max_model_bytes=args.max_model_size,
                          course_tokenizer=args.course_tokenizer,
                          limits=Limits(memory_bytes=args.memory_limit, max_processes=args.max_processes,
                                        max_file_bytes=args.max_file_size, disk_bytes=args.disk_limit))


# Control and format characters (ESC, CR, BEL, bidi overrides) a terminal would obey, and lone
# surrogates (a file name that is not UTF-8) that printing would choke on.
HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs"}


def terminal_text(text: str) -> str:
    """Text a terminal shows and never obeys: an ESC in a name is printed as the 4 characters ``\\x1b``."""
    return "".join(char.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(char) in HIDDEN_CATEGORIES else char for char in text)


def summary_rows(batch: BatchResult) -> list[tuple[str, ...]]:
    rows = [("student", "status", "score", "accuracy", "F1", "failed checks")]
    for r in batch.results:
        v = r.verification
        figure = lambda value: "-" if value is None else f"{value:.3f}"  # noqa: E731
        failed = ", ".join(c.name for c in r.checks if not c.passed) or ("-" if r.checks else r.reason[:60])
        rows.append(tuple(map(terminal_text, (r.student_id, r.status, f"{r.total:g}/{r.max_total:g}",
                                              figure(v and v.accuracy), figure(v and v.f1), failed))))
    return rows


def print_summary(batch: BatchResult, out=None) -> None:
    out = out or sys.stdout   # the stream at call time, not at import time (a caller may have redirected it)
    if batch.graded_now and batch.sandbox.flags is None:
        print(f"WARNING: these notebooks ran WITHOUT a sandbox ({batch.sandbox.problem}).\n", file=out)
    rows = summary_rows(batch)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1], file=out)
    for path, reason in batch.skipped:
        print(f"skipped {terminal_text(path)}: {terminal_text(reason)}", file=out)
    print(f"\n{len(batch.results)} graded ({len(batch.resumed)} from an earlier run), {batch.passed} passed every "
          f"check. Accuracy and F1 are measured by the grader on the hidden set.\n"
          f"Gradebook: {batch.output_dir / 'gradebook.csv'}  Feedback: {batch.output_dir / 'feedback'}", file=out)
    print(integrity_line(batch), file=out)
    note = canvas_id_note(batch.results, batch.output_dir)
    if note:
        print(terminal_text(note), file=out)


def integrity_line(batch: BatchResult) -> str:
    """The class review in a line or two: what was flagged, the audit's verdicts, and where to read them."""
    flags = batch.review.flags if batch.review else []
    kinds = sorted({flag.kind for flag in flags})
    line = (f"Integrity: {len(flags)} flag(s) ({', '.join(kinds)}), for the instructor only; no points changed"
            if flags else "Integrity: no flags") + f": {batch.output_dir / INTEGRITY_HTML}"
    if batch.audit is not None:
        findings = [batch.audit["results"][student] for student in batch.audit["sample"]
                    if student in batch.audit["results"]]
        disagree = sum(bool(found.get("disagrees")) for found in findings)
        line += (f"\nAudit (seed {batch.audit['seed']}): {len(findings)} of {len(batch.audit['sample'])} student(s) "
                 f"re-run here, {disagree} disagree with what they submitted")
    return line


def build_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="grade build", description="Build the student templates from the answer "
                                     "keys: the main project's and the optional going-further notebook's.")
    parser.add_argument("--check", action="store_true", help="fail if a committed template differs from a fresh build")
    parser.add_argument("--answer-key", type=Path, help="one answer key only (default: every answer key; "
                        f"with --template alone: {build._repo_path(build.ANSWER_KEY)})")
    parser.add_argument("--template", type=Path, help="its template (default: the answer key's own)")
    args = parser.parse_args(argv)
    if args.answer_key is None and args.template is None:
        pairs = build.NOTEBOOKS
    else:
        answer_key = (args.answer_key or build.ANSWER_KEY).resolve()
        template = args.template or dict(build.NOTEBOOKS).get(answer_key)
        if template is None:
            raise UsageError(f"--answer-key {args.answer_key} is not one of the kit's answer keys: give --template")
        pairs = ((answer_key, template),)
    if args.check:
        build.check_templates(pairs)
        for _, template in pairs:
            print(f"{template} is up to date")
    else:
        for answer_key, template in pairs:
            print(f"wrote {build.write_template(answer_key, template)}")
    return 0


def report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="grade report", description="Rebuild OUTPUT/report.html, the class "
                                     "report, from the results in OUTPUT (grade writes it after every run).")
    parser.add_argument("output", type=Path, help="a grading run's output folder")
    parser.add_argument("--rubric", type=Path, help="the rubric whose thresholds are drawn (default: the one the "
                        "last run into OUTPUT graded with, else the course's)")
    args = parser.parse_args(argv)
    if not (args.output / "results").is_dir():
        raise UsageError(f"{args.output} holds no results (no results/ folder): give a grading run's output folder")
    print(f"wrote {class_report.write_class_report(args.output, load_rubric(args.rubric) if args.rubric else None)}")
    return 0


def show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """The sandbox's warnings as a line of their own that an instructor cannot miss; others as usual."""
    if issubclass(category, (SandboxUnavailableWarning, SandboxWithoutNetworkWarning)):
        print(f"grade: WARNING: {message}", file=sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.showwarning = show_warning
    # SIGTERM (kill, a scheduler, a container's end) as Ctrl-C: during a batch it cancels the run; before
    # one it raises Terminated, a KeyboardInterrupt. Only the main thread may set a handler.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if main_thread else None
    try:
        return run(argv)
    except GraderError as error:
        print(f"grade: error: {error}", file=sys.stderr)
        return error.exit_code
    except GradingInterrupted as interrupted:
        batch = interrupted.batch
        what = "interrupted" if interrupted.signal_number == signal.SIGINT else "stopped by SIGTERM"
        print(f"grade: {what}; {len(batch.interrupted)} student(s) not graded, so listed in "
              f"{batch.output_dir / 'gradebook.csv'}; a rerun grades them", file=sys.stderr)
        return exit_code(interrupted)
    except KeyboardInterrupt as interrupt:   # before a batch started, or in a command without one
        what = "interrupted" if exit_code(interrupt) == 128 + signal.SIGINT else "stopped by SIGTERM"
        print(f"grade: {what}; results written so far are kept, and a rerun resumes", file=sys.stderr)
        return exit_code(interrupt)
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        return build_main(argv[1:])
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    if argv[:1] == ["gradescope"]:
        from . import gradescope
        return gradescope.main(argv[1:])
    if argv[:1] in (["one"], ["collect"]):
        return (slurm_cli.one_main if argv[0] == "one" else slurm_cli.collect_main)(argv[1:])
    args = grading_parser().parse_args(argv)
    if args.verify and args.hidden_set is None:
        print("grade: WARNING: the default hidden set is a sample of Amazon Polarity's public test split, which "
              "students who train their own models can train on; for verify mode give a private CSV "
              "(--hidden-set). Hidden accuracies above the course recipe's are flagged (OUT/integrity.html).",
              file=sys.stderr)
    batch = grade_submissions(args.submissions, options_from_args(args), progress=not args.quiet,
                              slurm=slurm_cli.slurm_options_from_args(args))
    print_summary(batch)
    if args.prepare_tasks:
        print(slurm_cli.prepared_text(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
