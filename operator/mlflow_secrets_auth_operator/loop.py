"""The per-binding schedule: sync now, then at the refresh time (or sooner when asked).

``run`` is what the kopf daemon of each binding awaits; ``notice`` is called on every watch
event and wakes the loop when the spec changed or a sync was requested by annotation.
"""
from __future__ import annotations

import asyncio
import copy
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Optional

from kubernetes.client.rest import ApiException

from mlflow_secrets_auth_api.binding import ANNOTATION_SYNC, secret_name_for

from . import builders, exchange, nudge, reconcile
from .reconcile import Context

log = logging.getLogger(__name__)


@dataclass
class BindingState:
    """Per-binding memory of the loop (kopf keeps one memo per object)."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    started: bool = False
    failures: int = 0
    last_generation: Optional[int] = None
    last_request: Optional[str] = None
    last_reason: Optional[str] = None


class NamespaceLimiter:
    """At most ``limit`` syncs of one namespace run at once, so one tenant's slow secret manager
    holds at most its share of the worker pool; the others' syncs go on."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self._slots: dict = {}   # namespace -> [asyncio.Semaphore, users]

    async def run(self, namespace: str, executor: Executor, fn, *args):
        slot = self._slots.setdefault(namespace, [asyncio.Semaphore(self.limit), 0])
        slot[1] += 1
        try:
            async with slot[0]:
                return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        finally:
            slot[1] -= 1
            if slot[1] == 0:
                del self._slots[namespace]  # a namespace with nothing queued costs nothing


def state_of(memo) -> BindingState:
    state = memo.get("binding_state")
    if state is None:
        state = memo["binding_state"] = BindingState()
    return state


