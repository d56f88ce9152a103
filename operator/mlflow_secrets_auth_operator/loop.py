"""One scheduler for every binding: a heap of due times feeding the bounded worker pool.

kopf watches the bindings and hands each watch event to :meth:`Scheduler.observe` (handlers.py);
the scheduler keeps a few small fields per binding (:class:`Slot`), wakes on a spec change, a
sync request (annotation) or the clock, and runs each sync in the shared executor under the
namespace's share (:class:`NamespaceLimiter`). A binding is never synced twice at once: an event
that arrives during its sync queues one more sync after it. A DELETED event drops the binding's
slot and its metrics; its Secret is garbage-collected through its ownerReference.

After a sync, :func:`settle` writes what ``status.next_status`` returns, and nothing when the
status only moved its clocks (operator/README.md, "What a refresh writes").

With peering, only the active replica syncs: :class:`PeeringGate` follows kopf's pause and
resume, and a paused scheduler drops its slots (kopf lists every binding again on resume, so
the schedule resumes from the status the other replica wrote).
"""
from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import json
import logging
import math
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from kubernetes.client.rest import ApiException

from mlflow_secrets_auth_api.binding import ANNOTATION_SYNC, secret_name_for

from . import builders, nudge, reconcile
from .reconcile import Context
from .status import (Policy, TokenPolicy, changed, for_storage, from_storage, interval_seconds,
                     next_status, resume_delay)

log = logging.getLogger(__name__)
Key = Tuple[str, str]


@dataclass(slots=True)
class Slot:
    """What the scheduler keeps of one binding: a few small fields and the binding itself as
    compact JSON (metadata essentials, spec, status: well under a kilobyte for most)."""

    namespace: str
    name: str
    body: bytes                      # _compact(): what the next sync works on
    generation: Optional[int]        # as last watched
    request: Optional[str]           # ANNOTATION_SYNC as last watched
    due: float = math.inf            # loop time of the next sync; inf while running
    failures: int = 0
    last_reason: Optional[str] = None
    running: bool = False


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


def _request_of(body: Mapping) -> Optional[str]:
    return ((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SYNC)


_META_KEPT = ("name", "namespace", "uid", "generation")


def _compact(body: Mapping) -> bytes:
    """The part of a watched binding a sync reads, as compact JSON (no managedFields, no
    last-applied annotation: those are most of a watched object's size)."""
    meta = body.get("metadata") or {}
    kept = {k: meta[k] for k in _META_KEPT if k in meta}
    request = _request_of(body)
    if request is not None:
        kept["annotations"] = {ANNOTATION_SYNC: request}
    doc = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": kept,
           "spec": body.get("spec") or {}, "status": body.get("status") or {}}
    return json.dumps(doc, separators=(",", ":")).encode()


