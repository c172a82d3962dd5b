"""Grade one submission: an explicit, ordered pipeline of small steps.

1. read_submission     read and validate the notebook (nbformat)
2. prepare_workdir     a fresh working folder with a copy of the notebook, outputs cleared
3. inject_parameters   the instructor's overrides, after the ``parameters`` cell
4. execute             nbclient, a fresh kernel, a wall-clock limit, capped output
5. read_contract       ``test_metrics``, ``predictions``, ``SAVE_DIR`` over a JSON channel
6. check_saved_model   the model check (grader.model_check), in another process: load SAVE_DIR
                       (safetensors) and measure it
7. score               the rubric

``grade --verify`` runs another pipeline over the same steps 1, 6 and 7: the notebook is not run;
its saved outputs and the model submitted with it are checked (``grader.verify_mode``).

A student's problem at any step becomes their result with a reason; it never raises.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .answers import short_answers
from .cancel import Cancellation
from .contract import Contract, append_contract_cell, read_contract
from .course import ANSWER_KEYS
from .errors import GraderError, NotebookInvalid, SubmissionUnreadable, WrongNotebook
from .execute import Execution, assigned_gpus, execute_notebook
from .fingerprint import file_digest
from .integrity import provenance
from .parameters import inject_parameters
from .model_check.refusals import TOKENIZER_FILES
from .model_check.worker import check_model_in_subprocess
from .options import GradingOptions
from .results import GRADER_ERROR, INTERRUPTED, NOT_GRADABLE, GradeResult, Mode, Verification
from .rubric import Rubric, executed_to_end, score
from .run_folder import threads_per_job
from .identity import notebook_problem, other_kit_notebook
from .sandbox import COURSE_TOKENIZER_INSIDE, HIDDEN_SET_INSIDE, TEST_SPLIT_INSIDE, SandboxPlan, verifier_prefix
from .submissions import Submission
from .rederive import TestSplits, compare_metrics
from . import verify_mode

MAX_NOTEBOOK_BYTES = 50_000_000
MAX_CELLS = 2_000           # the course's notebook has 59: this bounds the grader's own time on one notebook
INTERRUPTED_REASON = "the grading run was interrupted before this notebook was graded; a rerun grades it"


# 1 ------------------------------------------------------------------------------------------
def read_submission(path: Path) -> nbformat.NotebookNode:
    """The student's notebook, validated. A notebook that is not valid raises ``NotebookInvalid``, a final
    verdict; a file the machine failed to read (out of file descriptors, an I/O error, a network file
    system's hiccup) raises ``SubmissionUnreadable``: nothing is wrong with the notebook, a rerun retries."""
    try:
        if path.is_symlink():  # a link could point at the answer key, or at another student's notebook
            raise NotebookInvalid("the submission is a link to another file, not a notebook of its own")
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            raise NotebookInvalid(f"the notebook is over {MAX_NOTEBOOK_BYTES // 1_000_000} MB")
        data = path.read_bytes()
    except OSError as error:
        raise SubmissionUnreadable(f"the grader could not read the notebook ({os_error_text(error)}); "
                                   "a rerun grades it") from error
    return parse_notebook(data)


JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true or false",
              type(None): "null"}


def parse_notebook(data: bytes) -> nbformat.NotebookNode:
    try:
        text = data.decode("utf-8")
        parsed = json.loads(text)
    except Exception as error:  # not UTF-8, not JSON
        raise NotebookInvalid(f"not a valid Jupyter notebook: {str(error).splitlines()[0][:200]}") from error
    if not isinstance(parsed, dict):   # valid JSON, but not an object: say what it is
        raise NotebookInvalid(f"not a valid Jupyter notebook: the file holds {JSON_KINDS.get(type(parsed), 'not an object')} "
                              "in JSON, where a notebook is a JSON object with its cells")
    count = cell_count(parsed)
    if count > MAX_CELLS:   # validating it alone would take the grader's own time, outside any limit
        raise NotebookInvalid(f"the notebook has {count:,} cells; the course's has about 60, and the grader "
                              f"reads at most {MAX_CELLS:,}")
    try:
        invalid: dict = {}
        nb = nbformat.reads(text, as_version=4, capture_validation_error=invalid)   # validated once, here
        if invalid:
            raise invalid["ValidationError"]
    except Exception as error:  # nbformat raises JSON, validation and encoding errors alike
        raise NotebookInvalid(f"not a valid Jupyter notebook: {str(error).splitlines()[0][:200]}") from error
    if not any(cell.cell_type == "code" for cell in nb.cells):
        raise NotebookInvalid("the notebook has no code cells")
    return nb


