"""Autograder for the fine-tuning course kit. Start with ``grade_submissions``."""
from .batch import BatchResult, grade_submissions
from .errors import GraderError
from .pipeline import GradingOptions
from .results import GradeResult
from .rubric import Rubric, load_rubric

__all__ = ["BatchResult", "GradeResult", "GraderError", "GradingOptions", "Rubric", "grade_submissions",
           "load_rubric"]
