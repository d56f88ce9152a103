"""Secret redaction for the operator's and the webhook's logs: one marker, one registry, one filter.

Values are registered where they enter a process (the operator's ports: Kubernetes Secret reads
and writes, TokenRequests, secret-manager fetches and logins, OAuth2 token minting; see
``docs/architecture.md``), never by the code that merely passes them along. A filter on the
root log handler then replaces every registered value in every record, kopf's and the client
libraries' included.

The registry is bounded: at most ``capacity`` values (least recently registered dropped first),
and each value remembers which *owners* (bindings) registered it, so :meth:`Redactor.forget`
drops what only a deleted binding used. A port registers under the owner of the current context
(:func:`owner`), so the code between the sync and the port passes nothing along.

Standard library only (``python-json-logger`` is imported by :func:`configure` alone); imports
nothing else of this project.
"""
from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections import OrderedDict
from typing import Dict, Hashable, Iterable, Optional, Set

from mlflow_secrets_auth import rfc3339  # the one RFC 3339 format (stdlib only)

#: What replaces a secret, in log lines and in messages built from a server's answer.
REDACTED = "<redacted>"
#: Shorter values are not worth redacting (and would mangle every line).
MIN_SECRET_LENGTH = 4

_NO_OWNER = None
_OWNER: "contextvars.ContextVar[Optional[Hashable]]" = contextvars.ContextVar(
    "mlflow_secrets_auth_redaction_owner", default=_NO_OWNER)


class owner:  # noqa: N801 - used like a function: ``with owner(key):``
    """Values registered inside this block (in this thread or task) belong to ``key``, e.g. a
    binding's ``(namespace, name)``; :meth:`Redactor.forget` with the same key drops them.

    A plain class, not ``contextlib.contextmanager``: an exception leaving the block must not be
    kept alive in a reference cycle through a generator frame (it may hold a provider's
    connection, which then stays open until the garbage collector runs)."""

    __slots__ = ("_key", "_token")

    def __init__(self, key: Optional[Hashable]):
        self._key = key

    def __enter__(self) -> None:
        self._token = _OWNER.set(self._key)

    def __exit__(self, *exc) -> None:
        _OWNER.reset(self._token)


def current_owner() -> Optional[Hashable]:
    return _OWNER.get()


def scrub(text: str, *values: Optional[str]) -> str:
    """``text`` with each of ``values`` (at least ``MIN_SECRET_LENGTH`` long) replaced by the
    marker: for a message built from a server's answer before any registry is at hand."""
    for value in sorted((v for v in values if v and len(v) >= MIN_SECRET_LENGTH), key=len,
                        reverse=True):
        text = text.replace(value, REDACTED)
    return text


