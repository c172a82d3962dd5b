"""What a grade depends on, as one hash: a rerun keeps an earlier result only when it matches.

The student's notebook (its bytes), the rubric, the hidden set (the sample the grader measured
on), the parameters, whether notebooks run, the limits and the grader's version. Change any of
them and the earlier grade is stale: that student is graded again.
"""
from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from .results import Mode

DISTRIBUTION = "finetune-sentiment-grader"


def grader_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes; "" when it cannot be read (that result is a "not gradable" one)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return ""


def model_digest(model: Path | None) -> str:
    """sha256 over a submitted model: a zip's or submission.json's bytes, or a folder's files by name."""
    if model is None:
        return ""
    if model.is_dir() and not model.is_symlink():
        files = sorted(path for path in model.iterdir() if path.is_file() and not path.is_symlink())
        return hashlib.sha256("".join(f"{path.name}\0{file_digest(path)}\n" for path in files).encode()).hexdigest()
    return file_digest(model)


def fingerprint(notebook: Path, settings: str, model: Path | None = None) -> str:
    """The fingerprint of one student's grade under ``settings`` (``grader.options.graded_settings``), with
    ``model``'s files when it is given."""
    return hashlib.sha256(f"{file_digest(notebook)}\n{model_digest(model)}\n{settings}".encode()).hexdigest()


def submission_fingerprint(submission, settings: str, mode: str) -> str:
    """``fingerprint`` of a discovered submission graded in ``mode``: its submitted model counts in verify mode,
    the only mode that grades it."""
    return fingerprint(submission.notebook, settings, submission.model if mode == Mode.VERIFY else None)
