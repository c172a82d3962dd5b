"""Find the submissions in a folder: one notebook per student.

Three layouts are accepted, and may be mixed:
- notebooks directly in the folder, the student named by the file name;
- a folder per student holding their notebook, the student named by the folder;
- an unzipped Canvas "Download Submissions" archive, whose files are named
  ``lastfirst[_LATE]_<user id>_<submission id>_<original name>[-N].ipynb``; the student is the
  Canvas user id, and of several resubmissions (``-1``, ``-2``) the newest is kept.
Only Canvas files of one user id are resubmissions: two other files are two students, whose ids
never coincide. Anything else is listed as skipped with a reason, never fatal.

Each notebook is paired with the model submitted beside it, for ``grade --verify``: in a student's
folder, a model folder (holding ``config.json``), a zip or a ``submission.json``; among Canvas files,
the zip or ``submission.json`` of the same user id; among plain notebooks, a zip named like the
notebook (``alice.ipynb`` and ``alice-model.zip``). The newest is taken when there are several.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path

from .errors import UsageError

# ``name`` is Canvas's lastfirst: letters of any script (müllerjürgen), digits and hyphens.
CANVAS_NAME = re.compile(
    r"^(?P<name>(?:[^\W_]|-)+?)(?:_late)?_(?P<user_id>\d+)_(?P<submission_id>\d+)_(?P<file>.+?)(?:-(?P<attempt>\d+))?\.ipynb$",
    re.IGNORECASE)
MAX_ID_BYTES = 100        # well under the 255 bytes of a file name, with room for .ipynb, .html, .json
HASH_DIGITS = 8
# Not submissions: Jupyter's autosaved copies, and the resource forks macOS adds to a zip.
NEVER_SUBMISSIONS = {".ipynb_checkpoints", "__MACOSX"}
CANVAS_FILE = re.compile(r"^(?:[^\W_]|-)+?(?:_late)?_(?P<user_id>\d+)_\d+_(?P<file>.+?)(?:-(?P<attempt>\d+))?"
                         r"\.(?P<suffix>zip|json)$", re.IGNORECASE)
SUBMISSION_FILE = "submission.json"   # Canvas adds its prefix: doejane_4242_9001_submission.json


@dataclass(frozen=True)
class Submission:
    student_id: str           # safe to use as a file name
    notebook: Path
    display_name: str = ""
    canvas_user_id: str = ""
    attempt: int = 0
    model: Path | None = None  # the model submitted with the notebook: a folder, a zip or a submission.json


@dataclass
class Discovery:
    submissions: list[Submission] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)


def _keeps(char: str) -> bool:
    """Letters, digits and combining marks (Hindi, Thai, a decomposed ü) read as a name; . _ - are safe."""
    return unicodedata.category(char)[0] in "LNM" or char in "._-"


def _cleaned(name: str) -> str:
    """The name with each run of other characters (separators, controls, spaces) made one ``_``."""
    joined = "".join("".join(run) if kept else "_" for kept, run in groupby(name, key=_keeps))
    # No leading dot (hidden) or dash (read as an option by a shell command), cut to a bounded length.
    short = joined.strip("._-").encode("utf-8")[:MAX_ID_BYTES - HASH_DIGITS - 1].decode("utf-8", "ignore")
    return short.strip("._-") or "unnamed"


def safe_id(name: str) -> str:
    """A readable file name that stays inside the output folder, different for different names.

    A name that is already safe is its own id; any other gets a hash of the original name, so
    that ``bob smith`` (``bob_smith-7e50351d``) and ``bob_smith`` stay two students.
    """
    cleaned = _cleaned(name)
    if cleaned == name:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{cleaned}-{digest[:HASH_DIGITS]}"


def readable_name(text: str) -> str:
    """A name for people and CSV files: bytes that are not UTF-8 (surrogate escapes) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _from_file(path: Path) -> Submission:
    # NFC: a name unzipped on macOS may spell ü as u and a combining diaeresis.
    match = CANVAS_NAME.match(unicodedata.normalize("NFC", path.name))
    if match:
        return Submission(student_id=safe_id(match["user_id"]), notebook=path, display_name=match["name"],
                          canvas_user_id=match["user_id"], attempt=int(match["attempt"] or 0))
    return Submission(student_id=safe_id(path.stem), notebook=path, display_name=readable_name(path.stem))


def _from_folder(folder: Path, discovery: Discovery) -> Submission | None:
    notebooks = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        discovery.skipped.append((str(folder), "a folder without a notebook"))
        return None
    chosen = max(notebooks, key=lambda p: p.lstat().st_mtime)   # lstat: a dangling link has no target to stat
    for other in notebooks:
        if other != chosen:
            discovery.skipped.append((str(other), f"the newer {chosen.name} was graded for {folder.name}"))
    return Submission(student_id=safe_id(folder.name), notebook=chosen, display_name=readable_name(folder.name),
                      model=_model_in_folder(chosen.parent))


def is_submission_json(path: Path) -> bool:
    return path.name.lower().endswith(SUBMISSION_FILE)


