"""Logging: JSON (or text) lines with every known secret value redacted.

The :class:`Redactor` learns each secret value the operator handles (fetched content, mapped
credential fields, auth material read from Secrets, ServiceAccount tokens) and a filter on the
root handler replaces them in every record, including kopf's and the client libraries'.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from typing import Dict, Iterable, Optional, Set

from mlflow_secrets_auth import rfc3339

REDACTED = "<redacted>"
MIN_SECRET_LENGTH = 4   # shorter values are not worth redacting (and would mangle every line)


class Redactor:
    """A bounded set of secret strings to scrub from log output (thread-safe).

    Secrets are indexed by their first ``MIN_SECRET_LENGTH`` characters, so redacting a line
    costs one dictionary lookup per character, however many secrets are known (thousands of
    bindings must not make every log line slower).
    """

    def __init__(self, capacity: int = 100_000):
        self._values: "OrderedDict[str, None]" = OrderedDict()
        self._by_prefix: Dict[str, Set[str]] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def add(self, *values: Optional[object]) -> None:
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
                        if text not in self._values:
                            self._by_prefix.setdefault(text[:MIN_SECRET_LENGTH], set()).add(text)
                        self._values[text] = None
                        self._values.move_to_end(text)
            while len(self._values) > self._capacity:
                old, _ = self._values.popitem(last=False)
                bucket = self._by_prefix.get(old[:MIN_SECRET_LENGTH])
                if bucket is not None:
                    bucket.discard(old)
                    if not bucket:
                        del self._by_prefix[old[:MIN_SECRET_LENGTH]]

    def add_all(self, values: Iterable[Optional[object]]) -> None:
        self.add(*values)

    def __len__(self) -> int:
        return len(self._values)

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


def configure(log_format: str, level: str, redactor: Redactor, stream=None) -> logging.Handler:
    """Install one root handler (JSON or text) behind the redacting filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

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
    for noisy in ("urllib3", "azure", "botocore", "kubernetes.client.rest"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # kopf logs every handler run at INFO ("Handler 'observe' succeeded."): one line per watch
    # event per binding. Keep its warnings; our own loggers say what happened to each binding.
    if root.level >= logging.INFO:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    return handler
