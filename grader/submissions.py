"""Find the submissions in a folder: one notebook per student.

Three layouts are accepted, and may be mixed:
- notebooks directly in the folder, the student named by the file name;
- a folder per student holding their notebook, the student named by the folder;
- an unzipped Canvas "Download Submissions" archive, whose files are named
  ``lastfirst[_LATE]_<user id>_<submission id>_<original name>[-N].ipynb``; the student is the
  Canvas user id, and of several resubmissions (``-1``, ``-2``) the newest is kept.
Anything else is listed as skipped with a reason, never fatal.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

CANVAS_NAME = re.compile(
    r"^(?P<name>[a-z0-9\-]+?)(?:_late)?_(?P<user_id>\d+)_(?P<submission_id>\d+)_(?P<file>.+?)(?:-(?P<attempt>\d+))?\.ipynb$",
    re.IGNORECASE)
SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Submission:
    student_id: str           # safe to use as a file name
    notebook: Path
    display_name: str = ""
    canvas_user_id: str = ""
    attempt: int = 0


@dataclass
class Discovery:
    submissions: list[Submission] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)


def safe_id(text: str) -> str:
    """A file name that stays inside the output folder: no separators, no leading dots."""
    return SAFE_ID.sub("_", text).strip("._") or "unnamed"


def readable_name(text: str) -> str:
    """A name for people and CSV files: bytes that are not UTF-8 (surrogate escapes) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _from_file(path: Path) -> Submission:
    match = CANVAS_NAME.match(path.name)
    if match:
        return Submission(student_id=safe_id(match["user_id"]), notebook=path, display_name=match["name"],
                          canvas_user_id=match["user_id"], attempt=int(match["attempt"] or 0))
    return Submission(student_id=safe_id(path.stem), notebook=path, display_name=readable_name(path.stem))


def _from_folder(folder: Path, discovery: Discovery) -> Submission | None:
    notebooks = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        discovery.skipped.append((str(folder), "a folder without a notebook"))
        return None
    chosen = max(notebooks, key=lambda p: p.stat().st_mtime)
    for other in notebooks:
        if other != chosen:
            discovery.skipped.append((str(other), f"the newer {chosen.name} was graded for {folder.name}"))
    return Submission(student_id=safe_id(folder.name), notebook=chosen, display_name=readable_name(folder.name))


def discover(folder: Path) -> Discovery:
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of submissions")
    discovery = Discovery()
    found: list[Submission] = []
    for entry in sorted(folder.iterdir()):
        if entry.name == "__MACOSX" or (entry.name.startswith(".") and entry.suffix.lower() != ".ipynb"):
            continue   # .DS_Store, .ipynb_checkpoints: never submissions
        if entry.name.startswith("."):   # macOS's ._name.ipynb, or a name hiding itself: said, not graded
            discovery.skipped.append((str(entry), "a hidden file (its name starts with a dot)"))
            continue
        if entry.is_symlink() and entry.is_dir():
            discovery.skipped.append((str(entry), "a link to a folder, not a student's own folder"))
            continue
        if entry.is_dir():
            submission = _from_folder(entry, discovery)
            if submission:
                found.append(submission)
        elif entry.suffix.lower() == ".ipynb":
            found.append(_from_file(entry))
        else:
            discovery.skipped.append((str(entry), "not a notebook"))
    newest: dict[str, Submission] = {}
    for submission in found:
        kept = newest.get(submission.student_id)
        if kept is None or submission.attempt > kept.attempt:
            newest[submission.student_id] = submission
            if kept:
                discovery.skipped.append((str(kept.notebook), f"resubmitted as {submission.notebook.name}"))
        else:
            discovery.skipped.append((str(submission.notebook), f"resubmitted as {kept.notebook.name}"))
    discovery.submissions = sorted(newest.values(), key=lambda s: s.student_id)
    return discovery