class Scheduler:
    """Due times of every binding in one heap; at most ``max_running`` syncs in flight (they
    queue further in the executor and the namespace limiter)."""

    def __init__(self, ctx: Context, executor: Executor, limiter: NamespaceLimiter,
                 max_running: Optional[int] = None, active: bool = True):
        self.ctx, self.executor, self.limiter = ctx, executor, limiter
        self.max_running = max_running or max(2 * ctx.settings.workers, 4)
        self.slots: Dict[Key, Slot] = {}
        self.active = active               # False while kopf peering pauses this replica
        self._heap: List[Tuple[float, int, Key]] = []
        self._seq = itertools.count()
        self._running: set = set()
        self._wake: Optional[asyncio.Event] = None

    # --- watch events (event loop) ---------------------------------------------------------
    def observe(self, event_type: Optional[str], body: Mapping) -> None:
        """One watch event of a binding: ADDED/MODIFIED/None (listing) or DELETED."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        if not self.active:
            return   # paused: kopf lists every binding again on resume
        if event_type == "DELETED":
            self.forget(key)
            reconcile.forget(self.ctx, *key)   # its secrets leave the redaction registry
            return
        generation, request = meta.get("generation"), _request_of(body)
        slot = self.slots.get(key)
        if slot is None:
            slot = Slot(key[0], key[1], _compact(body), generation, request)
            self.slots[key] = slot
            self._schedule(slot, self._resume_delay(slot, body))
            return
        slot.body = _compact(body)
        if (generation, request) != (slot.generation, slot.request):
            slot.generation, slot.request = generation, request
            if not slot.running:     # a running sync re-queues itself when it sees the change
                self._schedule(slot, 0.0)

    def _resume_delay(self, slot: Slot, body: Mapping) -> float:
        """A (re)start resumes each schedule from the status it wrote (status.resume_delay)."""
        previous = from_storage(body.get("status"))
        interval = interval_seconds(((body.get("spec") or {}).get("refresh") or {}).get("interval"))
        delay = resume_delay(previous, slot.generation, slot.request, interval, self.ctx.clock(),
                             self.ctx.rng)
        if delay:
            ready = previous.condition(builders.READY)
            slot.last_reason = ready.reason if ready is not None else None
            self.ctx.metrics.ready.labels(slot.namespace, slot.name).set(1)
            log.debug("binding %s/%s is fresh; next refresh in %.0fs", slot.namespace, slot.name,
                      delay)
        return delay

    def forget(self, key: Key) -> None:
        """A deleted binding: its slot and its metrics label sets go (its heap entry is skipped
        when it comes up); its Secret goes with it through the ownerReference."""
        if self.slots.pop(key, None) is not None:
            self.ctx.metrics.forget(*key)

    def pause(self) -> None:
        """Peering paused this replica: sync nothing, keep nothing (kopf lists every binding
        again on resume, with the status the active replica wrote)."""
        self.active = False
        for key in list(self.slots):
            self.forget(key)
        self._heap.clear()
        self._poke()

    def resume(self) -> None:
        self.active = True
        self._poke()

    # --- the schedule ------------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _schedule(self, slot: Slot, delay: float) -> None:
        slot.due = self._now() + max(delay, 0.0)
        heapq.heappush(self._heap, (slot.due, next(self._seq), (slot.namespace, slot.name)))
        if len(self._heap) > 2 * len(self.slots) + 64:   # stale entries of rescheduled slots
            self._heap = [(s.due, next(self._seq), k) for k, s in self.slots.items()
                          if s.due != math.inf]
            heapq.heapify(self._heap)
        if self._heap[0][2] == (slot.namespace, slot.name):
            self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _due(self) -> Optional[Slot]:
        """The next slot due now, or None."""
        now = self._now()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            slot = self.slots.get(key)
            if slot is not None and slot.due == due and not slot.running:
                return slot
        return None

    async def run(self) -> None:
        """Start due syncs as long as the replica is active and the pool has room; sleep until
        the next due time, a watch event or a finished sync."""
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            while self.active and len(self._running) < self.max_running:
                slot = self._due()
                if slot is None:
                    break
                slot.running, slot.due = True, math.inf
                task = asyncio.get_running_loop().create_task(self._sync(slot))
                self._running.add(task)
                task.add_done_callback(self._done)
            timeout = None
            if self.active and self._heap and len(self._running) < self.max_running:
                timeout = max(self._heap[0][0] - self._now(), 0.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a sync task failed", exc_info=task.exception())
        self._poke()

    async def _sync(self, slot: Slot) -> None:
        ctx, loop = self.ctx, asyncio.get_running_loop()
        body = json.loads(slot.body)
        meta = body["metadata"]
        seen = (meta.get("generation"), _request_of(body))
        delay = ctx.settings.backoff_base
        try:
            outcome = await self.limiter.run(slot.namespace, self.executor, reconcile.sync, body,
                                             ctx)
            if outcome.written and ctx.nudger is not None:  # pods see it now, not in a minute
                ctx.nudger.request(slot.namespace, slot.name, outcome.secret_resource_version)
            try:
                delay, stored = await loop.run_in_executor(self.executor, settle, body, outcome,
                                                           slot, ctx)
                if stored is not None and self.slots.get((slot.namespace, slot.name)) is slot:
                    current = json.loads(slot.body)   # what the next sync starts from
                    current["status"] = stored
                    slot.body = json.dumps(current, separators=(",", ":")).encode()
            except ApiException as exc:
                if exc.status == 404:
                    self.forget((slot.namespace, slot.name))  # gone; the DELETED event follows
                    return
                log.warning("could not update the status of %s/%s: HTTP %s", slot.namespace,
                            slot.name, exc.status)
        finally:
            slot.running = False
        if self.slots.get((slot.namespace, slot.name)) is not slot:
            return   # deleted (or paused) meanwhile
        if (slot.generation, slot.request) != seen:
            delay = 0.0   # the spec or the request changed during the sync: once more, now
        self._schedule(slot, delay)


def policy_for(body: Mapping, failures: int, ctx: Context) -> Policy:
    meta, spec = body["metadata"], body.get("spec") or {}
    token = None
    if spec.get("exchange"):
        token = TokenPolicy(lead=functools.partial(nudge.token_lead, ctx.nudger is not None))
    return Policy(
        binding_name=meta["name"], provider=reconcile._provider_kind(body),
        generation=meta.get("generation"), sync_request=_request_of(body),
        interval=interval_seconds((spec.get("refresh") or {}).get("interval")),
        failures=failures, jitter=ctx.settings.refresh_jitter,
        backoff_base=ctx.settings.backoff_base, backoff_cap=ctx.settings.backoff_cap,
        token=token, rng=ctx.rng)


def settle(body: Mapping, outcome: builders.Outcome, slot: Slot, ctx: Context
           ) -> Tuple[float, Optional[dict]]:
    """Record an attempt: the status ``next_status`` returns (written only when it changed or
    the Secret was rewritten), an Event on transitions, metrics, a log line.
    Returns the next delay and the stored status (None when nothing was written)."""
    now = ctx.clock()
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    previous = from_storage(body.get("status"))
    status, delay = next_status(previous, outcome, now, policy_for(body, slot.failures, ctx))
    slot.failures = 0 if outcome.ok else slot.failures + 1
    stored = None
    if outcome.written or changed(previous, status):
        stored = for_storage(status)
        ctx.kube.patch_status(namespace, name, stored)
    _announce(meta, outcome, status, slot, ctx, now)
    ready = status.condition(builders.READY)
    ctx.metrics.ready.labels(namespace, name).set(1 if ready.status == "True" else 0)
    expires = builders.parse_time(status.expires_at)
    if expires is not None:
        # live, not as of this sync: it keeps falling if refreshes stop (alert on it)
        ctx.metrics.seconds_to_expiry.labels(namespace, name).set_function(
            lambda: (expires - ctx.clock()).total_seconds())
    return delay, stored


def _announce(meta, outcome: builders.Outcome, status, slot: Slot, ctx: Context, now) -> None:
    namespace, name = meta["namespace"], meta["name"]
    message = status.condition(builders.READY).message
    if outcome.ok:
        if slot.last_reason != builders.SYNCED:
            ctx.kube.post_event(meta, "Normal", builders.SYNCED, message, now)
        elif outcome.written:
            ctx.kube.post_event(meta, "Normal", "Rotated", f"Secret {secret_name_for(name)} now "
                                f"holds a new credential", now)
        log.info("synced %s/%s", namespace, name,
                 extra={"binding": name, "namespace": namespace, "written": outcome.written,
                        "version": outcome.version, "expires_at": status.expires_at})
    else:
        if slot.last_reason != outcome.reason:
            ctx.kube.post_event(meta, "Warning", outcome.reason, message, now)
        log.warning("sync of %s/%s failed: %s: %s", namespace, name, outcome.reason, message,
                    extra={"binding": name, "namespace": namespace, "reason": outcome.reason,
                           "failures": slot.failures})
    slot.last_reason = outcome.reason


class PeeringGate(logging.Handler):
    """Follows kopf's peering decisions for the scheduler: kopf pauses its watch streams and
    kills its daemons when a peer of higher priority is alive, and logs it; it offers no other
    hook to a task of the operator's own. The scheduler pauses and resumes on those records
    (kopf._core.engines.peering: "Pausing operations in favour of ...", "Resuming operations
    after the pause...")."""

    LOGGER = "kopf._core.engines.peering"

    def __init__(self, scheduler: Scheduler, loop: asyncio.AbstractEventLoop):
        super().__init__(level=logging.INFO)
        self.scheduler, self.loop = scheduler, loop

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith(("Pausing operations", "Pausing all operators")):
            self.loop.call_soon_threadsafe(self.scheduler.pause)
        elif text.startswith("Resuming operations"):
            self.loop.call_soon_threadsafe(self.scheduler.resume)

    def attach(self) -> "PeeringGate":
        logger = logging.getLogger(self.LOGGER)
        if not logger.isEnabledFor(logging.INFO):
            logger.setLevel(logging.INFO)   # the two records must reach us at any log level
        logger.addHandler(self)
        return self

    def detach(self) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)
