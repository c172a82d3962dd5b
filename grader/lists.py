"""Lists kept short: a result, its feedback and the gradebook stay small whatever a submission holds.

A leaf (it imports nothing), so the model check inside the sandbox uses it too.
"""
from __future__ import annotations

MAX_PROBLEMS_KEPT = 10


def capped(items: list[str], limit: int = MAX_PROBLEMS_KEPT, what: str = "problem") -> list[str]:
    """The first ``limit`` items, then one line counting the rest."""
    if len(items) <= limit:
        return list(items)
    return list(items[:limit]) + [f"... and {len(items) - limit:,} more {what}(s) like these"]
