"""Nudging pods after a rotation: the selector, the patch, the rate limit, coalescing, retries.

Every test runs on a fake clock (seconds as floats) and calls the nudger's steps directly: no
event loop, no sleeps.
"""
from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException

from mlflow_secrets_auth_operator import nudge
from mlflow_secrets_auth_operator.metrics import Metrics
from mlflow_secrets_auth_operator.nudger import Nudger

ANNOTATION = "mlflow-secrets-auth/credential-version"


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pod(name, phase="Running", version=None, deleting=False):
    meta = {"name": name, "annotations": {ANNOTATION: version} if version else None}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


class FakePods:
    """The two pod calls of kube.KubeApi, on pods held in memory, with failures on demand."""

    def __init__(self, clock, pods_by_selector=None):
        self.clock = clock
        self.pods = pods_by_selector or {}   # (namespace, label selector) -> [pod]
        self.calls = []                      # (time, verb, namespace, name or selector, body)
        self.fail = {}                       # pod name -> [status, ...] answered in turn

    def list_pods(self, namespace, label_selector, field_selector):
        self.calls.append((self.clock(), "list", namespace, label_selector, field_selector))
        return self.pods.get((namespace, label_selector), [])

    def patch_pod(self, namespace, name, body):
        self.calls.append((self.clock(), "patch", namespace, name, body))
        statuses = self.fail.get(name)
        if statuses:
            raise ApiException(status=statuses.pop(0))

    def patches(self):
        return [(c[2], c[3], c[4]["metadata"]["annotations"][ANNOTATION])
                for c in self.calls if c[1] == "patch"]


def drain(nudger, clock, limit=10_000):
    """Run the nudger's task to completion on the fake clock; returns the fake seconds taken."""
    start = clock()
    for _ in range(limit):
        action, arg = nudger.next_action()
        if action == "do":
            nudger.do(arg)
        elif arg is None:
            return clock() - start
        else:
            clock.advance(arg)
    raise AssertionError("the nudger did not finish")


def sample(metrics, name, **labels):
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# --- the pure parts ------------------------------------------------------------------------------
def test_the_selector_names_the_binding_label_the_webhook_sets():
    assert nudge.label_selector("mlflow") == "mlflow-secrets-auth/binding=mlflow"
    assert nudge.FIELD_SELECTOR == "status.phase!=Succeeded,status.phase!=Failed"


def test_the_patch_sets_one_annotation_to_the_version_and_nothing_else():
    assert nudge.patch_body("4711") == {"metadata": {"annotations": {ANNOTATION: "4711"}}}


@pytest.mark.parametrize("candidate, wanted", [
    (pod("a"), True), (pod("a", phase="Pending"), True),
    (pod("a", phase="Succeeded"), False), (pod("a", phase="Failed"), False),
    (pod("a", phase=None), False), (pod("a", deleting=True), False),
    (pod("a", version="7"), False), (pod("a", version="6"), True)])
def test_only_live_pods_not_already_at_the_version_are_nudged(candidate, wanted):
    assert nudge.wants_nudge(candidate, "7") is wanted


def test_the_token_bucket_allows_a_burst_then_the_rate():
    clock = FakeClock()
    bucket = nudge.TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)
    clock.advance(0.1)
    assert bucket.take() == 0.0 and bucket.take() == pytest.approx(0.1)
    clock.advance(60)   # idle time refills up to the burst, never more
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.1)


def test_a_newer_rotation_replaces_the_queued_one_and_an_equal_one_is_ignored():
    plan = nudge.Plan()
    assert plan.offer("ns", "b", "1", now=0) and not plan.offer("ns", "b", "1", now=1)
    old = plan.next_step(now=0)
    assert plan.offer("ns", "b", "2", now=2) and len(plan) == 1
    assert not plan.current(old)
    plan.listed(old, ["p1", "p2"])   # the answer for the replaced version is ignored
    step = plan.next_step(now=2)
    assert (step.kind, step.job.version) == ("list", "2")


def test_bindings_take_turns_one_request_each():
    plan = nudge.Plan()
    for binding, pods in (("big", [f"p{i}" for i in range(5)]), ("small", ["q0"])):
        plan.offer("ns", binding, "1", now=0)
    for _ in range(2):
        step = plan.next_step(now=0)
        plan.listed(step, {"big": [f"p{i}" for i in range(5)], "small": ["q0"]}[step.job.binding])
    order = []
    for _ in range(20):   # bounded, should the plan never run dry
        step = plan.next_step(now=0)
        if step is None:
            break
        order.append(step.pod)
        plan.succeeded(step)
    assert order == ["p0", "q0", "p1", "p2", "p3", "p4"] and len(plan) == 0


