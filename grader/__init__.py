"""Autograder for the fine-tuning course kit. Start with ``grade_submissions``.

The names below are imported on first use (PEP 562), not when the package is: the programs that run
inside the sandbox (``python -m grader.confine``, ``python -m grader.model_check``) import this package
first, and must not pay for nbformat, nbconvert and nbgrader, which the batch pulls in.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BatchResult": "batch", "grade_submissions": "batch", "GradingInterrupted": "cancel",
    "GraderError": "errors", "GradingOptions": "options", "GradeResult": "results",
    "Rubric": "rubric", "load_rubric": "rubric",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'grader' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__():
    return __all__
