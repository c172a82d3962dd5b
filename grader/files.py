"""Files written whole or not at all: what every writer of an output folder uses (a leaf module)."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import OutputUnwritable


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all. A write the machine refuses (a full disk, a read-only
    folder) raises ``OutputUnwritable``, and leaves neither a half-written file nor a temporary one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise output_fault(path, error) from error
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise output_fault(path, error) from error
        raise
    return path


def output_fault(path: Path, error: OSError) -> OutputUnwritable:
    """The machine's refusal to write ``path``, in words that say what to do."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "the disk is full (or your quota is used up): free some space, then rerun"
    elif error.errno in (errno.EMFILE, errno.ENFILE):
        advice = "the grader ran out of file descriptors: raise the limit (ulimit -n), then rerun"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "the output folder cannot be written: make it writable, or use another output folder"
    else:
        advice = "the disk or the network file system failed: check it, then rerun"
    what = f"[Errno {error.errno}] {error.strerror}" if error.strerror else str(error)
    return OutputUnwritable(f"cannot write {path}: {what}; {advice}")
