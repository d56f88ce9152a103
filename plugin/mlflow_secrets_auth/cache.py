"""The credential cache: which header to send now, and when to look at the source again.

Standard library only; it knows nothing of HTTP. The auth adapter (``auth.py``) reads one
attribute per request, ``fresh``: the ``(name, value)`` tuple while no poll is due, else None.
No clock is read per request (``clock_gettime`` is a syscall on some hosts): after each poll a
one-shot timer raises the "due" flag ``interval`` seconds later, and the next ``get()`` polls the
source (for a mounted directory, a ``readlink`` of ``..data``). The timer and the wall clock are
passed in, so tests drive the schedule by hand. A forked child polls on its first request (the
parent's timer thread does not survive a fork).

A poll never raises: a source error is logged once per distinct message and the last good
credential stays in use; a credential past its own ``expires_at`` is warned about once.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Callable, Optional, Set, Tuple

from .credentials import Credential, CredentialError
from .rfc3339 import rfc3339
from .sources import UNCHANGED

logger = logging.getLogger("mlflow_secrets_auth")

Header = Tuple[str, str]
#: ``timer(delay, callback)``: call ``callback`` once, ``delay`` seconds from now.
Timer = Callable[[float, Callable[[], None]], None]


def start_timer(delay: float, callback: Callable[[], None]) -> None:
    """The production timer: a daemon ``threading.Timer``."""
    timer = threading.Timer(delay, callback)
    timer.daemon = True
    timer.start()


_CACHES: "weakref.WeakSet" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_CACHES):
        cache._timer_pending = False
        cache._mark_due()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class CredentialCache:
    """The last good credential of ``source``, polled at most every ``interval`` seconds.

    ``fresh`` is the header to send without asking (None when a poll is due or there is no
    credential); ``get()`` is the slow path that polls when due; ``refresh(force=True)`` re-reads
    at once (after a 401/403). ``header`` is the current header whether or not a poll is due, and
    ``names`` every header name a credential of this process has used.
    """

    def __init__(
        self,
        source,
        *,
        interval: float = 0.5,
        timer: Timer = start_timer,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.interval = interval
        self._timer = timer
        self._wall = wall_clock
        self.fresh: Optional[Header] = None
        # (name, value) read in one attribute load, so a concurrent swap is atomic
        self.header: Optional[Header] = None
        # A redirect or a re-send removes all of these, so a name that rotated away cannot
        # travel with its old value.
        self.names: tuple = ()
        self.credential: Optional[Credential] = None
        self._due = True
        self._timer_pending = False
        self._lock = threading.Lock()
        self._warned_errors: Set[str] = set()
        self._expiry_warned_for: Optional[float] = None
        _CACHES.add(self)

    def describe(self) -> str:
        return self.source.describe()

    def get(self) -> Optional[Header]:
        """The header to send: polls first when a poll is due; waits for a first load that
        another thread has under way instead of answering None."""
        if self._due:
            self.refresh(False)
        header = self.header
        if header is None:
            with self._lock:
                header = self.header
        return header

    def refresh(self, force: bool) -> bool:
        """Poll the source; True when the header changed. Never raises. Without ``force``, a
        poll already under way in another thread is not waited for."""
        if not self._lock.acquire(blocking=force):
            return False
        try:
            self._due = self.interval <= 0  # an interval of 0 polls on every request
            if not self._due and not self._timer_pending:
                self._timer_pending = True
                try:
                    self._timer(self.interval, self._mark_due)
                except RuntimeError:  # no new threads (interpreter shutting down): poll next time
                    self._timer_pending = False
                    self._due = True
            return self._poll(force)
        finally:
            self.fresh = None if self._due else self.header
            self._lock.release()

    def _poll(self, force: bool) -> bool:
        try:
            result = self.source.poll(force)
        except CredentialError as exc:
            self._warn_error(str(exc))
            return False
        except Exception as exc:  # a provider outage: keep the last good credential
            self._warn_error(
                "could not read the credential from %s (%s); keeping the last good one"
                % (self.source.describe(), exc.__class__.__name__)
            )
            return False
        changed = False
        if result is not UNCHANGED:
            self._warned_errors.clear()
            changed = not result.same_header(self.credential)
            self.credential = result
            if result.header_name not in self.names:
                self.names = self.names + (result.header_name,)
            self.header = (result.header_name, result.header_value)
            if changed:
                logger.debug("credential loaded from %s", self.source.describe())
        self._check_expiry()
        return changed

    def _mark_due(self) -> None:
        self._timer_pending = False
        self._due = True
        self.fresh = None

    def _warn_error(self, message: str) -> None:
        if message not in self._warned_errors:
            self._warned_errors.add(message)
            logger.warning("mlflow_secrets_auth: %s", message)

    def _check_expiry(self) -> None:
        cred = self.credential
        if cred is None or cred.expires_at is None:
            return
        if self._wall() >= cred.expires_at and self._expiry_warned_for != cred.expires_at:
            self._expiry_warned_for = cred.expires_at
            logger.warning(
                "mlflow_secrets_auth: the credential from %s expired at %s and has not been "
                "rotated; requests will likely be refused. Check the MlflowAuthBinding's status "
                "(kubectl get mab) or the secret manager",
                self.source.describe(),
                rfc3339(cred.expires_at),
            )
