"""The nudge hooks: a changed Secret's resourceVersion reaches the nudger; off means no nudger."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import kopf

from mlflow_secrets_auth_providers import SecretValue
from mlflow_secrets_auth_operator import loop, reconcile, runtime
from mlflow_secrets_auth_operator.metrics import Metrics
from mlflow_secrets_auth_operator.nudger import Nudger
from mlflow_secrets_auth_operator.settings import Settings
from tests.unit.api.examples import VALID
from tests.unit.operator.fakes import FakeKube, binding, context


def _ctx(values):
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}

    def fetch(address, path, auth, **kwargs):
        return SecretValue(json.dumps({"token": values[0]}), version="1")
    return context(kube, {"vault": fetch})


def test_a_written_secret_reports_its_resource_version_and_an_unchanged_one_none():
    values = ["tok-first-value"]
    ctx = _ctx(values)
    body = binding(VALID["vault-token-bearer"])
    first = reconcile.sync(body, ctx)
    same = reconcile.sync(body, ctx)
    values[0] = "tok-second-value"
    rotated = reconcile.sync(body, ctx)
    assert (first.written, first.secret_resource_version) == (True, "1")
    assert (same.written, same.secret_resource_version) == (False, None)
    assert (rotated.written, rotated.secret_resource_version) == (True, "2")


class _RecordingNudger:
    def __init__(self, done: asyncio.Event):
        self.requests, self.done = [], done

    def request(self, namespace, name, version):
        self.requests.append((namespace, name, version))
        self.done.set()   # one sync is enough


def test_the_scheduler_asks_for_a_nudge_after_writing_a_changed_secret():
    async def main():
        done = asyncio.Event()
        ctx = _ctx(["tok-loop-value"])
        ctx.nudger = _RecordingNudger(done)
        with ThreadPoolExecutor(1) as executor:
            scheduler = loop.Scheduler(ctx, executor, loop.NamespaceLimiter(1))
            task = asyncio.get_running_loop().create_task(scheduler.run())
            scheduler.observe("ADDED", binding(VALID["vault-token-bearer"]))
            try:
                await asyncio.wait_for(done.wait(), timeout=30)
            finally:
                task.cancel()
        return ctx.nudger.requests
    assert asyncio.run(main()) == [("team-a", "mlflow", "1")]


def test_with_nudging_off_the_operator_has_no_nudger_and_starts_no_task():
    async def main(on):
        memo = kopf.Memo(settings=Settings(nudge_pods=on), metrics=Metrics())
        nudger = runtime.start_nudger(memo, FakeKube())
        task = memo.get("nudge_task")
        if task is not None:
            task.cancel()
        return nudger, task
    assert asyncio.run(main(False)) == (None, None)
    nudger, task = asyncio.run(main(True))
    assert isinstance(nudger, Nudger) and task is not None


def test_nudge_settings_come_from_the_environment():
    assert Settings.from_env({}).nudge_pods is True
    settings = Settings.from_env({"MSA_NUDGE_PODS": "false", "MSA_NUDGE_RATE": "5",
                                  "MSA_NUDGE_BURST": "10"})
    assert (settings.nudge_pods, settings.nudge_rate, settings.nudge_burst) == (False, 5.0, 10)
