"""Nudging pods after a rotation, the pure part: which pods, what patch, how fast, in what order.

The kubelet refreshes a Secret volume only when it next syncs the pod (measured on a real kubelet:
48-88 s after the Secret changed). Any change to the pod object makes it sync the pod at once and
remount the atomically-updated volume (0.56-0.99 s). So after the operator writes a changed Secret,
it patches one annotation on each pod the webhook injected for that binding (label
``mlflow-secrets-auth/binding=<name>``), to the Secret's new ``resourceVersion``: an opaque number
that says nothing about the credential (a hash of a low-entropy password could be guessed
offline by anyone who can read pods).

:class:`Plan` is the work queue: at most one job per binding (a newer rotation replaces the job of
the older one, so only the newest version is sent), served round-robin one API request at a time
so a binding with 500 pods does not hold back one with 2, with backoff on failures and a bound on
jobs and pods. :class:`TokenBucket` paces the requests of the whole operator. Both take the clock
as an argument; ``nudger.py`` runs them against the API.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Deque, Dict, List, Mapping, Optional, Tuple

from mlflow_secrets_auth_api.binding import (ANNOTATION_CREDENTIAL_VERSION, LABEL_POD_BINDING,
                                             pod_label_value)

ANNOTATION = ANNOTATION_CREDENTIAL_VERSION
PHASES = ("Pending", "Running")   # Succeeded and Failed pods run no container that could read
# the API server filters by phase too (pods support status.phase field selectors)
FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"

Key = Tuple[str, str]  # (namespace, binding)

# How long a new Secret takes to reach a pod's files, for the OAuth2 refresh schedule.
DELIVERY_NUDGED = 5.0     # seconds: measured 0.56-0.99 s on a real kubelet, plus a burst's pacing
DELIVERY_KUBELET = 90.0   # seconds: the kubelet's pod sync, 1 min + up to 50 % jitter (48-88 s measured)
SAFETY_MARGIN = 10.0      # seconds the successor must be in the pod before the old token expires


def token_lead(nudging: bool, now: datetime, expires_at: Optional[datetime]) -> timedelta:
    """How long before a minted token's expiry its successor must be minted, so that it is in the
    pods ``SAFETY_MARGIN`` before the expiry: the delivery time plus the margin, but at most a
    third of the token's lifetime (a token too short for the delivery is still renewed at about
    two thirds of its life, never in a loop; docs/oauth2.md gives the minimum lifetimes)."""
    lead = (DELIVERY_NUDGED if nudging else DELIVERY_KUBELET) + SAFETY_MARGIN
    if expires_at is not None:
        lead = min(lead, max((expires_at - now).total_seconds() / 3, 0.0))
    return timedelta(seconds=lead)


def label_selector(binding_name: str) -> str:
    """The label selector of the pods injected for one binding (within its namespace)."""
    return f"{LABEL_POD_BINDING}={pod_label_value(binding_name)}"


def patch_body(version: str) -> Dict[str, object]:
    """The merge patch (``application/merge-patch+json``) that nudges one pod: one annotation."""
    return {"metadata": {"annotations": {ANNOTATION: str(version)}}}


def wants_nudge(pod: Mapping, version: str) -> bool:
    """A pod to nudge: Pending or Running, not being deleted, not already at ``version``."""
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    annotations = meta.get("annotations") or {}
    return (phase in PHASES and not meta.get("deletionTimestamp")
            and annotations.get(ANNOTATION) != str(version))


class TokenBucket:
    """``rate`` requests per second on average, at most ``burst`` at once, for the whole operator."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]):
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self._clock = float(rate), float(burst), clock
        self._tokens, self._last = float(burst), clock()

    def take(self) -> float:
        """Take a token: 0.0 when one was taken, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0 - 1e-9:   # waiting the answer below must be enough (rounding)
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate


@dataclass(eq=False)
class Job:
    """Nudging the pods of one binding to one version."""

    namespace: str
    binding: str
    version: str
    written_at: float                      # the clock when the Secret write was reported
    pods: Optional[Deque[str]] = None      # None until listed
    attempts: Dict[str, int] = field(default_factory=dict)   # failed patches per pod
    list_failures: int = 0
    not_before: float = 0.0

    @property
    def key(self) -> Key:
        return (self.namespace, self.binding)


@dataclass(frozen=True)
class Step:
    """One API request: ``list`` the job's pods, or ``patch`` one pod."""

    kind: str
    job: Job
    pod: Optional[str] = None


