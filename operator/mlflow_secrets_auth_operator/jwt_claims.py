"""A JWT's claims, read without verifying the signature: the one place the operator decodes one.

Pure. What is read here only schedules refreshes (``exp``) or checks which audiences the
operator's own ServiceAccount token carries (``aud``); nothing here trusts a token.
"""
from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timezone
from typing import Mapping, Optional, Tuple

#: The latest ``exp`` taken as a time (year 5138); larger numbers are not seconds.
MAX_EXP = 1e11


def claims(token: str) -> Optional[Mapping[str, object]]:
    """The payload of a JWT-shaped token (three dot-separated parts), else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # bad base64, bad UTF-8 or bad JSON
        return None
    return payload if isinstance(payload, dict) else None


def jwt_exp(token: str) -> Optional[datetime]:
    """The ``exp`` claim as an aware UTC datetime; None if not a JWT or ``exp`` is no time."""
    exp = (claims(token) or {}).get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    if not math.isfinite(exp) or not 0 < exp < MAX_EXP:
        return None
    return datetime.fromtimestamp(exp, timezone.utc)


def audiences(token: str) -> Tuple[str, ...]:
    """The ``aud`` claim as a tuple (a single string or a list of strings); () if none."""
    aud = (claims(token) or {}).get("aud")
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list):
        return tuple(a for a in aud if isinstance(a, str))
    return ()
