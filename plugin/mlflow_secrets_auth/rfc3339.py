"""RFC 3339 timestamps: the one writer and the one reader for every part of the project.

Standard library only (the in-pod plugin reads ``expires-at``; the operator writes it and the
binding's status times; the CLI prints them). Written as UTC, whole seconds, ``Z``
(``2030-01-01T00:00:00Z``); read with ``Z`` or an offset and any fraction length.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Optional, Union

#: ``time.strftime`` / ``logging.Formatter.datefmt`` format of what :func:`rfc3339` writes (UTC).
FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))$"
)


def rfc3339(when: Union[datetime, float]) -> str:
    """``when`` (an aware datetime, a naive one taken as UTC, or POSIX seconds) as UTC text."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, timezone.utc)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime(FORMAT)


def parse_datetime(text: str) -> datetime:
    """RFC 3339 text to an aware datetime; ValueError says what a valid one looks like."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError("not an RFC 3339 timestamp with a zone (e.g. 2030-01-01T00:00:00Z)")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = m.group(7)
    micro = int((fraction + "000000")[:6]) if fraction else 0
    if m.group(8):
        tz = timezone.utc
    else:
        delta = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = timezone(delta if m.group(9) == "+" else -delta)
    second = min(second, 59)  # a leap second is read as the second before it
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)


def parse_rfc3339(text: str) -> float:
    """RFC 3339 text to POSIX seconds (``Z`` or an offset required; any fraction length)."""
    return parse_datetime(text).timestamp()


def parse_optional(text: object) -> Optional[datetime]:
    """A status field's time: None when absent or not RFC 3339 (status is read, never trusted)."""
    if not text:
        return None
    try:
        return parse_datetime(str(text))
    except ValueError:
        return None
