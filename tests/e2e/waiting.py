"""Bounded waiting for end-to-end tests: every wait has a timeout and says what it waited for."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, message: str = "condition",
             interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    An exception raised by the predicate counts as "not yet" (the API object may not exist yet);
    the last one is shown if the wait times out. Raises AssertionError naming ``message``.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - "not yet"; reported on timeout
            last_error = exc
        else:
            if value:
                return value
            last_value = value
        if time.monotonic() >= deadline:
            detail = f"last error: {last_error!r}" if last_error else f"last value: {last_value!r}"
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message} ({detail})")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
