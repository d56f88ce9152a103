"""Nudging pods after a rotation, the running part: one asyncio task inside the operator.

The binding loop calls :meth:`Nudger.request` (instant, never blocks, never raises) after it
wrote a changed Secret; the task works through the :class:`~.nudge.Plan` one API request at a
time, paced by a :class:`~.nudge.TokenBucket` shared by every binding. Requests run in a thread
of their own, so a slow API server delays nudges, not syncs. Nothing here sees a secret value:
a job carries a namespace, a binding name and the Secret's ``resourceVersion``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Tuple

from kubernetes.client.rest import ApiException

from . import nudge
from .metrics import Metrics

log = logging.getLogger(__name__)


class Nudger:
    def __init__(self, pods, metrics: Metrics, *, rate: float = 20.0, burst: int = 20,
                 plan: Optional[nudge.Plan] = None, clock: Callable[[], float] = time.monotonic):
        self._pods = pods                  # kube.KubeApi (list_pods, patch_pod) or a test double
        self._metrics = metrics
        self._clock = clock
        self.plan = plan or nudge.Plan()
        self.bucket = nudge.TokenBucket(rate, burst, clock)
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nudge")

    def request(self, namespace: str, binding: str, version: Optional[str]) -> None:
        """Nudge the binding's pods to ``version`` (the Secret's resourceVersion), soon."""
        if not version:
            return
        if not self.plan.offer(namespace, binding, version, self._clock()) \
                and self.plan.job(namespace, binding) is None:
            self._metrics.nudges.labels("dropped").inc()
            log.warning("nudge queue full; pods of %s/%s get the new credential at the "
                        "kubelet's pace", namespace, binding)
        self._metrics.nudge_jobs.set(len(self.plan))
        self._wake.set()

    def next_action(self) -> Tuple[str, object]:
        """What the task does next: ``("idle", seconds or None)`` until work is due or a request
        comes, ``("wait", seconds)`` for the rate limit, or ``("do", step)``."""
        wait = self.plan.wait_seconds(self._clock())
        if wait is None or wait > 0:
            return "idle", wait
        delay = self.bucket.take()
        if delay > 0:
            return "wait", delay
        step = self.plan.next_step(self._clock())
        return ("do", step) if step is not None else ("idle", 0.05)  # not expected

    async def run(self) -> None:
        """Work until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                action, arg = self.next_action()
                if action == "idle":
                    await self._idle(arg)
                elif action == "wait":
                    await asyncio.sleep(arg)
                else:
                    result = await loop.run_in_executor(self._executor, self.call, arg)
                    self.record(arg, result)
                    self._metrics.nudge_jobs.set(len(self.plan))
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _idle(self, seconds: Optional[float]) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    def do(self, step: nudge.Step) -> None:
        """One step, request and bookkeeping (what the task does, minus the thread)."""
        self.record(step, self.call(step))

    def call(self, step: nudge.Step) -> Tuple[str, object]:
        """The API request of one step (runs in the nudge thread; touches no shared state):
        ``("listed", names)``, ``("sent", None)``, ``("gone", None)`` or ``("failed", why)``."""
        job = step.job
        try:
            if step.kind == "list":
                pods = self._pods.list_pods(job.namespace, nudge.label_selector(job.binding),
                                            nudge.FIELD_SELECTOR)
                return "listed", [p["metadata"]["name"] for p in pods
                                  if nudge.wants_nudge(p, job.version)]
            self._pods.patch_pod(job.namespace, step.pod, nudge.patch_body(job.version))
            return "sent", None
        except ApiException as exc:
            if step.kind == "patch" and exc.status == 404:
                return "gone", None
            return "failed", f"HTTP {exc.status}"
        except (OSError, ValueError, KeyError, TypeError) as exc:  # connection, garbled answer
            return "failed", type(exc).__name__

    def record(self, step: nudge.Step, result: Tuple[str, object]) -> None:
        """Book a step's result into the plan and the metrics (in the event loop's thread)."""
        what, detail = result
        job = step.job
        if what == "listed":
            dropped = self.plan.listed(step, detail)
            if dropped:
                log.warning("%s/%s: %d pods over the nudge limit get the new credential at "
                            "the kubelet's pace", job.namespace, job.binding, dropped)
        elif what == "failed":
            self._failed(step, detail)
        else:
            self._metrics.nudges.labels(what).inc()
            if what == "sent":
                self._metrics.nudge_delay.observe(max(0.0, self._clock() - job.written_at))
            self.plan.succeeded(step)

    def _failed(self, step: nudge.Step, what: str) -> None:
        job = step.job
        self._metrics.nudges.labels("failed").inc()
        target = f"pod {step.pod}" if step.kind == "patch" else "the pod list"
        if self.plan.failed(step, self._clock()):
            log.info("nudging %s of %s/%s failed (%s); retrying", target, job.namespace,
                     job.binding, what)
        else:
            self._metrics.nudges.labels("abandoned").inc()
            log.warning("gave up nudging %s of %s/%s after %d attempts (%s); it gets the new "
                        "credential at the kubelet's pace (check the operator's RBAC: pods "
                        "list/patch, chart value operator.nudgePods)", target, job.namespace,
                        job.binding, self.plan.max_attempts, what)