def os_error_text(error: OSError) -> str:
    """``[Errno 24] Too many open files``, without the file's path (the grader's, not the student's)."""
    return f"[Errno {error.errno}] {error.strerror}" if error.strerror else str(error)


def cell_count(data) -> int:
    """The cells of a notebook's JSON, in nbformat 4 (``cells``) or 3 (``worksheets``); 0 for another shape,
    which validation then refuses."""
    if not isinstance(data, dict):
        return 0
    groups = [data] if "cells" in data else data.get("worksheets") if isinstance(data.get("worksheets"), list) else []
    return sum(len(group["cells"]) for group in groups if isinstance(group, dict) and isinstance(group.get("cells"), list))


def refuse_another_kit_notebook(nb, rubric: Rubric) -> None:
    """A notebook of the kit other than the one ``rubric`` grades (the main project's, graded with the
    going-further rubric) is not graded with it: its points would be another assignment's."""
    other = other_kit_notebook(nb, rubric.answer_key_path, ANSWER_KEYS)
    if other is not None:
        raise WrongNotebook(f"this is the kit's {Path(other).stem} notebook, but the rubric grades "
                            f"{rubric.answer_key_path.stem}: grade it with the rubric of its own notebook")


# 2 ------------------------------------------------------------------------------------------
def prepare_workdir(nb: nbformat.NotebookNode, workdir: Path) -> nbformat.NotebookNode:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, workdir / "submission.ipynb")
    return nb


# 4 ------------------------------------------------------------------------------------------
def execute(nb, workdir: Path, options: GradingOptions, env: dict | None, sandbox: SandboxPlan,
            cancellation: Cancellation | None = None) -> Execution:
    append_contract_cell(nb)
    return execute_notebook(nb, workdir, time_limit_s=options.time_limit_s,
                            max_output_bytes=options.max_output_bytes, kernel_name=options.kernel_name, env=env,
                            limits=options.limits, sandbox=sandbox, cancellation=cancellation)


# 6 ------------------------------------------------------------------------------------------
@dataclass
class ModelComparisons:
    """What verify mode compares a submitted model with, beyond the hidden set."""

    base_model: Path | None = None     # the course's base model, as a folder (verify_mode.resolve_base_model)
    base_model_name: str = ""          # ... as the rubric or the instructor named it
    test_split: Path | None = None     # the student's test split, re-derived (JSON rows), when it could be
    test_max_length: int | None = None  # the notebook's MAX_LENGTH, which its test metrics were measured at
    not_rederived: str = ""            # why there is no test split to compare with