def _request_of(body: Mapping) -> Optional[str]:
    return ((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SYNC)


def notice(body: Mapping, memo) -> None:
    """Wake the binding's loop when its spec or its sync-requested annotation changed."""
    state = state_of(memo)
    if not state.started:
        return  # the loop syncs as soon as it starts anyway
    generation = (body.get("metadata") or {}).get("generation")
    if generation != state.last_generation or _request_of(body) != state.last_request:
        state.wake.set()


def initial_delay(body: Mapping, now: datetime) -> float:
    """Seconds to wait before the first sync: none, unless the status shows a fresh sync of this
    very generation and request (an operator restart or a new leader must not refetch everything)."""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if (not ready or ready.get("status") != "True"
            or status.get("observedGeneration") != meta.get("generation")
            or status.get("lastSyncRequest") != _request_of(body)):
        return 0.0
    next_time = builders.parse_time(status.get("nextRefreshTime"))
    if next_time is None:
        return 0.0
    return max(0.0, (next_time - now).total_seconds())


async def _sleep(state: BindingState, stopped, seconds: float) -> None:
    """Wait for the refresh time, a wake-up, or the daemon being stopped, whichever is first."""
    if seconds <= 0 or state.wake.is_set():
        return
    waits = [asyncio.ensure_future(state.wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


async def run(body: Mapping, memo, stopped, ctx: Context, executor: Executor,
              limiter: NamespaceLimiter) -> None:
    """Keep one binding's Secret fresh until the daemon is stopped; its syncs share
    ``executor`` with every binding, and ``limiter`` with those of its namespace."""
    state = state_of(memo)
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    loop = asyncio.get_running_loop()
    status = body.get("status") or {}
    state.last_reason = next((c.get("reason") for c in status.get("conditions") or []
                              if c.get("type") == "Ready"), None)
    state.last_generation, state.last_request = meta.get("generation"), _request_of(body)
    state.started = True
    delay = initial_delay(body, ctx.clock())
    if delay:
        log.info("binding %s/%s is fresh; next refresh in %.0fs", namespace, name, delay)
    try:
        while not stopped:
            await _sleep(state, stopped, delay)
            if stopped:
                return
            state.wake.clear()
            snapshot = copy.deepcopy({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec",
                                                          "status") if k in body})
            state.last_generation = snapshot["metadata"].get("generation")
            state.last_request = _request_of(snapshot)
            outcome = await limiter.run(namespace, executor, reconcile.sync, snapshot, ctx)
            if outcome.written and ctx.nudger is not None:  # pods see it now, not in a minute
                ctx.nudger.request(namespace, name, outcome.secret_resource_version)
            try:
                delay = await loop.run_in_executor(executor, settle, snapshot, outcome, state, ctx)
            except ApiException as exc:
                if exc.status == 404:
                    return  # the binding is gone; its Secret goes with it (ownerReference)
                log.warning("could not update the status of %s/%s: HTTP %s", namespace, name,
                            exc.status)
                delay = ctx.settings.backoff_base
    finally:
        ctx.metrics.forget(namespace, name)


def settle(body: Mapping, outcome: builders.Outcome, state: BindingState, ctx: Context) -> float:
    """Record an attempt: status, Event on transitions, metrics, log. Returns the next delay."""
    now = ctx.clock()
    meta, spec = body["metadata"], body.get("spec") or {}
    namespace, name = meta["namespace"], meta["name"]
    previous = body.get("status") or {}
    interval = _interval_seconds(spec)
    if outcome.ok:
        state.failures = 0
        next_time = builders.next_refresh(now, interval, outcome.expires_at,
                                          jitter=ctx.settings.refresh_jitter, rng=ctx.rng)
        if spec.get("exchange"):  # a minted token: ~2/3 of its lifetime, jittered (exchange.py),
            # and early enough that its successor reaches the pods before it expires (nudge.py)
            next_time = exchange.next_token_refresh(now, builders.next_refresh(
                now, interval, None, jitter=ctx.settings.refresh_jitter, rng=ctx.rng),
                outcome.expires_at, rng=ctx.rng, min_lead=nudge.token_lead(
                    ctx.nudger is not None, now, outcome.expires_at))
    else:
        state.failures += 1
        next_time = builders.retry_after_failure(
            now, state.failures, base=ctx.settings.backoff_base, cap=ctx.settings.backoff_cap,
            interval_seconds=interval, expires_at=builders.parse_time(previous.get("expiresAt")),
            rng=ctx.rng)
    secret_exists = outcome.ok or bool(previous.get("secretName"))
    status = builders.build_status(
        previous, outcome, binding_name=name, provider=reconcile._provider_kind(body),
        generation=meta.get("generation"), now=now, next_refresh=next_time,
        sync_request=_request_of(body), secret_exists=secret_exists)
    if spec.get("exchange"):  # an outage keeps a valid minted token Ready (exchange.py)
        status = exchange.hold_ready_while_token_valid(status, previous, outcome, now)
    ctx.kube.patch_status(namespace, name, status)
    _announce(meta, outcome, status, state, ctx, now)
    ctx.metrics.ready.labels(namespace, name).set(
        1 if status["conditions"][0]["status"] == "True" else 0)
    expires = builders.parse_time(status.get("expiresAt") or previous.get("expiresAt"))
    if expires is not None:
        # live, not as of this sync: it keeps falling if refreshes stop (alert on it)
        ctx.metrics.seconds_to_expiry.labels(namespace, name).set_function(
            lambda: (expires - ctx.clock()).total_seconds())
    return max((next_time - now).total_seconds(), 0.0)


def _announce(meta, outcome: builders.Outcome, status, state: BindingState, ctx: Context,
              now: datetime) -> None:
    namespace, name = meta["namespace"], meta["name"]
    message = status["conditions"][0]["message"]
    if outcome.ok:
        if state.last_reason != builders.SYNCED:
            ctx.kube.post_event(meta, "Normal", builders.SYNCED, message, now)
        elif outcome.written:
            ctx.kube.post_event(meta, "Normal", "Rotated", f"Secret {secret_name_for(name)} now "
                                f"holds a new credential", now)
        log.info("synced %s/%s", namespace, name,
                 extra={"binding": name, "namespace": namespace, "written": outcome.written,
                        "version": outcome.version, "expires_at": status.get("expiresAt")})
    else:
        if state.last_reason != outcome.reason:
            ctx.kube.post_event(meta, "Warning", outcome.reason, message, now)
        log.warning("sync of %s/%s failed: %s: %s", namespace, name, outcome.reason, message,
                    extra={"binding": name, "namespace": namespace, "reason": outcome.reason,
                           "failures": state.failures})
    state.last_reason = outcome.reason


def _interval_seconds(spec: Mapping) -> float:
    from mlflow_secrets_auth_api.binding import MIN_REFRESH_SECONDS, parse_duration

    try:
        return float(max(parse_duration((spec.get("refresh") or {}).get("interval") or "5m"),
                         MIN_REFRESH_SECONDS))
    except ValueError:
        return 300.0
