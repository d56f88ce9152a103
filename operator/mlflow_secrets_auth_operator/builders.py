"""Pure builders: the owned Secret, the binding's status and the refresh schedule.

Nothing here talks to the API; ``kube`` applies what these return.
"""
from __future__ import annotations

import base64
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


# --- status -------------------------------------------------------------------------------------
def ready_condition(previous: Optional[Mapping], status: str, reason: str, message: str,
                    now: datetime, generation: Optional[int]) -> Dict[str, object]:
    """A Ready condition; lastTransitionTime moves only when the status flips."""
    since = rfc3339(now)
    if previous and previous.get("status") == status and previous.get("lastTransitionTime"):
        since = previous["lastTransitionTime"]
    return {"type": READY, "status": status, "reason": reason, "message": message[:1024],
            "lastTransitionTime": since, "observedGeneration": generation}


def build_status(previous: Mapping, outcome: Outcome, *, binding_name: str, provider: Optional[str],
                 generation: Optional[int], now: datetime, next_refresh: Optional[datetime],
                 sync_request: Optional[str], secret_exists: bool) -> Dict[str, object]:
    """The status after a sync attempt. Fields set to None are removed by the merge patch."""
    previous = previous or {}
    conditions = [c for c in previous.get("conditions") or [] if c.get("type") != READY]
    old_ready = next((c for c in previous.get("conditions") or [] if c.get("type") == READY), None)
    secret_name = secret_name_for(binding_name)
    status: Dict[str, object] = {
        "observedGeneration": generation,
        "provider": provider,
        "nextRefreshTime": rfc3339(next_refresh) if next_refresh else None,
        "lastSyncRequest": sync_request,
        "secretName": secret_name if secret_exists else None,
    }
    if outcome.ok:
        status.update(lastSyncTime=rfc3339(now),
                      expiresAt=rfc3339(outcome.expires_at) if outcome.expires_at else None,
                      secretVersion=outcome.version)
        message = f"credential from {provider} delivered to Secret {secret_name}"
        if outcome.expires_at:
            message += f"; it expires at {rfc3339(outcome.expires_at)}"
        ready = ready_condition(old_ready, "True", SYNCED, message, now, generation)
    else:
        message = outcome.message
        if secret_exists and previous.get("lastSyncTime"):
            expires = parse_time(previous.get("expiresAt"))
            if expires is not None and expires <= now:
                message += f"; the last credential in Secret {secret_name} expired at {rfc3339(expires)}"
            else:
                message += f"; Secret {secret_name} keeps the credential from {previous['lastSyncTime']}"
        ready = ready_condition(old_ready, "False", outcome.reason, message, now, generation)
    status["conditions"] = [ready] + conditions
    return status


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
