"""Pure builders: the owned Secret and the refresh schedule (the status: status.py).

Nothing here talks to the API; ``kube`` applies what these return.
"""
from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Dict, Mapping, Optional

from mlflow_secrets_auth.rfc3339 import parse_optional as parse_time
from mlflow_secrets_auth.rfc3339 import rfc3339
from mlflow_secrets_auth_api.binding import (GROUP, KIND, LABEL_BINDING, LABEL_MANAGED_BY,
                                             MANAGED_BY, SECRET_TYPE, VERSION, secret_name_for)


READY = "Ready"
SYNCED = "Synced"


@dataclass(frozen=True)
class Outcome:
    """What one sync attempt came to. ``message`` never contains a secret value."""

    ok: bool
    reason: str
    message: str
    transient: bool = True
    expires_at: Optional[datetime] = None
    version: Optional[str] = None
    written: bool = False          # the Secret was created or rewritten
    secret_resource_version: Optional[str] = None  # of the written Secret (nudges pods)

    @classmethod
    def failure(cls, reason: str, message: str, transient: bool = True) -> "Outcome":
        return cls(ok=False, reason=reason, message=message, transient=transient)


# --- the Secret ---------------------------------------------------------------------------------
def secret_labels(binding_name: str) -> Dict[str, str]:
    return {LABEL_BINDING: binding_name, LABEL_MANAGED_BY: MANAGED_BY}


def owner_reference(binding_meta: Mapping) -> Dict[str, object]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": binding_meta["name"],
            "uid": binding_meta["uid"], "controller": True, "blockOwnerDeletion": True}


def encode_data(fields: Mapping[str, str]) -> Dict[str, str]:
    return {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in sorted(fields.items())}


def build_secret(binding_meta: Mapping, fields: Mapping[str, str]) -> Dict[str, object]:
    """The one Secret a binding owns: pod-contract keys, labels, ownerReference to the binding."""
    name = binding_meta["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": secret_name_for(name),
            "namespace": binding_meta["namespace"],
            "labels": secret_labels(name),
            "ownerReferences": [owner_reference(binding_meta)],
        },
        "data": encode_data(fields),
    }


def secret_needs_write(existing: Optional[Mapping], desired: Mapping) -> bool:
    """True when the Secret is missing or differs in data, type, labels or owner."""
    if existing is None:
        return True
    meta, want = existing.get("metadata") or {}, desired["metadata"]
    labels = meta.get("labels") or {}
    owners = [(o.get("uid"), o.get("controller")) for o in meta.get("ownerReferences") or []]
    return ((existing.get("data") or {}) != desired["data"]
            or existing.get("type") != desired["type"]
            or any(labels.get(k) != v for k, v in want["labels"].items())
            or (want["ownerReferences"][0]["uid"], True) not in owners)


# --- schedule -----------------------------------------------------------------------------------
Random = Callable[[], float]


def next_refresh(now: datetime, interval_seconds: float, expires_at: Optional[datetime], *,
                 jitter: float, rng: Random) -> datetime:
    """The next fetch: up to ``jitter`` of the interval early (never late), and after at most two
    thirds of the time a credential with a known expiry has left."""
    delay = interval_seconds * (1.0 - min(max(jitter, 0.0), 0.5) * rng())
    if expires_at is not None:
        left = (expires_at - now).total_seconds()
        delay = min(delay, max(left * 2 / 3, 1.0))
    return now + timedelta(seconds=max(delay, 1.0))


def retry_after_failure(now: datetime, failures: int, *, base: float, cap: float,
                        interval_seconds: float, expires_at: Optional[datetime],
                        rng: Random) -> datetime:
    """Exponential backoff with jitter after ``failures`` (1, 2, ...) failed syncs, capped at
    ``cap`` and at the refresh interval, and early enough for several tries before the last good
    credential expires."""
    ceiling = min(cap, max(interval_seconds, base))
    delay = min(ceiling, base * (2 ** max(failures - 1, 0))) * (0.5 + 0.5 * rng())
    if expires_at is not None and expires_at > now:
        delay = min(delay, max((expires_at - now).total_seconds() / 4, 1.0))
    return now + timedelta(seconds=max(delay, 0.5))


def refresh_time(issued_at: datetime, expires_at: Optional[datetime], *,
                 rng: Random = random.random, fraction: float = 2 / 3, jitter: float = 0.05,
                 min_lead: timedelta = timedelta(seconds=5)) -> Optional[datetime]:
    """When to mint the next token: ``issued_at`` + about two thirds of the lifetime.

    The fraction is drawn uniformly from ``fraction +- jitter`` (so many bindings on one issuer do
    not refresh in lockstep), and the result is kept at least ``min_lead`` before the expiry.
    None when the expiry is unknown (the binding's refresh interval decides then).
    """
    if expires_at is None:
        return None
    lifetime = (expires_at - issued_at).total_seconds()
    if lifetime <= 0:
        return issued_at
    share = min(max(fraction + jitter * (2 * rng() - 1), 0.0), 1.0)
    at = issued_at + timedelta(seconds=lifetime * share)
    latest = expires_at - min_lead
    if at > latest:
        at = max(issued_at, latest)
    return at
