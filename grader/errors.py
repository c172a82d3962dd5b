"""Every error the grader raises on purpose derives from GraderError.

The CLI catches GraderError once and maps it to an exit code; anything else is a bug.
A problem with one student's notebook never escapes as an exception: it becomes that
student's result with a reason (see grader.pipeline).
"""


class GraderError(Exception):
    """Root of the grader's own errors."""

    exit_code = 1


class UsageError(GraderError):
    """The command was called wrongly: bad path, bad option value."""

    exit_code = 2


class ConfigError(UsageError):
    """A rubric or parameter file that cannot be used."""


class NoSubmissions(UsageError):
    """The submissions folder holds no notebook to grade."""


class HiddenSetUnavailable(UsageError):
    """The default hidden set comes from the Hub, which could not be reached; a local CSV is needed."""


class SandboxUnavailable(UsageError):
    """``--sandbox require`` was asked for, and bubblewrap cannot run here."""


class OutputUnwritable(GraderError):
    """The output folder cannot be written: a full disk, a read-only folder, an I/O error."""

    exit_code = 74   # EX_IOERR of sysexits.h: the machine, not the command, is at fault


class NotebookInvalid(GraderError):
    """A file that is not a readable Jupyter notebook."""


class SubmissionUnreadable(GraderError):
    """A notebook the machine failed to read (EMFILE, EIO): the student's result is a retried grader error."""


class WrongNotebook(GraderError):
    """A notebook of the kit other than the one the rubric grades."""


class ParametersCellNotFound(GraderError):
    """Overrides were given but the notebook has no parameters cell to put them after."""


class TemplateOutOfDate(GraderError):
    """The committed student template differs from a fresh build of the answer key."""
