"""loop.Scheduler: one heap of due times for every binding, fed by watch events."""
from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlflow_secrets_auth_providers import SecretValue
from mlflow_secrets_auth_operator import loop
from tests.unit.api.examples import VALID
from tests.unit.operator.fakes import FakeKube, binding, context

pytestmark = pytest.mark.timeout(60)


class Provider:
    """A scripted secret manager that counts fetches and how many run at once; ``gate`` holds
    every fetch until it is set."""

    def __init__(self):
        self.fetches, self.running, self.most = 0, 0, 0
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()

    def __call__(self, address, path, auth, **kwargs):
        with self.lock:
            self.fetches += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.gate.wait(30)
            return SecretValue(json.dumps({"token": "tok-scheduler-value"}), version="1")
        finally:
            with self.lock:
                self.running -= 1


def _setup():
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    provider = Provider()
    return context(kube, {"vault": provider}), provider


async def _until(predicate, timeout=20.0):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


def _run(body_of_test):
    async def main():
        ctx, provider = _setup()
        with ThreadPoolExecutor(4) as executor:
            scheduler = loop.Scheduler(ctx, executor, loop.NamespaceLimiter(4))
            task = asyncio.get_running_loop().create_task(scheduler.run())
            try:
                return await body_of_test(scheduler, ctx, provider)
            finally:
                provider.gate.set()
                task.cancel()
    return asyncio.run(main())


def test_events_during_a_sync_queue_exactly_one_more_sync_never_a_concurrent_one():
    async def check(scheduler, ctx, provider):
        provider.gate.clear()
        scheduler.observe("ADDED", binding(VALID["vault-token-bearer"]))
        await _until(lambda: provider.fetches == 1)
        for generation in (2, 3, 4):          # three spec changes while the sync runs
            scheduler.observe("MODIFIED", binding(VALID["vault-token-bearer"],
                                                  generation=generation))
        provider.gate.set()
        await _until(lambda: provider.fetches == 2 and not scheduler.slots[
            ("team-a", "mlflow")].running)
        await asyncio.sleep(0.1)              # nothing else is due: the interval is minutes
        return provider.fetches, provider.most, ctx.kube.statuses[-1][2]["observedGeneration"]
    assert _run(check) == (2, 1, 4)


def test_a_status_only_event_does_not_sync_again():
    async def check(scheduler, ctx, provider):
        body = binding(VALID["vault-token-bearer"])
        scheduler.observe("ADDED", body)
        await _until(lambda: len(ctx.kube.statuses) == 1)
        await _until(lambda: not scheduler.slots[("team-a", "mlflow")].running)
        scheduler.observe("MODIFIED", {**body, "status": ctx.kube.statuses[-1][2]})
        await asyncio.sleep(0.1)
        return provider.fetches
    assert _run(check) == 1


def test_a_deleted_binding_leaves_no_slot_no_metrics_and_no_registered_secrets():
    async def check(scheduler, ctx, provider):
        body = binding(VALID["vault-token-bearer"])
        scheduler.observe("ADDED", body)
        await _until(lambda: len(ctx.kube.statuses) == 1)
        labels = {"namespace": "team-a", "binding": "mlflow"}
        before = ctx.metrics.registry.get_sample_value("msa_binding_ready", labels)
        known = ctx.redactor.redact("tok-scheduler-value")
        scheduler.observe("DELETED", body)
        after = ctx.metrics.registry.get_sample_value("msa_binding_ready", labels)
        return (before, after, dict(scheduler.slots), known,
                ctx.redactor.redact("tok-scheduler-value"))
    assert _run(check) == (1.0, None, {}, "<redacted>", "tok-scheduler-value")


def test_a_restart_does_not_sync_a_binding_whose_status_is_fresh():
    async def check(scheduler, ctx, provider):
        status = {"conditions": [{"type": "Ready", "status": "True", "reason": "Synced"}],
                  "observedGeneration": 1, "secretName": "mlflow-mlflow-auth",
                  "nextRefreshTime": "2026-01-01T00:04:00Z"}   # the fake clock: 00:00:00
        scheduler.observe(None, binding(VALID["vault-token-bearer"], status=status))
        stale = binding(VALID["vault-token-bearer"], name="other", generation=2, status=status)
        scheduler.observe(None, stale)
        await _until(lambda: provider.fetches == 1 and len(ctx.kube.statuses) == 1)
        await asyncio.sleep(0.1)
        ready = ctx.metrics.registry.get_sample_value(
            "msa_binding_ready", {"namespace": "team-a", "binding": "mlflow"})
        return provider.fetches, ctx.kube.statuses[0][1], ready
    assert _run(check) == (1, "other", 1.0)


def test_a_paused_replica_syncs_nothing_keeps_nothing_and_resumes_from_the_listing():
    async def check(scheduler, ctx, provider):
        scheduler.pause()
        scheduler.observe("ADDED", binding(VALID["vault-token-bearer"]))
        await asyncio.sleep(0.1)
        paused = (provider.fetches, len(scheduler.slots))
        scheduler.resume()
        scheduler.observe(None, binding(VALID["vault-token-bearer"]))   # kopf lists again
        await _until(lambda: provider.fetches == 1)
        return paused
    assert _run(check) == (0, 0)


def test_the_peering_gate_follows_kopfs_pause_and_resume_records():
    async def check(scheduler, ctx, provider):
        import logging
        gate = loop.PeeringGate(scheduler, asyncio.get_running_loop()).attach()
        try:
            kopf_log = logging.getLogger(loop.PeeringGate.LOGGER)
            kopf_log.info("Pausing operations in favour of [Peer(...)].")
            await asyncio.sleep(0)
            paused = scheduler.active
            kopf_log.info("Resuming operations after the pause. Conflicting operators ...")
            await asyncio.sleep(0)
            return paused, scheduler.active
        finally:
            gate.detach()
    assert _run(check) == (False, True)


def test_the_heap_stays_bounded_however_often_bindings_are_rescheduled():
    async def check(scheduler, ctx, provider):
        scheduler.pause()   # schedule only, sync nothing
        scheduler.active = True
        scheduler.max_running = 0
        for n in range(200):
            scheduler.observe("ADDED", binding(VALID["vault-token-bearer"], name=f"b{n % 10}",
                                               generation=n))
        return len(scheduler.slots), len(scheduler._heap) <= 2 * 10 + 64
    assert _run(check) == (10, True)