def check_saved_model(contract: Contract, workdir: Path, hidden_set_file: Path, options: GradingOptions,
                      env: dict | None, sandbox: SandboxPlan, cancellation: Cancellation | None = None,
                      compare: ModelComparisons | None = None) -> Verification:
    if not contract.save_dir:
        return Verification(problem="SAVE_DIR is not defined, so there is no saved model to check")
    save_dir = Path(contract.save_dir)
    save_dir = save_dir if save_dir.is_absolute() else workdir / save_dir
    confined = sandbox.flags is not None
    compare = compare or ModelComparisons()
    request = {"save_dir": str(save_dir), "allowed_root": str(workdir),
               "hidden_set": HIDDEN_SET_INSIDE if confined else str(Path(os.path.realpath(hidden_set_file))),
               "max_length": options.max_length, "torch_threads": threads_per_job(options.jobs),
               "predictions": [{"text": p.text, "label": p.label, "confidence": p.confidence}
                               for p in contract.predictions]}
    readable, placed = [], {}
    if compare.base_model is not None:   # read-only inside, at its own path, with what its links point to
        readable = base_model_paths(compare.base_model)
        request.update(base_model=str(compare.base_model), base_model_name=compare.base_model_name)
    if compare.test_split is not None:
        placed[TEST_SPLIT_INSIDE] = Path(os.path.realpath(compare.test_split))
        request.update(test_split=TEST_SPLIT_INSIDE if confined else str(placed[TEST_SPLIT_INSIDE]),
                       test_max_length=compare.test_max_length or options.max_length)

    def run_check(course_tokenizer: Path | None = None) -> Verification:
        if course_tokenizer is not None:
            placed[COURSE_TOKENIZER_INSIDE] = Path(os.path.realpath(course_tokenizer))
            request["course_tokenizer"] = COURSE_TOKENIZER_INSIDE if confined else str(course_tokenizer)
        prefix = verifier_prefix(sandbox, workdir, hidden_set_file, options.limits, assigned_gpus(env),
                                 readable=readable, placed=placed) if confined else []
        return check_model_in_subprocess(request, options.verify_time_limit_s, env, prefix=prefix,
                                          limits=options.limits, watch_folder=workdir, cancellation=cancellation)

    verification = run_check()
    # No tokenizer saved: the model is checked again, with the course's tokenizer (a second start, for
    # these students only). It is measured with it only if it reproduces the notebook's predictions.
    if verification.tokenizer_missing and not verification.loaded and contract.predictions and not (
            cancellation is not None and cancellation.cancelled):
        course = compare.base_model if compare.base_model is not None and not options.course_tokenizer \
            else course_tokenizer(options)
        if course is not None:
            verification = run_check(course)
    verification.hidden_set_sha256 = file_digest(hidden_set_file)
    return verification


def base_model_paths(folder: Path) -> list[Path]:
    """The base model's folder and the folders its files' links lead to (a Hugging Face cache snapshot
    links to ../../blobs): bound at their own paths, the links resolve inside the sandbox too."""
    return [folder, *sorted({Path(os.path.realpath(path)).parent for path in folder.iterdir()})]


DEFAULT_COURSE_MODEL = "distilbert-base-uncased"   # the answer key's MODEL_NAME
_COURSE_TOKENIZERS: dict[str, Path | None] = {}
_COURSE_TOKENIZER_LOCK = threading.Lock()


def course_tokenizer(options: GradingOptions) -> Path | None:
    """A folder holding the course's tokenizer: ``options.course_tokenizer``, else the MODEL_NAME parameter,
    else the course's model. A Hub id is loaded once (from the Hub or its cache: this is the grader's own
    process, not a sandbox) and saved as plain files under the output folder's private part. None when it
    cannot be had (offline, not cached)."""
    source = str(options.course_tokenizer or options.parameters.get("MODEL_NAME") or DEFAULT_COURSE_MODEL)
    local = Path(source)
    if local.is_dir():
        return local.resolve() if any((local / name).is_file() for name in TOKENIZER_FILES) else None
    with _COURSE_TOKENIZER_LOCK:
        if source not in _COURSE_TOKENIZERS:
            _COURSE_TOKENIZERS[source] = saved_tokenizer(source, Path(options.output_dir) / ".grader")
        return _COURSE_TOKENIZERS[source]


def saved_tokenizer(hub_id: str, private: Path) -> Path | None:
    import hashlib

    folder = private / f"course-tokenizer-{hashlib.sha256(hub_id.encode()).hexdigest()[:12]}"
    if (folder / "tokenizer_config.json").is_file():
        return folder
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(hub_id, trust_remote_code=False)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        tokenizer.save_pretrained(partial)
        os.replace(partial, folder)
    except Exception as error:  # offline and not cached, or not a model id: there is no course tokenizer then
        warnings.warn(f"the course's tokenizer {hub_id!r} cannot be loaded ({type(error).__name__}), so a model "
                      "saved without its tokenizer cannot be measured: pass --course-tokenizer FOLDER", stacklevel=2)
        return None
    return folder


