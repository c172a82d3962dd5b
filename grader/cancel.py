"""Stop a grading run part-way (Ctrl-C, or SIGTERM): no new student starts, and what runs is stopped at once.

A ``Cancellation`` is an event that the batch checks before each student, plus the stoppers of
what is running now (a kernel, a verifier process), registered for as long as each runs:

    with cancellation.register(process.kill):
        process.communicate(timeout=...)

``cancel()`` sets the event and calls every registered stopper. A stopper registered after the
cancel is called at once, so nothing started in between keeps running.

SIGTERM (what ``kill``, a scheduler or a container's end sends) is Ctrl-C's twin throughout: during
a batch it cancels the run, and before one it raises ``Terminated``, a ``KeyboardInterrupt``.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Cancellation:
    def __init__(self):
        self._event = threading.Event()
        self.signal_number: int | None = None   # the signal that cancelled the run, if one did
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

    def cancel(self, signal_number: int | None = None) -> None:
        if signal_number is not None and self.signal_number is None:
            self.signal_number = signal_number
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


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived outside a batch: handled wherever Ctrl-C is, and said apart by its exit code."""

    signal_number = signal.SIGTERM


def raise_terminated(signum, frame) -> None:
    raise Terminated()


def exit_code(interrupt: BaseException) -> int:
    """128 + the signal, as a shell reports a process it stopped: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + int(getattr(interrupt, "signal_number", None) or signal.SIGINT)


class GradingInterrupted(KeyboardInterrupt):
    """The run was cancelled; ``batch`` holds its results, the students not graded among them."""

    def __init__(self, batch, signal_number: int | None = None):
        super().__init__("grading interrupted")
        self.batch = batch
        self.signal_number = signal_number or signal.SIGINT


@contextmanager
def cancel_on_signals(cancellation: Cancellation) -> Iterator[None]:
    """While inside, Ctrl-C and SIGTERM cancel the run instead of raising KeyboardInterrupt at a random point.

    Signal handlers can only be set from the main thread; elsewhere the signals keep their usual effect.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, lambda number, frame: cancellation.cancel(number))
                for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:   # None: a handler set outside Python, which cannot be put back
                signal.signal(signum, handler)
