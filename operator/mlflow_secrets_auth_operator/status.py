"""The status after a sync attempt, and when the next attempt is due: ONE pure function.

:func:`next_status` takes the binding's previous status (the api model, as read), what the sync
came to (:class:`builders.Outcome`), the time and the binding's :class:`Policy`, and returns the
status to store and the delay until the next attempt. The loop writes exactly what it returns
(:func:`for_storage`), and nothing when :func:`changed` says the new status only moved its
clocks (operator/README.md, "What a refresh writes"). Modelled on kopf's ``progression.py``: immutable typed state in, immutable typed state out.

Nothing here talks to the API, reads the clock or draws random numbers of its own (``Policy.rng``
is passed in; tests pass a constant).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Dict, Optional, Tuple

from mlflow_secrets_auth.rfc3339 import parse_optional as parse_time
from mlflow_secrets_auth.rfc3339 import rfc3339
from mlflow_secrets_auth_api.binding import (MIN_REFRESH_SECONDS, BindingStatus, Condition,
                                             parse_duration, secret_name_for)

from .builders import (READY, SYNCED, Outcome, next_refresh, refresh_time,
                       retry_after_failure)

HOLDING = "TokenRefreshRetrying"   # Ready while a valid minted token outlives an outage
INVALID_INTERVAL = "InvalidSpec"
# what may move without the status being written (an unchanged refresh writes nothing)
CLOCK_FIELDS = ("last_sync_time", "next_refresh_time")

Random = Callable[[], float]
TokenLead = Callable[[datetime, Optional[datetime]], timedelta]


@dataclass(frozen=True)
class TokenPolicy:
    """A binding with an OAuth2 exchange: mint the next token at about two thirds of the current
    one's life (jittered by ``fraction_jitter``) and at least ``lead(now, expires_at)`` before it
    expires (nudge.token_lead: the successor must reach the pods in time); while a valid token is
    in the Secret, a transient failure keeps the binding Ready (reason ``TokenRefreshRetrying``)."""

    lead: TokenLead
    fraction: float = 2 / 3
    fraction_jitter: float = 0.05


@dataclass(frozen=True)
class Policy:
    """What the schedule and the status of one binding depend on, besides the outcome."""

    binding_name: str
    provider: Optional[str]
    generation: Optional[int]
    sync_request: Optional[str]
    interval: Optional[float]          # seconds; None: spec.refresh.interval does not parse
    failures: int = 0                  # consecutive failed attempts before this one
    jitter: float = 0.1
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    token: Optional[TokenPolicy] = None
    rng: Random = lambda: 0.5  # noqa: E731 - the loop passes random.random


def interval_seconds(text: Optional[str]) -> Optional[float]:
    """``spec.refresh.interval`` in seconds (default 5m), or None when it does not parse: the
    binding is then invalid and its status says so (no silent fallback)."""
    try:
        return float(max(parse_duration(text or "5m"), MIN_REFRESH_SECONDS))
    except ValueError:
        return None


def next_status(previous: BindingStatus, outcome: Outcome, now: datetime,
                policy: Policy) -> Tuple[BindingStatus, float]:
    """The status after ``outcome`` and the seconds until the next attempt."""
    if policy.interval is None and outcome.ok:  # cannot happen after parse_binding; be explicit
        outcome = Outcome.failure(INVALID_INTERVAL, "spec.refresh.interval: not a duration like "
                                  "30s, 5m or 1h30m", transient=False)
    secret_name = secret_name_for(policy.binding_name)
    old_ready = previous.condition(READY)
    if outcome.ok:
        at = _next_ok(now, outcome.expires_at, policy)
        message = f"credential from {policy.provider} delivered to Secret {secret_name}"
        if outcome.expires_at:
            message += f"; it expires at {rfc3339(outcome.expires_at)}"
        ready = _condition(old_ready, "True", SYNCED, message, now, policy.generation)
        fields = dict(last_sync_time=rfc3339(now), secret_name=secret_name,
                      expires_at=rfc3339(outcome.expires_at) if outcome.expires_at else None,
                      secret_version=outcome.version)
    else:
        expires = parse_time(previous.expires_at)
        at = retry_after_failure(now, policy.failures + 1, base=policy.backoff_base,
                                 cap=policy.backoff_cap,
                                 interval_seconds=policy.interval or policy.backoff_cap,
                                 expires_at=expires, rng=policy.rng)
        ready = _failed_ready(previous, old_ready, outcome, now, policy, expires, secret_name)
        fields = dict(last_sync_time=previous.last_sync_time,
                      secret_name=secret_name if previous.secret_name else None,
                      expires_at=previous.expires_at, secret_version=previous.secret_version)
    others = [c for c in previous.conditions if c.type != READY]
    status = BindingStatus(conditions=[ready, *others], observed_generation=policy.generation,
                           provider=policy.provider, next_refresh_time=rfc3339(at),
                           last_sync_request=policy.sync_request, **fields)
    return status, max((at - now).total_seconds(), 0.0)


def _next_ok(now: datetime, expires_at: Optional[datetime], policy: Policy) -> datetime:
    token = policy.token
    if token is None:
        return next_refresh(now, policy.interval, expires_at, jitter=policy.jitter, rng=policy.rng)
    # a minted token: ~2/3 of its lifetime, jittered, early enough for its successor to reach
    # the pods (nudge.token_lead), or the binding's interval, whichever comes first
    by_interval = next_refresh(now, policy.interval, None, jitter=policy.jitter, rng=policy.rng)
    at = refresh_time(now, expires_at, rng=policy.rng, fraction=token.fraction,
                      jitter=token.fraction_jitter, min_lead=token.lead(now, expires_at))
    return by_interval if at is None else min(at, by_interval)


def _failed_ready(previous: BindingStatus, old_ready: Optional[Condition], outcome: Outcome,
                  now: datetime, policy: Policy, expires: Optional[datetime],
                  secret_name: str) -> Condition:
    if (policy.token is not None and outcome.transient and old_ready is not None
            and old_ready.status == "True" and expires is not None and expires > now):
        # an outage keeps a valid minted token Ready; the operator keeps retrying
        return _condition(old_ready, "True", HOLDING, (
            f"refreshing the access token failed ({outcome.reason}: {outcome.message}); the "
            f"current token stays in use until it expires at {rfc3339(expires)}, retrying"),
            now, policy.generation)
    message = outcome.message
    if previous.secret_name and previous.last_sync_time:
        if expires is not None and expires <= now:
            message += f"; the last credential in Secret {secret_name} expired at {rfc3339(expires)}"
        else:
            message += f"; Secret {secret_name} keeps the credential from {previous.last_sync_time}"
    return _condition(old_ready, "False", outcome.reason, message, now, policy.generation)


def _condition(old: Optional[Condition], status: str, reason: str, message: str, now: datetime,
               generation: Optional[int]) -> Condition:
    """A Ready condition; lastTransitionTime moves only when the status flips."""
    since = old.last_transition_time if (old is not None and old.status == status
                                         and old.last_transition_time) else rfc3339(now)
    return Condition(type=READY, status=status, reason=reason, message=message[:1024],
                     last_transition_time=since, observed_generation=generation)


def changed(previous: BindingStatus, new: BindingStatus) -> bool:
    """True when ``new`` differs from ``previous`` in more than its clocks (``CLOCK_FIELDS``):
    an unchanged refresh writes no status (operator/README.md, "What a refresh writes")."""
    return (previous.model_dump(exclude=set(CLOCK_FIELDS))
            != new.model_dump(exclude=set(CLOCK_FIELDS)))


def for_storage(status: BindingStatus) -> Dict[str, object]:
    """The merge patch of ``.status``: camelCase, with None for fields to remove."""
    return status.model_dump(by_alias=True, mode="json")


def from_storage(raw: Optional[dict]) -> BindingStatus:
    """The stored status; a status this version cannot read counts as none."""
    try:
        return BindingStatus.model_validate(raw or {})
    except ValueError:
        return BindingStatus()


def resume_delay(status: BindingStatus, generation: Optional[int], sync_request: Optional[str],
                 interval: Optional[float], now: datetime, rng: Random) -> float:
    """Seconds until the first sync after a (re)start: none unless ``status`` shows a Ready sync
    of this very generation and request. Then the stored nextRefreshTime, or, when that has
    passed (unchanged refreshes write no status), a point spread over one interval, so that a
    restart costs the steady refresh rate, not a sync of every binding at once."""
    ready = status.condition(READY)
    if (ready is None or ready.status != "True" or status.observed_generation != generation
            or status.last_sync_request != sync_request or interval is None):
        return 0.0
    if status.expires_at is not None:
        expires = parse_time(status.expires_at)
        if expires is None or expires <= now:
            return 0.0
    next_time = parse_time(status.next_refresh_time)
    if next_time is None:
        return 0.0
    left = (next_time - now).total_seconds()
    if left > 0:
        return left
    # overdue: the status was not rewritten by refreshes that changed nothing
    return interval * rng() if status.expires_at is None else 0.0
