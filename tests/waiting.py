"""Waiting in tests for what another process does, with a deadline."""
import time


def wait_for(condition, timeout_s: float) -> bool:
    """Whether ``condition()`` became true within ``timeout_s`` seconds (polled every 0.2 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False