# 7: the rubric scores (grader.rubric.score) -------------------------------------------------
def stop_reason(execution: Execution) -> str:
    where = f" in {execution.last_cell}"
    if execution.limit_exceeded:
        return f"stopped{where}: the notebook {execution.limit_exceeded}, over the grader's limit"
    if execution.timed_out:
        return f"stopped after the time limit of {execution.duration_s:.0f} s{where}"
    if execution.kernel_died:
        return f"the kernel died{where}: out of memory, or the notebook ended its own process"
    return ""


def hub_cache(options: GradingOptions) -> Path:
    """Where verify mode keeps the students' Hub models: the output folder's private part, which no
    execute-mode sandbox sees (the Hugging Face cache's models are bound into every one)."""
    return Path(os.path.abspath(options.output_dir)) / ".grader" / "hub"


def course_base_model(options: GradingOptions) -> str:
    """The course's base model as named: --base-model, else the MODEL_NAME parameter, else the rubric's."""
    return str(options.base_model or options.parameters.get("MODEL_NAME") or options.rubric.base_model)


_TEST_SPLITS: dict[tuple[str, str | None], TestSplits] = {}


def test_splits(options: GradingOptions) -> TestSplits:
    """The batch's re-derived test splits, kept in the output folder's private part."""
    data = options.course_data or options.parameters.get("LOCAL_DATA_DIR") or None
    key = (os.path.abspath(options.output_dir), data)
    return _TEST_SPLITS.setdefault(key, TestSplits(Path(key[0]) / ".grader" / "test-splits", data))


def model_comparisons(options: GradingOptions, contract) -> ModelComparisons:
    name = course_base_model(options)
    compare = ModelComparisons(base_model=verify_mode.resolve_base_model(name), base_model_name=name)
    if options.rederive:
        rederived = test_splits(options).for_student(contract.test_split)
        compare.test_split, compare.test_max_length = rederived.split_file, rederived.max_length
        compare.not_rederived = rederived.reason
    return compare


def rederivation(options: GradingOptions, compare: ModelComparisons, contract, verification: Verification) -> str:
    """What verify mode re-derived of the notebook's test metrics, in words for the feedback; a mismatch
    also fails the reload check (``verification.test_split_problem``)."""
    if not options.rederive:
        return "not re-derived: the instructor did not ask for it (grade --rederive)"
    if compare.test_split is None:
        return f"not re-derived: {compare.not_rederived}"
    measured = verification.test_split_metrics
    if not measured:
        return "not re-derived: the model could not be measured"
    differences = compare_metrics(contract.test_metrics, measured)
    if differences:
        verification.test_split_problem = (
            "the notebook's test metrics are not what the submitted model measures on the notebook's own test split, "
            "re-derived by the grader (" + "; ".join(differences) + "): the outputs are not this model's")
        return "re-derived, and it differs: " + "; ".join(differences)
    return (f"re-derived: the grader rebuilt your test split and your model measures accuracy "
            f"{measured['accuracy']:.3f} and F1 {measured['f1']:.3f} there, as your notebook printed")


