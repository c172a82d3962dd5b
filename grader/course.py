"""What the grader knows of the course itself: where its notebooks are, and its two labels.

A leaf: it imports nothing, so the code that runs inside the sandbox (``grader.confine``, the model
check) can use it without pulling in nbformat, nbconvert or nbgrader.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSWER_KEY = ROOT / "answer_key" / "MLB_Project_FineTuning_AnswerKey.ipynb"
TEMPLATE = ROOT / "notebooks" / "MLB_Project_FineTuning_Template.ipynb"
# The optional bonus notebook (LoRA, a hyperparameter search, other datasets), built the same way.
GOING_FURTHER_ANSWER_KEY = ROOT / "answer_key" / "MLB_Project_GoingFurther_AnswerKey.ipynb"
GOING_FURTHER_TEMPLATE = ROOT / "notebooks" / "MLB_Project_GoingFurther_Template.ipynb"
# Every (answer key, template) pair: `grade build` writes, and `grade build --check` checks, all of them.
NOTEBOOKS = ((ANSWER_KEY, TEMPLATE), (GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE))
ANSWER_KEYS = tuple(answer_key for answer_key, _ in NOTEBOOKS)

LABELS = ("negative", "positive")   # label 0 is negative, as on the Hub