def _is_model_candidate(entry: Path) -> bool:
    if entry.name.startswith("."):
        return False
    if entry.is_dir():
        return (entry / "config.json").exists() or (entry / "config.json").is_symlink()
    return entry.suffix.lower() == ".zip" or is_submission_json(entry)


def _newest(paths: list[Path]) -> Path | None:
    """A model (a folder or a zip) before a ``submission.json`` that names one on the Hub; then the newest."""
    return max(paths, key=lambda p: (not is_submission_json(p), p.lstat().st_mtime, p.name), default=None)


def _model_in_folder(folder: Path) -> Path | None:
    return _newest([entry for entry in folder.iterdir() if _is_model_candidate(entry)])


def _owner(file: Path, found: list[Submission]) -> Submission | None:
    """Whose a flat zip or submission.json is: the Canvas user's of its id, or else the plain notebook
    whose name it starts with, the longest such name (``alice_bob-model.zip`` is alice_bob's, not alice's)."""
    match = CANVAS_FILE.match(unicodedata.normalize("NFC", file.name))
    if match:
        return next((s for s in found if s.canvas_user_id == match["user_id"]), None)
    if file.suffix.lower() != ".zip":
        return None
    plain = [s for s in found if not s.canvas_user_id and file.name.startswith(s.notebook.stem)]
    return max(plain, key=lambda s: len(s.notebook.stem), default=None)


def _pair_models(found: list[Submission], files: list[Path]) -> tuple[list[Submission], set[Path]]:
    """Each flat notebook with the zip or submission.json beside it (``_owner``); returns the submissions
    and the files paired."""
    owned: dict[Path, list[Path]] = {}
    for file in files:
        if (owner := _owner(file, found)) is not None:
            owned.setdefault(owner.notebook, []).append(file)
    paired = [s if s.model is not None else replace(s, model=_newest(owned.get(s.notebook, []))) for s in found]
    return paired, {file for group in owned.values() for file in group}


def _holds_a_notebook(entry: Path) -> bool:
    if entry.is_dir():   # a link to a folder is not searched: it could lead anywhere
        return not entry.is_symlink() and any(entry.rglob("*.ipynb"))
    return entry.suffix.lower() == ".ipynb"


def _from_entry(entry: Path, discovery: Discovery) -> Submission | None:
    """The submission one entry of the folder holds, or None, with the reason in ``discovery.skipped``."""
    if entry.name in NEVER_SUBMISSIONS or (entry.name.startswith(".") and not _holds_a_notebook(entry)):
        return None   # .DS_Store, .git: no one's work
    if entry.name.startswith("."):   # macOS's ._name.ipynb, or a name hiding itself: said, not graded
        kind = "folder" if entry.is_dir() else "file"
        discovery.skipped.append((str(entry), f"a hidden {kind} (its name starts with a dot)"))
        return None
    if entry.is_symlink() and entry.is_dir():
        discovery.skipped.append((str(entry), "a link to a folder, not a student's own folder"))
        return None
    if entry.is_dir():
        return _from_folder(entry, discovery)
    if entry.suffix.lower() == ".ipynb":
        return _from_file(entry)
    discovery.skipped.append((str(entry), "not a notebook"))
    return None


def _newest_attempts(found: list[Submission], discovery: Discovery) -> list[Submission]:
    """Of one Canvas user's files, the newest attempt; any other notebook is a student of its own."""
    newest: dict[object, Submission] = {}
    for submission in found:
        student = submission.canvas_user_id or submission.notebook
        kept = newest.get(student)
        if kept is None or submission.attempt > kept.attempt:
            newest[student] = submission
            if kept:
                discovery.skipped.append((str(kept.notebook), f"resubmitted as {submission.notebook.name}"))
        else:
            discovery.skipped.append((str(submission.notebook), f"resubmitted as {kept.notebook.name}"))
    return list(newest.values())


def _folded(student_id: str) -> str:
    """An id as a case-insensitive file system (macOS, Windows) sees it."""
    return unicodedata.normalize("NFC", student_id).casefold()


def _distinct_ids(submissions: list[Submission]) -> list[Submission]:
    """Each student an id, and so result files, of their own, even where two names give one id (a
    crafted hash, names apart only in case): the later of them in order gets ``-2``, ``-3`` (past
    MAX_ID_BYTES by those few bytes, still far from the file-name limit)."""
    taken: set[str] = set()
    distinct: list[Submission] = []
    for submission in sorted(submissions, key=lambda s: (s.student_id, str(s.notebook))):
        student_id, number = submission.student_id, 1
        while _folded(student_id) in taken:
            number += 1
            student_id = f"{submission.student_id}-{number}"
        taken.add(_folded(student_id))
        distinct.append(replace(submission, student_id=student_id))
    return distinct


def discover(folder: Path) -> Discovery:
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of submissions")
    discovery = Discovery()
    entries = sorted(folder.iterdir())
    found = [submission for entry in entries if (submission := _from_entry(entry, discovery))]
    found, paired = _pair_models(found, [e for e in entries if e.is_file() and _is_model_candidate(e)])
    discovery.skipped = [(path, reason) for path, reason in discovery.skipped if Path(path) not in paired]
    discovery.submissions = sorted(_distinct_ids(_newest_attempts(found, discovery)), key=lambda s: s.student_id)
    return discovery