class Plan:
    """Coalesced, fair, bounded nudge work. Not thread-safe: one asyncio task uses it."""

    def __init__(self, *, max_attempts: int = 5, backoff_base: float = 1.0,
                 backoff_cap: float = 30.0, max_jobs: int = 4096, max_pods: int = 5000):
        self.max_attempts, self.backoff_base, self.backoff_cap = max_attempts, backoff_base, backoff_cap
        self.max_jobs, self.max_pods = max_jobs, max_pods
        self._jobs: Dict[Key, Job] = {}
        self._order: Deque[Key] = deque()

    def __len__(self) -> int:
        return len(self._jobs)

    def job(self, namespace: str, binding: str) -> Optional[Job]:
        return self._jobs.get((namespace, binding))

    def offer(self, namespace: str, binding: str, version: str, now: float) -> bool:
        """Ask for the binding's pods to be nudged to ``version``. A job for an older version of
        the same binding is replaced (its pods not yet patched get only the newest version).
        False when the version is already queued, or the queue is full (nudge dropped)."""
        key = (namespace, binding)
        current = self._jobs.get(key)
        if current is not None and current.version == str(version):
            return False
        if current is None and len(self._jobs) >= self.max_jobs:
            return False
        if current is None:
            self._order.append(key)
        self._jobs[key] = Job(namespace, binding, str(version), now)
        return True

    def wait_seconds(self, now: float) -> Optional[float]:
        """None when there is no work; else the seconds until a step is due (0: now)."""
        if not self._jobs:
            return None
        return max(0.0, min(job.not_before for job in self._jobs.values()) - now)

    def next_step(self, now: float) -> Optional[Step]:
        """The next request, taking jobs in turn (round-robin), skipping those backing off."""
        for _ in range(len(self._order)):
            key = self._order[0]
            self._order.rotate(-1)
            job = self._jobs[key]
            if job.not_before > now:
                continue
            if job.pods is None:
                return Step("list", job)
            if job.pods:
                return Step("patch", job, job.pods.popleft())
        return None

    def current(self, step: Step) -> bool:
        """False once a newer rotation replaced the step's job (its result no longer matters)."""
        return self._jobs.get(step.job.key) is step.job

    def listed(self, step: Step, pods: List[str]) -> int:
        """Record the pods a list step found (already filtered); returns how many were dropped
        over ``max_pods``."""
        if not self.current(step):
            return 0
        step.job.pods = deque(pods[:self.max_pods])
        self._finish_if_empty(step.job)
        return max(0, len(pods) - self.max_pods)

    def succeeded(self, step: Step) -> None:
        """A patch was sent, or the pod is gone: nothing more to do for it."""
        if self.current(step):
            self._finish_if_empty(step.job)

    def failed(self, step: Step, now: float) -> bool:
        """A request failed: retry it after a backoff. False when it was given up (after
        ``max_attempts``), for the pod (a patch) or the whole job (a list)."""
        if not self.current(step):
            return True
        job = step.job
        if step.kind == "list":
            job.list_failures += 1
            tries = job.list_failures
        else:
            tries = job.attempts[step.pod] = job.attempts.get(step.pod, 0) + 1
        if tries >= self.max_attempts:
            if step.kind == "list":
                self._drop(job.key)
            else:
                self._finish_if_empty(job)
            return False
        if step.kind == "patch":
            job.pods.append(step.pod)
        job.not_before = now + self.backoff(tries)
        return True

    def backoff(self, tries: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2 ** max(tries - 1, 0))

    def _finish_if_empty(self, job: Job) -> None:
        if job.pods is not None and not job.pods:
            self._drop(job.key)

    def _drop(self, key: Key) -> None:
        self._jobs.pop(key, None)
        try:
            self._order.remove(key)
        except ValueError:
            pass