def grade_submitted_model(result: GradeResult, submission: Submission, nb, options: GradingOptions,
                          hidden_set_file: Path, workdir: Path, env: dict | None, sandbox: SandboxPlan,
                          cancellation: Cancellation | None) -> None:
    """Verify mode: the saved outputs and the submitted model, checked as execute mode checks a run."""
    result.mode = verify_mode.VERIFY_MODE
    answer_key = options.rubric.answer_key_path
    contract = verify_mode.saved_contract(nb, answer_key)
    result.reported_metrics, result.contract_problems = contract.test_metrics, contract.problems
    ran, ran_message, result.errors = verify_mode.ran_in_order(nb, answer_key)
    result.provenance.hub_repository = verify_mode.named_hub_repository(submission.model, contract)
    if workdir.exists():
        shutil.rmtree(workdir)
    model_dir = workdir / "model"
    compare = model_comparisons(options, contract)
    try:
        contract.save_dir = str(model_dir)
        source = verify_mode.stage_model(submission.model, contract, model_dir, options.max_model_bytes,
                                       hub_cache=hub_cache(options))
        result.provenance.weights_sha256 = verify_mode.staged_weights(model_dir)
        verification = check_saved_model(contract, workdir, hidden_set_file, options, env, sandbox, cancellation, compare)
        result.sandboxed = sandbox.flags is not None   # the model check ran confined
        verification.model_source = source
        mismatch = verification.loaded and verify_mode.weights_mismatch(contract, model_dir)
        if mismatch:
            verification.reproduced = False
            verification.mismatches.insert(0, mismatch)
    except verify_mode.ModelNotStaged as problem:
        verification = Verification(problem=str(problem))
    result.rederivation = rederivation(options, compare, contract, verification)
    if cancellation is not None and cancellation.cancelled:
        result.status, result.reason = INTERRUPTED, INTERRUPTED_REASON
        return
    result.verification = verification
    score(result, nb, (ran, ran_message), contract, verification, options.rubric)


def grade_submission(submission: Submission, options: GradingOptions, hidden_set_file: Path,
                     workdir: Path, env: dict | None = None,
                     sandbox: SandboxPlan = SandboxPlan(flags=None), cancellation: Cancellation | None = None,
                     ) -> tuple[GradeResult, nbformat.NotebookNode | None]:
    """Run the pipeline for one student; returns their result and the executed notebook.

    Once ``cancellation`` is cancelled, the kernel or verifier running is stopped and the result
    says the student was not graded.
    """
    result = GradeResult.for_submission(submission)
    started = time.monotonic()
    workdir = Path(os.path.abspath(workdir))   # the sandbox, the kernel and the model check take it as given
    try:
        nb = read_submission(submission.notebook)
        refuse_another_kit_notebook(nb, options.rubric)
        result.provenance = provenance(submission.notebook, nb)
        result.answers = short_answers(nb)
        if options.mode is Mode.VERIFY:
            grade_submitted_model(result, submission, nb, options, hidden_set_file, workdir, env, sandbox,
                                  cancellation)
            return result, None
        if options.mode is Mode.SAVED_OUTPUTS:
            from .saved_outputs import grade_saved_outputs
            grade_saved_outputs(result, nb, options.rubric)
            return result, nb
        structure = notebook_problem(nb, options.rubric.answer_key_path, outputs=False)[0]
        nb = prepare_workdir(nb, workdir)
        inject_parameters(nb, options.parameters)
        execution = execute(nb, workdir, options, env, sandbox, cancellation)
        if cancellation is not None and cancellation.cancelled:  # the kernel was stopped: no grade, no verifier
            result.status, result.reason = INTERRUPTED, INTERRUPTED_REASON
            return result, None
        result.errors, result.output_truncated = execution.errors, execution.output_truncated
        result.sandboxed = execution.sandboxed
        result.reason = stop_reason(execution)
        contract = read_contract(execution.notebook)
        result.reported_metrics, result.contract_problems = contract.test_metrics, contract.problems
        result.verification = check_saved_model(contract, workdir, hidden_set_file, options, env, sandbox, cancellation)
        score(result, nb, executed_to_end(result, execution, structure), contract, result.verification, options.rubric)
        return result, execution.notebook
    except SubmissionUnreadable as error:  # the machine's fault, not the notebook's: retried
        result.status, result.reason = GRADER_ERROR, str(error)
        return result, None
    except GraderError as error:  # a notebook that cannot be graded at all
        result.status, result.reason = NOT_GRADABLE, str(error)
        return result, None
    finally:
        result.run_time_s = round(time.monotonic() - started, 1)