class Redactor:
    """A bounded registry of secret strings to scrub from log output (thread-safe).

    Secrets are indexed by their first ``MIN_SECRET_LENGTH`` characters, so redacting a line
    costs one dictionary lookup per character, however many secrets are known (thousands of
    bindings must not make every log line slower).
    """

    def __init__(self, capacity: int = 100_000):
        self._values: "OrderedDict[str, Set[Hashable]]" = OrderedDict()  # value -> its owners
        self._owned: Dict[Hashable, Set[str]] = {}                        # owner -> its values
        self._by_prefix: Dict[str, Set[str]] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    # -- registering -------------------------------------------------------------------------
    def add(self, *values: Optional[object]) -> None:
        """Register ``values`` (str or UTF-8 bytes; others and short ones are ignored) for the
        current :func:`owner` (none outside an owner block: kept until evicted)."""
        key = _OWNER.get()
        with self._lock:
            for value in values:
                if isinstance(value, bytes):
                    try:
                        value = value.decode("utf-8")
                    except UnicodeDecodeError:
                        continue
                if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
                    continue
                for text in {value, value.strip()}:
                    if len(text) >= MIN_SECRET_LENGTH:
                        self._put(text, key)
            while len(self._values) > self._capacity:
                self._drop(next(iter(self._values)))

    def add_all(self, values: Iterable[Optional[object]]) -> None:
        self.add(*values)

    def forget(self, key: Hashable) -> int:
        """Drop ``key``'s claim on its values (call it when a binding is deleted); a value no
        other owner registered is no longer redacted. Returns how many values were dropped."""
        dropped = 0
        with self._lock:
            for text in self._owned.pop(key, ()):
                owners = self._values.get(text)
                if owners is None:
                    continue
                owners.discard(key)
                if not owners:
                    self._drop(text)
                    dropped += 1
        return dropped

    def _put(self, text: str, key: Optional[Hashable]) -> None:
        owners = self._values.get(text)
        if owners is None:
            owners = self._values[text] = set()
            self._by_prefix.setdefault(text[:MIN_SECRET_LENGTH], set()).add(text)
        else:
            self._values.move_to_end(text)
        owners.add(key)
        if key is not _NO_OWNER:
            self._owned.setdefault(key, set()).add(text)

    def _drop(self, text: str) -> None:
        for key in self._values.pop(text, ()):
            if key is not _NO_OWNER:
                values = self._owned.get(key)
                if values is not None:
                    values.discard(text)
                    if not values:
                        del self._owned[key]
        bucket = self._by_prefix.get(text[:MIN_SECRET_LENGTH])
        if bucket is not None:
            bucket.discard(text)
            if not bucket:
                del self._by_prefix[text[:MIN_SECRET_LENGTH]]

    def __len__(self) -> int:
        return len(self._values)

    def __bool__(self) -> bool:
        # an empty registry is still *the* registry: ``memo.get("redactor") or Redactor()`` must
        # keep the one the log filter holds (with only ``__len__``, an empty one was falsy)
        return True

    def owners(self) -> int:
        """How many owners hold values (bounded by the live bindings)."""
        return len(self._owned)

    # -- redacting ---------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        if not text or len(text) < MIN_SECRET_LENGTH:
            return text
        with self._lock:
            index = self._by_prefix
            out, i, start, n = [], 0, 0, len(text)
            while i <= n - MIN_SECRET_LENGTH:
                bucket = index.get(text[i:i + MIN_SECRET_LENGTH])
                match = max((v for v in bucket if text.startswith(v, i)), key=len,
                            default=None) if bucket else None
                if match is None:
                    i += 1
                    continue
                out.append(text[start:i])
                out.append(REDACTED)
                i += len(match)
                start = i
        if not out:
            return text
        out.append(text[start:])
        return "".join(out)


class RedactingFilter(logging.Filter):
    """Renders each record's message, then scrubs it and every string ``extra`` field."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
    _DROPPED = {"settings", "k8s_skip"}   # kopf's per-object logger extras: not log content

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not stop logging
            message = str(record.msg)
        record.msg, record.args = self.redactor.redact(message), None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, self.redactor.redact(text)
        for key, value in list(vars(record).items()):
            if key in self._STANDARD:
                continue
            if key in self._DROPPED:
                delattr(record, key)
            else:
                setattr(record, key, _scrub(value, self.redactor.redact))
        return True


def _scrub(value, redact, depth: int = 0):
    """A JSON-safe copy of ``value`` with every string redacted; anything else becomes text."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth < 4 and isinstance(value, (list, tuple)):
        return [_scrub(v, redact, depth + 1) for v in value]
    if depth < 4 and isinstance(value, dict):
        return {str(k): _scrub(v, redact, depth + 1) for k, v in value.items()}
    return redact(str(value))


def configure(log_format: str, level: str, redactor: Redactor, stream=None,
              quiet: Iterable[str] = ()) -> logging.Handler:
    """Install one root handler (``json`` or ``text`` lines, UTC times) behind the redacting
    filter; ``quiet`` loggers log warnings and worse only."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        try:  # python-json-logger >= 3
            from pythonjsonlogger.json import JsonFormatter
        except ImportError:  # pragma: no cover - python-json-logger 2.x
            from pythonjsonlogger.jsonlogger import JsonFormatter

        formatter: logging.Formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt=rfc3339.FORMAT)
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                      datefmt=rfc3339.FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler


__all__ = ["REDACTED", "MIN_SECRET_LENGTH", "Redactor", "RedactingFilter", "configure", "owner",
           "current_owner", "scrub"]
