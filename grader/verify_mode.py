"""Verify mode (``grade --verify``): grade the model a student submitted, without re-running the notebook.

A submission is the executed notebook plus its saved model: a folder holding ``config.json``, a zip of
that folder, or a Hugging Face Hub model pinned to a commit (recorded by the notebook's submit cell, or
in a ``submission.json`` beside it). The steps, after ``pipeline.read_submission``:

1. saved_contract     test_metrics, predictions and the model reference, from the notebook's saved output
2. ran_in_order       every code cell ran, in order, without an error (the saved execution counts)
3. stage_model        the model's files copied into the working folder, nothing else, within the limits
4. verify             as in execute mode: confined, loaded with safetensors, measured on the hidden set,
                      and it must reproduce the notebook's predictions
5. weights_match      the weights are the very files the notebook recorded (sha256)

What a student submitted is hostile input: the zip may hold links, ``..`` paths, a bomb or thousands of
files; a folder may hold links to the grader's files. Only regular files with plain names and the
suffixes a model needs are staged, byte counts are enforced while copying (never trusted from a header),
and the verifier then runs in the sandbox, as in execute mode.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .contract import Contract, parse_metrics, parse_predictions
from .errors import UsageError
from .execute import cell_errors, cell_location, cell_section, iter_cell_errors, student_cell_number
from .identity import is_submission, notebook_problem, submit_digest
from .results import VERIFY_MODE
from .rubric import NO_BASE_MODEL, self_check_digests, source_digest
from .sandbox import size_text
from .submissions import SUBMISSION_FILE, is_submission_json

__all__ = ["VERIFY_MODE", "saved_contract", "ran_in_order", "stage_model", "weights_mismatch", "ModelNotStaged"]

# The files a saved model and tokenizer consist of; anything else in a submission is left where it is.
MODEL_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
MAX_MODEL_FILES = 64
MAX_SUBMISSION_JSON_BYTES = 1_000_000
MAX_NAME_BYTES = 255        # a file name's limit on Linux and macOS file systems
HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


class ModelNotStaged(Exception):
    """The submitted model could not be taken in; the message says why, for the student's feedback."""


@dataclass
class SubmittedContract(Contract):
    """The contract as the notebook's submit cell recorded it, with the model it names."""

    model: dict = field(default_factory=dict)
    test_split: dict = field(default_factory=dict)   # what the submit cell recorded of its test split


# 1 ------------------------------------------------------------------------------------------
def _submission_outputs(nb, submit_digest: str | None = None):
    """The JSON objects the notebook displayed that look like a submission, the last one first; with
    ``submit_digest``, only those the course's submit cell displayed (a cell with its source)."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code" or (submit_digest is not None and source_digest(cell.source) != submit_digest):
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("application/json")
            if is_submission(data):
                found.append(data)
    return found[::-1]


def saved_contract(nb, answer_key: Path | None = None) -> SubmittedContract:
    """What the notebook's submit cell displayed (the grader's contract cell never ran in verify mode).

    With ``answer_key``, the submission is read from the course's submit cell only (the cell with the answer
    key's submit source), when the answer key has one: JSON pasted into another cell counts for nothing."""
    contract = SubmittedContract()
    digest = submit_digest(answer_key) if answer_key is not None else None
    outputs = _submission_outputs(nb, digest)
    if not outputs:
        where = "the course's submit cell shows" if digest else "the notebook's saved outputs hold"
        contract.problems.append(f"{where} no submission (run its last section, Submit)")
        return contract
    payload = outputs[0]
    contract.test_metrics = parse_metrics(payload.get("test_metrics"), contract.problems)
    contract.predictions = parse_predictions(payload.get("predictions"), contract.problems)
    contract.model = payload.get("model") if isinstance(payload.get("model"), dict) else {}
    contract.test_split = payload.get("test_split") if isinstance(payload.get("test_split"), dict) else {}
    return contract


# 2 ------------------------------------------------------------------------------------------
def first_notebook_error(nb):
    """The first error the saved outputs show outside the self-check cells, or None (one pass, lazily)."""
    self_checks = self_check_digests()
    return next((error for error in iter_cell_errors(nb) if source_digest(error.source) not in self_checks), None)


