"""The model check: a student's saved model judged in a process of its own, after the kernel is gone.

- ``refusals``: what is refused before any model loads (files, links, pickles, sizes, settings);
- ``base_model``: whether it is a fine-tune of the course's base model;
- ``inference``: its predictions (token-sized batches, bf16 only where no label can change);
- ``statistics``: the hidden set's metrics and their intervals;
- ``worker``: the process (``python -m grader.model_check``) and the grader's side of it.

Every mode runs it; verify mode (``grader.verify_mode``) also reads the notebook's saved outputs.
This file imports nothing: the worker runs in the sandbox, where every import costs every student.
"""
