"""Where the credential comes from: a mounted directory (in a pod) or a secret manager (direct).

A source has ``poll(force)`` returning a new ``Credential``, or ``UNCHANGED`` when nothing moved
since the last poll; it raises ``CredentialError`` with a message that says what to fix. The auth
object calls ``poll`` at most every ``check_interval`` seconds, never per request.
"""
from __future__ import annotations

from typing import Callable, Union

from .credentials import Credential, fingerprint, read_directory

UNCHANGED = object()

PollResult = Union[Credential, object]


class ErrorSource:
    """A configuration that cannot work: every poll reports the same actionable error."""

    kind = "error"

    def __init__(self, error: Exception, description: str) -> None:
        self.error = error
        self._description = description

    def poll(self, force: bool = False) -> PollResult:
        raise self.error

    def describe(self) -> str:
        return self._description


class FileSource:
    """The pod contract's directory; notices kubelet's ``..data`` swap or changed files."""

    kind = "file"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fingerprint: object = UNCHANGED  # never equal to a real fingerprint

    def poll(self, force: bool = False) -> PollResult:
        fp = fingerprint(self.directory)
        if not force and fp == self._fingerprint:
            return UNCHANGED
        cred = read_directory(self.directory)
        self._fingerprint = fp
        return cred

    def describe(self) -> str:
        return "files in %s" % self.directory


class FetchSource:
    """A secret manager read through ``fetch()`` (direct mode): TTL cache, retries with jitter.

    ``fetch`` returns a ``Credential``. It is fetched again after ``ttl`` seconds, or as soon as
    the credential's own ``expires_at`` has passed if that comes first. Forced polls (after a
    401/403) are rate-limited to one per ``min_forced_interval`` seconds so a real permission
    error cannot hammer the manager.
    """

    kind = "direct"

    def __init__(
        self,
        fetch: Callable[[], Credential],
        ttl: float,
        description: str,
        clock: Callable[[], float],
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = None,  # type: ignore[assignment]
        rand: Callable[[], float] = None,  # type: ignore[assignment]
        min_forced_interval: float = 5.0,
        wall_clock: Callable[[], float] = None,  # type: ignore[assignment]
    ) -> None:
        import random
        import time

        self._fetch = fetch
        self.ttl = ttl
        self._description = description
        self._clock = clock
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep or time.sleep
        self._rand = rand or random.random
        self._min_forced = min_forced_interval
        self._wall = wall_clock or time.time
        self._expires_at = None  # type: ignore[var-annotated]
        self._fetched_at = None  # type: ignore[var-annotated]
        self.fetch_count = 0

    def poll(self, force: bool = False) -> PollResult:
        now = self._clock()
        if self._fetched_at is not None:
            age = now - self._fetched_at
            if force and age < self._min_forced:
                return UNCHANGED
            expired = self._expires_at is not None and self._wall() >= self._expires_at
            if not force and age < self.ttl and not expired:
                return UNCHANGED
        cred = self._fetch_with_retries()
        self._fetched_at = self._clock()
        self._expires_at = cred.expires_at
        return cred

    def _fetch_with_retries(self) -> Credential:
        from .credentials import CredentialError

        attempt = 0
        while True:
            try:
                self.fetch_count += 1
                return self._fetch()
            except CredentialError:
                raise  # a configuration or content problem: retrying cannot help
            except Exception as exc:
                if attempt >= self._retries:
                    if hasattr(exc, "transient"):  # a ProviderError: its message is safe to show
                        raise CredentialError("%s: %s (after %d attempts)" % (
                            self._description, exc, attempt + 1))
                    raise
                # exponential backoff with full jitter
                delay = min(self._max_backoff, self._backoff * (2 ** attempt))
                self._sleep(delay * (0.5 + self._rand() / 2))
                attempt += 1

    def describe(self) -> str:
        return self._description
