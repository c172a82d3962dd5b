"""Autograder for the fine-tuning course kit. Start with ``grade_submissions``."""
from .batch import BatchResult, grade_submissions
from .cancel import GradingInterrupted
from .errors import GraderError
from .pipeline import GradingOptions
from .results import GradeResult
from .rubric import Rubric, load_rubric

__all__ = ["BatchResult", "GradeResult", "GraderError", "GradingInterrupted", "GradingOptions", "Rubric",
           "grade_submissions", "load_rubric"]
