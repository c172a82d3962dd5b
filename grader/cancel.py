"""Stop a grading run part-way (Ctrl-C): no new student starts, and what runs is stopped at once.

A ``Cancellation`` is an event that the batch checks before each student, plus the stoppers of
what is running now (a kernel, a verifier process), registered for as long as each runs:

    with cancellation.register(process.kill):
        process.communicate(timeout=...)

``cancel()`` sets the event and calls every registered stopper. A stopper registered after the
cancel is called at once, so nothing started in between keeps running.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class Cancellation:
    def __init__(self):
        self._event = threading.Event()
        self._stoppers: list[Callable[[], object]] = []
        # Reentrant: cancel() runs in a signal handler, which a second Ctrl-C may enter again.
        self._lock = threading.RLock()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @contextmanager
    def register(self, stop: Callable[[], object]) -> Iterator[None]:
        with self._lock:
            self._stoppers.append(stop)
        if self.cancelled:  # cancelled before this was registered: cancel() may have missed it
            _call(stop)
        try:
            yield
        finally:
            with self._lock:
                self._stoppers.remove(stop)

    def cancel(self) -> None:
        self._event.set()
        with self._lock:
            stoppers = list(self._stoppers)
        for stop in stoppers:
            _call(stop)


def _call(stop: Callable[[], object]) -> None:
    try:
        stop()
    except Exception:  # a process already gone, a kernel not started yet: nothing left to stop
        pass


class GradingInterrupted(KeyboardInterrupt):
    """The run was cancelled; ``batch`` holds its results, the students not graded among them."""

    def __init__(self, batch):
        super().__init__("grading interrupted")
        self.batch = batch


@contextmanager
def cancel_on_sigint(cancellation: Cancellation) -> Iterator[None]:
    """While inside, Ctrl-C cancels the run instead of raising KeyboardInterrupt at a random point.

    Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its usual effect.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancellation.cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