def test_a_failed_patch_is_retried_after_a_growing_backoff_then_given_up():
    plan = nudge.Plan(max_attempts=3, backoff_base=1.0)
    plan.offer("ns", "b", "1", now=0)
    plan.listed(plan.next_step(now=0), ["p"])
    now, retries = 0.0, []
    for _ in range(20):   # bounded, should the plan never give up
        step = plan.next_step(now)
        if step is None and plan.wait_seconds(now) is None:
            break
        if step is None:
            now += plan.wait_seconds(now)
            continue
        retries.append(now)
        plan.failed(step, now)
    assert retries == [0.0, 1.0, 3.0] and len(plan) == 0


def test_the_queue_and_the_pods_of_one_job_are_bounded():
    plan = nudge.Plan(max_jobs=2, max_pods=3)
    assert plan.offer("ns", "a", "1", 0) and plan.offer("ns", "b", "1", 0)
    assert not plan.offer("ns", "c", "1", 0) and plan.offer("ns", "a", "2", 0)
    assert plan.listed(plan.next_step(0), ["p1", "p2", "p3", "p4", "p5"]) == 2


# --- the nudger's steps against a fake API ------------------------------------------------------
def test_a_rotation_of_a_binding_with_500_pods_is_paced_by_the_operator_wide_rate():
    clock = FakeClock()
    selector = nudge.label_selector("b")
    fake = FakePods(clock, {("ns", selector): [pod(f"p{i}") for i in range(500)]})
    metrics = Metrics()
    nudger = Nudger(fake, metrics, rate=20, burst=20, clock=clock)
    nudger.request("ns", "b", "41")
    took = drain(nudger, clock)
    assert [c[1] for c in fake.calls].count("list") == 1 and len(fake.patches()) == 500
    assert took == pytest.approx((501 - 20) / 20)   # the burst, then 20 requests a second
    per_second = {}
    for t, *_ in fake.calls:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    assert max(per_second.values()) <= 20 + 20
    assert sample(metrics, "msa_pod_nudges_total", result="sent") == 500
    assert sample(metrics, "msa_pod_nudge_delay_seconds_count") == 500
    assert sample(metrics, "msa_pod_nudge_delay_seconds_sum") <= 500 * took


def test_repeated_rotations_while_nudging_send_only_the_newest_version_to_the_rest():
    clock = FakeClock()
    selector = nudge.label_selector("b")
    fake = FakePods(clock, {("ns", selector): [pod(f"p{i}") for i in range(10)]})
    nudger = Nudger(fake, Metrics(), rate=1, burst=1, clock=clock)
    nudger.request("ns", "b", "1")
    for _ in range(4):          # the list and three patches at version 1
        action, arg = nudger.next_action()
        while action != "do":
            clock.advance(arg)
            action, arg = nudger.next_action()
        nudger.do(arg)
    for version in ("2", "3"):  # two more rotations before the next request
        nudger.request("ns", "b", version)
    for p in fake.pods[("ns", selector)][:3]:   # the API server holds what was patched
        p["metadata"]["annotations"] = {ANNOTATION: "1"}
    drain(nudger, clock)
    sent = fake.patches()
    assert [v for _, _, v in sent[:3]] == ["1", "1", "1"]
    assert sorted(name for _, name, v in sent[3:]) == sorted(f"p{i}" for i in range(10))
    assert {v for _, _, v in sent[3:]} == {"3"} and len(sent) == 13


def test_failures_are_retried_gone_pods_skipped_and_the_rest_still_nudged():
    clock = FakeClock()
    selector = nudge.label_selector("b")
    fake = FakePods(clock, {("ns", selector): [pod("flaky"), pod("gone"), pod("ok"),
                                               pod("done", phase="Succeeded")]})
    fake.fail = {"flaky": [500, 503], "gone": [404]}
    metrics = Metrics()
    nudger = Nudger(fake, metrics, rate=100, burst=100, clock=clock)
    nudger.request("ns", "b", "9")
    drain(nudger, clock)
    names = [c[3] for c in fake.calls if c[1] == "patch"]
    assert names.count("flaky") == 3 and names.count("gone") == 1 and "done" not in names
    assert {(s, r): sample(metrics, "msa_pod_nudges_total", result=r) for s, r in (
        (0, "sent"), (0, "failed"), (0, "gone"), (0, "abandoned"))} == {
        (0, "sent"): 2, (0, "failed"): 2, (0, "gone"): 1, (0, "abandoned"): 0}