def ran_in_order(nb, answer_key: Path | None = None) -> tuple[bool, str, list]:
    """Whether the saved outputs show the course's notebook (``answer_key``'s locked cells, with the outputs
    they print) with every code cell run once, top to bottom, without an error; with the message and the
    errors found (the first few)."""
    errors = cell_errors(nb)
    failure = first_notebook_error(nb)
    counts = [(index, cell.get("execution_count")) for index, cell in enumerate(nb.cells)
              if cell.cell_type == "code" and cell.source.strip()]
    never = [index for index, count in counts if not isinstance(count, int)]
    ran = [(index, count) for index, count in counts if isinstance(count, int)]
    out_of_order = next((index for (_, before), (index, count) in zip(ran, ran[1:]) if count <= before), None)
    structure = notebook_problem(nb, answer_key, outputs=True)[0] if answer_key is not None else None

    def where(index: int) -> str:
        return cell_location(cell_section(nb, index), nb.cells[index].get("id", ""), student_cell_number(nb, index))

    if failure:
        return False, f"the saved outputs show {failure.where} raised {failure.ename}: {failure.evalue[:400]}", errors
    if structure:
        return False, structure, errors
    if never:
        return False, f"{len(never)} code cell(s) never ran (first: {where(never[0])}): use Restart and run all", errors
    if out_of_order is not None:
        return False, (f"{where(out_of_order)} ran before the cell above it (execution counts out of order): "
                       "use Restart and run all, then submit"), errors
    return True, "the saved outputs show the course's notebook, every cell run in order without errors (not re-run)", \
        errors


# 3 ------------------------------------------------------------------------------------------
def _model_file_name(name: str) -> bool:
    """A plain file name of the kind a model consists of, that this file system can hold."""
    try:
        too_long = len(os.fsencode(name)) > MAX_NAME_BYTES
    except UnicodeError:   # not representable as a file name here: not a model file either
        return False
    return (not too_long and name == os.path.basename(name) and name not in ("", ".", "..")
            and not name.startswith(".") and name.endswith(MODEL_SUFFIXES) and "\\" not in name and "\x00" not in name)


def _copy_capped(source, target: Path, budget: list[int], max_bytes: int) -> None:
    """Copy a stream, counting its real bytes against what is left of the model's limit (a zip's sizes may lie)."""
    with open(target, "xb") as handle:
        while chunk := source.read(1 << 20):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise ModelNotStaged(f"the model is over the limit of {size_text(max_bytes)} "
                                     f"(grade --max-model-size), at {target.name}")
            handle.write(chunk)


def _zip_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The model files of a zip by plain name: at its top, or in one folder (a zipped model folder)."""
    members = [info for info in archive.infolist() if not info.is_dir()
               and not info.filename.startswith("__MACOSX/") and not info.filename.endswith(".DS_Store")]
    if len(members) > MAX_MODEL_FILES:
        raise ModelNotStaged(f"the zip holds {len(members)} files; a model has at most {MAX_MODEL_FILES}")
    tops = {info.filename.split("/")[0] for info in members if "/" in info.filename}
    prefix = f"{tops.pop()}/" if len(tops) == 1 and all("/" in info.filename for info in members) else ""
    chosen = {}
    for info in members:
        name = info.filename[len(prefix):] if info.filename.startswith(prefix) else info.filename
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelNotStaged(f"the zip holds a link ({info.filename[:100]!r}), not a file")
        if info.flag_bits & 0x1:
            raise ModelNotStaged("the zip is encrypted")
        if "/" in name or not _model_file_name(name):
            continue   # a notebook, checkpoints, a path that leads elsewhere, a name too long: not the model's
        chosen[name] = info
    return chosen


def _refuse_declared_sizes(members: dict[str, zipfile.ZipInfo], max_bytes: int) -> None:
    """Refuse, before a byte is written, a zip whose model files declare more than the limit in all."""
    declared = sum(info.file_size for info in members.values())
    if declared > max_bytes:
        largest = max(members, key=lambda name: members[name].file_size)
        raise ModelNotStaged(f"the zip declares {size_text(declared)} of model files ({largest}: "
                             f"{size_text(members[largest].file_size)}), over the limit of {size_text(max_bytes)} "
                             "(grade --max-model-size)")


def stage_zip(path: Path, target: Path, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            members = _zip_members(archive)
            _refuse_declared_sizes(members, max_bytes)
            budget = [max_bytes]
            for name, info in members.items():
                with archive.open(info) as source:
                    _copy_capped(source, target / name, budget, max_bytes)
    # UnicodeDecodeError: a name flagged UTF-8 that is not; the student's zip, never the grader's fault
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError,
            UnicodeDecodeError, ValueError) as error:
        raise ModelNotStaged(f"the zip cannot be read: {type(error).__name__}: {str(error)[:300]}") from error


def stage_folder(folder: Path, target: Path, max_bytes: int, links_within: Path | None = None) -> None:
    """Copy a model folder's regular files. Links are refused, except, for a Hub snapshot
    (``links_within``), links into that repository's own cache."""
    entries = sorted(folder.iterdir())
    if len(entries) > MAX_MODEL_FILES * 4:
        raise ModelNotStaged(f"the model folder holds {len(entries)} entries; a model has far fewer")
    chosen = []
    for entry in entries:
        if not _model_file_name(entry.name):
            continue
        real = Path(os.path.realpath(entry))
        if entry.is_symlink() and (links_within is None or not real.is_relative_to(links_within)):
            raise ModelNotStaged(f"{entry.name} in the model folder is a link to another file")
        if stat.S_ISREG(os.stat(real).st_mode):
            chosen.append((entry.name, real))
    declared = sum(real.stat().st_size for _, real in chosen)
    if declared > max_bytes:
        raise ModelNotStaged(f"the model folder holds {size_text(declared)} of model files, over the limit of "
                             f"{size_text(max_bytes)} (grade --max-model-size)")
    budget = [max_bytes]
    for name, real in chosen:
        with open(real, "rb") as source:
            _copy_capped(source, target / name, budget, max_bytes)


