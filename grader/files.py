"""Files written whole or not at all: what every writer of an output folder uses (a leaf module)."""
from __future__ import annotations

import errno
import os
import secrets
import tempfile
from pathlib import Path

from .errors import ConfigError, OutputUnwritable


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


def kept_seed(path: Path, chosen: int | None) -> int:
    """``chosen``, else the seed kept in ``path`` (drawn at random and written there the first time)."""
    if chosen is None and path.is_file():
        try:
            return int(path.read_text(encoding="utf-8"))
        except ValueError:
            raise ConfigError(f"{path} does not hold a seed; delete it to draw a new one") from None
    seed = secrets.randbits(32) if chosen is None else chosen
    write_atomic(path, str(seed))
    return seed