def test_a_forbidden_list_is_retried_then_abandoned_without_blocking_other_bindings():
    clock = FakeClock()
    fake = FakePods(clock, {("ok", nudge.label_selector("b")): [pod("p")]})

    def list_pods(namespace, label_selector, field_selector):
        fake.calls.append((clock(), "list", namespace, label_selector, field_selector))
        if namespace == "denied":
            raise ApiException(status=403)
        return fake.pods.get((namespace, label_selector), [])
    fake.list_pods = list_pods
    metrics = Metrics()
    nudger = Nudger(fake, metrics, rate=100, burst=100, clock=clock)
    nudger.request("denied", "b", "1")
    nudger.request("ok", "b", "1")
    drain(nudger, clock)
    assert fake.patches() == [("ok", "p", "1")]
    assert fake.calls.index(next(c for c in fake.calls if c[1] == "patch")) <= 2
    assert sample(metrics, "msa_pod_nudges_total", result="abandoned") == 1
    assert len([c for c in fake.calls if c[2] == "denied"]) == nudger.plan.max_attempts


def test_no_request_carries_anything_but_names_selectors_and_the_version():
    clock = FakeClock()
    fake = FakePods(clock, {("ns", nudge.label_selector("b")): [pod("p")]})
    nudger = Nudger(fake, Metrics(), clock=clock)
    nudger.request("ns", "b", "12345")
    drain(nudger, clock)
    patch = next(c[4] for c in fake.calls if c[1] == "patch")
    assert json.dumps(patch) == json.dumps({"metadata": {"annotations": {ANNOTATION: "12345"}}})


def test_a_write_without_a_resource_version_nudges_nothing():
    clock = FakeClock()
    fake = FakePods(clock)
    nudger = Nudger(fake, Metrics(), clock=clock)
    nudger.request("ns", "b", None)
    assert nudger.next_action() == ("idle", None) and fake.calls == []


# --- the OAuth2 refresh lead -------------------------------------------------------------------
def _lead(nudging, lifetime):
    from datetime import datetime, timedelta, timezone
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return nudge.token_lead(nudging, now, now + timedelta(seconds=lifetime)).total_seconds()


def test_a_token_is_renewed_early_enough_for_its_successor_to_reach_the_pods_with_a_margin():
    assert _lead(True, 3600) == nudge.DELIVERY_NUDGED + nudge.SAFETY_MARGIN == 15
    assert _lead(False, 3600) == nudge.DELIVERY_KUBELET + nudge.SAFETY_MARGIN == 100


def test_the_lead_never_passes_a_third_of_the_lifetime_so_short_tokens_renew_at_two_thirds():
    assert _lead(True, 30) == 10 and _lead(False, 60) == 20 and _lead(False, 300) == 100


def test_the_task_sends_what_is_requested_and_waits_idle_for_the_next_request():
    import asyncio
    import time

    async def main():
        fake = FakePods(time.monotonic, {("ns", nudge.label_selector("b")): [pod("p1"), pod("p2")]})
        nudger = Nudger(fake, Metrics(), rate=1000, burst=1000)
        task = asyncio.get_running_loop().create_task(nudger.run())

        async def until(predicate, what):
            for _ in range(500):   # at most 10 s; returns as soon as it holds
                if predicate():
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"timed out waiting for {what}")
        try:
            nudger.request("ns", "b", "1")
            await until(lambda: len(fake.patches()) == 2, "two patches at version 1")
            assert nudger.next_action() == ("idle", None)   # nothing left, waits for a request
            for p in fake.pods[("ns", nudge.label_selector("b"))]:
                p["metadata"]["annotations"] = {ANNOTATION: "1"}
            nudger.request("ns", "b", "2")
            await until(lambda: len(fake.patches()) == 4, "two patches at version 2")
        finally:
            task.cancel()
        return fake.patches()
    assert [v for _, _, v in asyncio.run(main())] == ["1", "1", "2", "2"]