def hub_reference(contract: SubmittedContract, submission_json: Path | None) -> tuple[str, str] | None:
    """(repository, commit) the notebook recorded, or a ``submission.json`` beside it names."""
    model = contract.model
    if "hub" not in model and submission_json is not None:
        try:
            if submission_json.stat().st_size > MAX_SUBMISSION_JSON_BYTES:
                raise ModelNotStaged(f"{SUBMISSION_FILE} is over {MAX_SUBMISSION_JSON_BYTES} bytes")
            model = json.loads(submission_json.read_text(encoding="utf-8")).get("model") or {}
        except (OSError, ValueError, AttributeError) as error:
            raise ModelNotStaged(f"{SUBMISSION_FILE} cannot be read: {error}") from error
    if "hub" not in model:
        return None
    repository, revision = model.get("hub"), model.get("revision")
    if not isinstance(repository, str) or not HUB_REPO.match(repository):
        raise ModelNotStaged(f"{str(repository)[:100]!r} is not a Hub model id (owner/name)")
    if not isinstance(revision, str) or not COMMIT.match(revision):
        raise ModelNotStaged("the Hub model is not pinned to a commit (40 hexadecimal digits), so what is graded "
                             "could change after the deadline")
    return repository, revision


def hub_listing(repository: str, revision: str) -> int | None:
    """Bytes of the model's files at ``revision`` as the Hub lists them, or None when the Hub cannot be asked
    (offline: then only what the grader's own cache holds is used). Asked without credentials, as anyone
    would: the instructor's token would open repositories only the instructor may read. Refused when
    ``revision`` is not the commit the Hub resolves it to: a branch or tag may be named with 40 hexadecimal
    digits, and a branch can move after the deadline."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repository, revision=revision, files_metadata=True, token=False)
    except Exception:   # offline, private, gone: snapshot_download says which, below
        return None
    if info.sha is not None and info.sha != revision:
        raise ModelNotStaged(f"{revision[:12]} names a branch or tag of {repository} (now at commit {info.sha[:12]}), "
                             "not a commit: record the commit itself (upload_folder returns it)")
    return sum(sibling.size or 0 for sibling in info.siblings or [] if sibling.rfilename.endswith(MODEL_SUFFIXES))


def download_from_hub(repository: str, revision: str, max_bytes: int, cache: Path) -> tuple[Path, Path]:
    """The snapshot folder of ``repository`` at commit ``revision`` (from ``cache``, the grader's own, or
    downloaded into it: outside the sandbox, which has no network), and the repository's cache folder its
    links may point into. Students' models never enter the Hugging Face cache that execute-mode sandboxes
    see. A repository larger than ``max_bytes`` is refused before a byte is downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    size = hub_listing(repository, revision)
    if size is not None and size > max_bytes:
        raise ModelNotStaged(f"{repository}@{revision[:12]} holds {size_text(size)} of model files, over the limit "
                             f"of {size_text(max_bytes)} (grade --max-model-size)")
    try:
        snapshot = Path(snapshot_download(repository, revision=revision, repo_type="model", cache_dir=cache,
                                          token=False, allow_patterns=[f"*{suffix}" for suffix in MODEL_SUFFIXES]))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        raise ModelNotStaged(f"{repository}@{revision[:12]} cannot be downloaded: {type(error).__name__}: "
                             f"{str(error)[:300]}") from error
    if snapshot.name != revision:   # the cache names each snapshot by the commit it holds
        raise ModelNotStaged(f"the Hub gave commit {snapshot.name[:12]} of {repository}, not the pinned {revision[:12]}")
    return snapshot, Path(os.path.realpath(snapshot.parent.parent))


def stage_model(model_source: Path | None, contract: SubmittedContract, target: Path, max_bytes: int,
                hub_cache: Path | None = None) -> str:
    """Copy the submitted model's files into ``target``, at most ``max_bytes`` of them; returns where they
    came from, in words. ``hub_cache``: the grader's own cache of students' Hub models."""
    target.mkdir(parents=True)
    submission_json = model_source if model_source is not None and is_submission_json(model_source) else None
    if model_source is not None and submission_json is None:
        if model_source.is_symlink():
            raise ModelNotStaged(f"the submitted model {model_source.name} is a link, not a file of its own")
        if model_source.is_dir():
            stage_folder(model_source, target, max_bytes)
        else:
            stage_zip(model_source, target, max_bytes)
        return model_source.name
    reference = hub_reference(contract, submission_json)
    if reference is None:
        raise ModelNotStaged("no model was submitted: upload the zip the submit cell wrote next to the notebook")
    if hub_cache is None:
        raise ModelNotStaged("this submission names a Hub model, and the grader was given no cache to download it to")
    snapshot, cache = download_from_hub(*reference, max_bytes, hub_cache)
    stage_folder(snapshot, target, max_bytes, links_within=cache)
    return f"{reference[0]}@{reference[1][:12]}"


# 4 ------------------------------------------------------------------------------------------
BASE_MODEL_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*", "vocab*",
                    "special_tokens_map.json", "merges.txt"]


@functools.cache
def resolve_base_model(name: str) -> Path | None:
    """The course's base model as a folder: ``name`` itself when it is one, else a Hub id fetched (or found
    in the Hugging Face cache) with the instructor's own settings, its config, tokenizer and weights only.
    None when the check is turned off (``none``)."""
    if name.strip().lower() in NO_BASE_MODEL:
        return None
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UsageError(f"the course's base model {name} holds no config.json")
        return folder.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, repo_type="model", allow_patterns=BASE_MODEL_FILES))
    except Exception as error:   # offline, unknown id, no network
        raise UsageError(f"the course's base model {name!r} is not a folder, and it cannot be had from the Hub "
                         f"({type(error).__name__}): pass --base-model FOLDER (a copy of it), or --base-model none "
                         "to grade without checking that each model is a fine-tune of it") from error


# 5 ------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def staged_weights(model_dir: Path) -> dict[str, str]:
    """The sha256 of each safetensors file staged (regular files the grader itself copied there)."""
    return {path.name: file_sha256(path) for path in sorted(model_dir.glob("*.safetensors"))}


def named_hub_repository(model_source: Path | None, contract: SubmittedContract) -> str:
    """The Hub repository the submission names (the notebook's output, or a submission.json beside it), or ""
    when it names none or names it malformed: recorded for the class's comparison, even if never downloaded."""
    submission_json = model_source if model_source is not None and is_submission_json(model_source) else None
    if model_source is not None and submission_json is None:
        return ""   # a zip or a folder was submitted: that is what is graded
    try:
        reference = hub_reference(contract, submission_json)
    except ModelNotStaged:
        return ""
    return reference[0] if reference else ""


def weights_mismatch(contract: SubmittedContract, model_dir: Path) -> str | None:
    """Why the staged weights are not the files the notebook recorded, or None when they are (or when
    the notebook recorded none: the predictions must still be reproduced)."""
    recorded = contract.model.get("weights_sha256")
    if not isinstance(recorded, dict) or not recorded:
        return None
    if staged_weights(model_dir) != recorded:
        return ("the submitted weights are not the files this notebook saved (their sha256 differs from the one "
                "its submit cell recorded): submit the zip from the same run as the notebook")
    return None
